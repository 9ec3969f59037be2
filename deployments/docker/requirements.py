"""Print the runtime requirements of claude-conductor (plus the extras an image needs), one a
line, from pyproject.toml: the image installs them before copying the source, so a change in
``src/`` does not reinstall every dependency."""

from __future__ import annotations

import sys
import tomllib

EXTRAS = ("docker", "dashboard", "kubernetes")


def main(path: str) -> int:
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += [r for r in project["optional-dependencies"][extra] if "claude-conductor" not in r]
    sys.stdout.write("\n".join(dict.fromkeys(lines)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))
