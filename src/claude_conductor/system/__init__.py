"""Operating-system plumbing shared by every part: processes (daemons by PID, process groups,
/proc scans), file locks, and a container run attached (``docker_attach``, the docker
placement's local command: standard library and the Docker SDK only, it starts per launch)."""
