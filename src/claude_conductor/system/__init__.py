"""Operating-system plumbing shared by every part: processes (daemons by PID, process groups,
/proc scans) and file locks."""
