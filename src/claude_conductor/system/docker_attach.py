"""Run one container attached, like ``docker run -i --rm``, through the Docker SDK: the
``docker`` placement's local command (the worker image has the SDK, not the docker CLI).

    python -m claude_conductor.system.docker_attach CONFIG_JSON -- ARGV...

``CONFIG_JSON`` is a ``ContainerConfig`` (no secret in it: ``env_names`` are names, their values
come from this process's environment). The container's stdout and stderr are this process's;
this process's stdin goes to the container when ``stdin`` is set. The exit code is the
container's; a container killed by a signal (or by the OOM killer) ends this process by the same
signal, as a local process would, so the runtime's "killed from outside" handling is the same on
every placement. SIGTERM/SIGINT/SIGHUP are passed on to the container. The container is removed
at the end; the placement's cleanup removes it too (by name) in case this helper was killed.

Imports only the standard library and the Docker SDK: it starts once per agent launch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EXIT_DOCKER_ERROR", "ContainerConfig", "main"]

EXIT_DOCKER_ERROR = 125
"""Like ``docker run``: the container could not be created or started."""

_HEADER = struct.Struct(">BxxxL")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class ContainerConfig:
    """Everything about the container but its argv and its environment's values."""

    name: str
    image: str
    user: str
    workdir: str
    network: str
    env_names: list[str]
    binds: list[str] = field(default_factory=list)  # "source:target:rw|ro"
    tmpfs: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    memory: str = "2g"
    nano_cpus: int = 1_000_000_000
    pids_limit: int = 512
    stdin: bool = False
    docker_host: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ContainerConfig:
        return cls(**json.loads(text))


def _create_kwargs(config: ContainerConfig, argv: list[str]) -> dict[str, Any]:
    """``APIClient.create_container`` arguments: the hardening lives here, not in settings."""
    env = {name: os.environ[name] for name in config.env_names if name in os.environ}
    return {
        "image": config.image,
        "command": argv,
        # tini reaps what the agent leaves behind and passes signals to the whole group.
        "entrypoint": ["/usr/bin/tini", "-g", "--"],
        "name": config.name,
        "user": config.user,
        "working_dir": config.workdir,
        "environment": env,
        "labels": config.labels,
        "stdin_open": config.stdin,  # the SDK sets StdinOnce with it
        "use_config_proxy": False,
        "tty": False,
        "healthcheck": {"test": ["NONE"]},
        "host_config_kwargs": {
            "binds": list(config.binds),
            "tmpfs": config.tmpfs,
            "network_mode": config.network,
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "privileged": False,
            "mem_limit": config.memory,
            "memswap_limit": config.memory,
            "nano_cpus": config.nano_cpus,
            "pids_limit": config.pids_limit,
            "ipc_mode": "private",
            "auto_remove": False,
        },
    }


def _raw_socket(attached: Any) -> socket.socket:
    inner = getattr(attached, "_sock", attached)
    if not isinstance(inner, socket.socket):
        raise RuntimeError(f"unexpected attach socket {type(attached).__name__}")
    return inner


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def _copy_frames(sock: socket.socket) -> None:
    """Docker's multiplexed stream (8-byte header: stream, size) to fds 1 and 2, to EOF."""
    while True:
        header = _recv_exactly(sock, _HEADER.size)
        if len(header) < _HEADER.size:
            return
        stream, size = _HEADER.unpack(header)
        remaining = size
        fd = 2 if stream == 2 else 1
        while remaining:
            chunk = sock.recv(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]


def _feed_stdin(sock: socket.socket) -> None:
    try:
        while chunk := os.read(0, 1 << 16):
            sock.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


def _fail(message: str) -> int:
    sys.stderr.write(f"conductor docker placement: {message}\n")
    sys.stderr.flush()
    return EXIT_DOCKER_ERROR


def run(config: ContainerConfig, argv: list[str]) -> int:
    """Create, attach, start, follow, remove; the container's exit status."""
    from docker.errors import DockerException, ImageNotFound, NotFound

    import docker

    try:
        client = docker.APIClient(base_url=config.docker_host or None, version="auto")
    except DockerException as exc:
        return _fail(f"no Docker engine answers ({exc}); check the Docker socket")
    kwargs = _create_kwargs(config, argv)
    host_config = client.create_host_config(**kwargs.pop("host_config_kwargs"))
    try:
        created = client.create_container(host_config=host_config, **kwargs)
    except ImageNotFound:
        return _fail(f"image {config.image!r} is not on this Docker host; build it first")
    except DockerException as exc:
        return _fail(f"cannot create container {config.name!r}: {exc}")
    container = str(created["Id"])
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stopping.set()

        def kill() -> None:
            with contextlib.suppress(DockerException):
                docker.APIClient(base_url=config.docker_host or None, version="auto").kill(
                    container, signal=int(signum)
                )

        threading.Thread(target=kill, daemon=True).start()

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    try:
        params = {"stdout": 1, "stderr": 1, "stream": 1, "stdin": 1 if config.stdin else 0}
        sock = _raw_socket(client.attach_socket(container, params=params))
        try:
            client.start(container)
        except DockerException as exc:
            return _fail(f"cannot start container {config.name!r}: {exc}")
        if config.stdin:
            threading.Thread(target=_feed_stdin, args=(sock,), daemon=True).start()
        _copy_frames(sock)
        status = int(client.wait(container)["StatusCode"])
        state = client.inspect_container(container).get("State", {})
    except (DockerException, OSError, RuntimeError) as exc:
        return _fail(f"lost container {config.name!r}: {exc}")
    finally:
        try:
            client.remove_container(container, force=True)
        except NotFound:
            pass
        except DockerException as exc:
            sys.stderr.write(f"conductor docker placement: could not remove {config.name}: {exc}\n")
    killed_by = status - 128
    if state.get("OOMKilled") or (status > 128 and killed_by in {s.value for s in signal.Signals}):
        # Ended by a signal in the container: end the same way, as a local process would.
        sig = signal.SIGKILL if state.get("OOMKilled") else signal.Signals(killed_by)
        sys.stdout.flush()
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return status


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) < 3 or args[1] != "--":
        return _fail(
            "usage: python -m claude_conductor.system.docker_attach CONFIG_JSON -- ARGV..."
        )
    try:
        config = ContainerConfig.from_json(args[0])
    except (TypeError, ValueError) as exc:
        return _fail(f"bad container configuration: {exc}")
    return run(config, args[2:])


if __name__ == "__main__":
    raise SystemExit(main())
