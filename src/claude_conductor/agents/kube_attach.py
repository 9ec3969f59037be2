"""The attach helper of the ``kubernetes`` placement: the local command the engine spawns
(``python -m claude_conductor.agents.kube_attach LAUNCH_FILE``) whose standard streams are the
agent pod's.

It runs in the engine's trust domain (the worker pod, with the worker's service-account
token; the agent pod has none). It reads the launch file the placement wrote (and removes it:
it holds the agent's environment), snapshots the worktree, creates the agent Job, waits for
its pod, streams the request and the snapshot into the pod's stdin (``attach``), then follows
the pod's log: the work's lines go to stdout, its stderr to stderr, and its changes (the
``patch`` control line) are applied to the engine's worktree with ``git apply`` before the
agent's ``result`` line is let through, so the engine sees a finished agent only once its
work is safe in the worktree. A pod that ends without finishing is reported on stderr with
the reason Kubernetes gives (OOMKilled, DeadlineExceeded, Evicted, deleted...).

However it ends (finished, SIGTERM from the engine, the engine gone), it deletes the Job
before it exits; the Job's ``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished`` bound
it even if this helper is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.agents.kube_wire import (
    ControlLine,
    PodRequest,
    decode_patch,
    parse_control,
    snapshot_files,
    write_snapshot,
)
from claude_conductor.errors import AgentError
from claude_conductor.settings import KubernetesPlacementSettings

__all__ = ["CONTAINER", "LaunchFile", "delete_job", "kube_client", "main"]

logger = logging.getLogger(__name__)

CONTAINER = "agent"
"""The agent container's name in the Job template."""
_REQUEST_TIMEOUT_SECONDS = 30
_SEND_CHUNK_BYTES = 256 * 1024
_READY_TIMEOUT_SECONDS = 120.0
_EXIT_SIGTERM = 128 + signal.SIGTERM
_STATUS_WAIT_SECONDS = 15.0
# Waiting reasons that no retry by the kubelet will fix.
_FATAL_WAITING = frozenset({"InvalidImageName", "CreateContainerConfigError", "ErrImageNeverPull"})


class LaunchFile(BaseModel):
    """What the placement hands the helper (a 0600 file, removed as soon as it is read)."""

    model_config = ConfigDict(frozen=True)

    job: dict[str, Any] = Field(description="The rendered agent Job.")
    kube: KubernetesPlacementSettings = Field(description="Where the cluster is.")
    role: str = Field(description="agent or shell.")
    argv: list[str] = Field(description="What the pod runs (engine paths inside).")
    env: dict[str, str] = Field(description="Its scrubbed environment.")
    workspace: str = Field(description="The engine's worktree.")
    stdin_used: bool = Field(description="The work reads its prompt from stdin.")


class PodEnded(Exception):
    """The agent pod ended (or never started) before the work finished; ``reason`` says why."""

    def __init__(self, reason: str, exit_code: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


@contextlib.asynccontextmanager
async def kube_client(kube: KubernetesPlacementSettings, *, websocket: bool = False) -> Any:
    """A kubernetes_asyncio ApiClient: ``kube.api_url``, else the pod's service account,
    else the kubeconfig."""
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.stream import WsApiClient

    cfg = client.Configuration()
    if kube.api_url:
        cfg.host = kube.api_url.rstrip("/")
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(
            config_file=str(kube.kubeconfig) if kube.kubeconfig else None,
            context=kube.context,
            client_configuration=cfg,
        )
    api = WsApiClient(configuration=cfg) if websocket else client.ApiClient(configuration=cfg)
    async with api:
        yield api


def _core(api: Any) -> Any:
    from kubernetes_asyncio import client

    return client.CoreV1Api(api)


def _batch(api: Any) -> Any:
    from kubernetes_asyncio import client

    return client.BatchV1Api(api)


async def delete_job(api: Any, namespace: str, name: str) -> bool:
    """Delete a Job and (by garbage collection) its pod; False when it was already gone."""
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        await _batch(api).delete_namespaced_job(
            name,
            namespace,
            propagation_policy="Background",
            grace_period_seconds=10,
            _request_timeout=_REQUEST_TIMEOUT_SECONDS,
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def _get(call: Any) -> dict[str, Any]:
    response = await call
    async with response:
        data: dict[str, Any] = await response.json(content_type=None)
    return data


def _why(pod: dict[str, Any] | None, job: dict[str, Any] | None) -> tuple[str, int]:
    """The reason Kubernetes gives for a pod that ended, and an exit code for it."""
    parts: list[str] = []
    code = 1
    for cond in (job or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            parts.append(f"Job failed: {cond.get('reason')} ({cond.get('message', '')})")
    if pod is None:
        parts.append("the pod is gone (deleted or evicted)")
    else:
        status = pod.get("status", {})
        if status.get("reason"):
            parts.append(f"pod {status['reason']}: {status.get('message', '')}".strip())
        for cs in status.get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated")
            if terminated:
                code = int(terminated.get("exitCode", 1)) or 1
                parts.append(
                    f"container {cs.get('name')} terminated: {terminated.get('reason')} "
                    f"(exit code {terminated.get('exitCode')})"
                )
    return "; ".join(parts) or "no reason given", code


async def _pods(api: Any, namespace: str, job_name: str) -> list[dict[str, Any]]:

    data = await _get(
        _core(api).list_namespaced_pod(
            namespace,
            label_selector=f"job-name={job_name}",
            _preload_content=False,
            _request_timeout=_REQUEST_TIMEOUT_SECONDS,
        )
    )
    return [p for p in data.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


async def _job(api: Any, namespace: str, job_name: str) -> dict[str, Any] | None:
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        return await _get(
            _batch(api).read_namespaced_job(
                job_name,
                namespace,
                _preload_content=False,
                _request_timeout=_REQUEST_TIMEOUT_SECONDS,
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def _wait_started(api: Any, namespace: str, job_name: str, timeout_seconds: float) -> str:
    """The name of the Job's pod once its container runs (or has already ended)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    delay, said = 0.05, ""
    while True:
        pods = await _pods(api, namespace, job_name)
        for pod in pods:
            status = pod.get("status", {})
            for cs in status.get("containerStatuses") or []:
                state = cs.get("state") or {}
                if "running" in state or "terminated" in state:
                    return str(pod["metadata"]["name"])
                waiting = state.get("waiting") or {}
                reason = waiting.get("reason", "")
                if reason in _FATAL_WAITING:
                    raise PodEnded(
                        f"the agent pod cannot start: {reason}: {waiting.get('message')}"
                    )
                if reason and reason != said and reason != "ContainerCreating":
                    said = reason
                    print(f"agent pod {pod['metadata']['name']}: {reason}", file=sys.stderr)
            if status.get("phase") in ("Succeeded", "Failed"):
                return str(pod["metadata"]["name"])
        job = await _job(api, namespace, job_name)
        if job is None:
            raise PodEnded("the agent Job was deleted before its pod started")
        reason, _ = _why(None, job)
        if "Job failed" in reason:
            raise PodEnded(reason)
        if loop.time() > deadline:
            raise PodEnded(
                f"the agent pod did not start within {timeout_seconds:g}s "
                f"(agent.kubernetes.start_timeout_seconds){': ' + said if said else ''}"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)


async def _send(ws: Any, header: bytes, archive: IO[bytes]) -> None:
    """The request into the pod's stdin (channel 0 of the attach websocket)."""
    await ws.send_bytes(b"\x00" + header)
    archive.seek(0)
    while chunk := archive.read(_SEND_CHUNK_BYTES):
        await ws.send_bytes(b"\x00" + chunk)


async def _log_lines(api: Any, namespace: str, pod: str) -> AsyncIterator[bytes]:
    """The pod's log, followed, one line at a time (lines of any length)."""

    response = await _core(api).read_namespaced_pod_log(
        pod, namespace, container=CONTAINER, follow=True, _preload_content=False
    )
    async with response:
        pending = bytearray()
        async for chunk in response.content.iter_any():
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                yield bytes(pending[: end + 1])
                del pending[: end + 1]
        if pending:
            yield bytes(pending)


def _is_result(line: bytes) -> bool:
    try:
        return bool(json.loads(line).get("type") == "result")
    except (ValueError, AttributeError):
        return False


def _apply(workspace: Path, patch: bytes) -> None:
    """The pod's changes into the engine's worktree. ``git apply`` refuses paths outside the
    worktree, inside ``.git`` and through symlinks."""
    if not patch.strip():
        return
    proc = subprocess.run(
        ["git", "apply", "--binary", "--whitespace=nowarn", "-"],
        cwd=workspace,
        input=patch,
        capture_output=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", errors="replace").strip()[-400:]
        raise AgentError(f"the agent pod's changes do not apply to the worktree: {tail}")


class _Session:
    """One launch: the Job, its pod, the stream in and the log out."""

    def __init__(self, launch: LaunchFile, prompt: str | None, archive: IO[bytes], size: int):
        self.launch = launch
        self.namespace = launch.kube.namespace
        self.job_name = str(launch.job["metadata"]["name"])
        self.nonce = secrets.token_hex(16)
        archive.seek(0)
        digest = hashlib.sha256()
        while chunk := archive.read(_SEND_CHUNK_BYTES):
            digest.update(chunk)
        self.archive = archive
        self.header = (
            PodRequest(
                nonce=self.nonce,
                role="shell" if launch.role == "shell" else "agent",
                argv=launch.argv,
                env=launch.env,
                engine_workspace=launch.workspace,
                stdin_text=prompt,
                archive_bytes=size,
                archive_sha256=digest.hexdigest(),
            )
            .model_dump_json()
            .encode("utf-8")
            + b"\n"
        )

    async def run(self, api: Any) -> int:

        await _batch(api).create_namespaced_job(
            self.namespace, self.launch.job, _request_timeout=_REQUEST_TIMEOUT_SECONDS
        )
        pod = await _wait_started(
            api, self.namespace, self.job_name, self.launch.kube.start_timeout_seconds
        )
        async with kube_client(self.launch.kube, websocket=True) as ws_api:
            attach = await _core(ws_api).connect_get_namespaced_pod_attach(
                pod, self.namespace, container=CONTAINER, stdin=True, stdout=False,
                stderr=False, tty=False, _preload_content=False,
            )  # fmt: skip
            async with attach as ws:
                await _send(ws, self.header, self.archive)
                return await self._follow(api, pod, ws)

    async def _follow(self, api: Any, pod: str, ws: Any) -> int:
        held: list[bytes] = []
        patch: ControlLine | None = None
        exit_code: int | None = None
        out = sys.stdout.buffer
        async for line in _log_lines(api, self.namespace, pod):
            control = parse_control(line, self.nonce)
            if control is None:
                if self.launch.role == "agent" and _is_result(line):
                    held.append(line)
                else:
                    out.write(line)
                    out.flush()
            elif control.kind == "ready":
                await ws.close()  # stdinOnce: the pod's stdin closes with the session
            elif control.kind == "stderr":
                print(control.text, file=sys.stderr, flush=True)
            elif control.kind == "error":
                print(f"agent pod {pod}: {control.text}", file=sys.stderr, flush=True)
            elif control.kind == "patch":
                patch = control
            elif control.kind == "exit":
                exit_code = control.code
        if exit_code is None or patch is None:
            reason, code = await self._ended(api, pod)
            raise PodEnded(f"the agent pod {pod} ended before the work finished: {reason}", code)
        workspace = Path(self.launch.workspace)
        changes = decode_patch(patch, self.launch.kube.max_workspace_bytes)
        await asyncio.to_thread(_apply, workspace, changes)
        for line in held:
            out.write(line)
        out.flush()
        return exit_code

    async def _ended(self, api: Any, pod: str) -> tuple[str, int]:
        """Why the pod ended. Its log closes as the container exits; the kubelet reports the
        container's end a moment later, so wait a little for that report."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STATUS_WAIT_SECONDS
        while True:
            found, job = await self._pod(api, pod), await _job(api, self.namespace, self.job_name)
            reason, code = _why(found, job)
            if found is None or "terminated" in reason or loop.time() > deadline:
                return reason, code
            await asyncio.sleep(0.25)

    async def _pod(self, api: Any, name: str) -> dict[str, Any] | None:
        pods = await _pods(api, self.namespace, self.job_name)
        return next((p for p in pods if p["metadata"]["name"] == name), None)


async def _parent_gone(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)


async def _attach(launch: LaunchFile, prompt: str | None) -> int:
    workspace = Path(launch.workspace)
    names = await asyncio.to_thread(snapshot_files, workspace)
    with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as archive:
        size = await asyncio.to_thread(
            write_snapshot, workspace, names, archive, launch.kube.max_workspace_bytes
        )
        session = _Session(launch, prompt, archive, size)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        async with kube_client(launch.kube) as api:
            work = asyncio.create_task(session.run(api))
            waits = {
                work,
                asyncio.create_task(stop.wait()),
                asyncio.create_task(_parent_gone(os.getppid())),
            }
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if work in done:
                    return work.result()
                print(f"agent Job {session.job_name}: stopped, deleting it", file=sys.stderr)
                return _EXIT_SIGTERM
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
                await asyncio.shield(delete_job(api, session.namespace, session.job_name))


def _read_launch(path: Path) -> LaunchFile:
    try:
        text = path.read_text(encoding="utf-8")
    finally:
        path.unlink(missing_ok=True)
    return LaunchFile.model_validate_json(text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m claude_conductor.agents.kube_attach LAUNCH_FILE", file=sys.stderr)
        return 2
    try:
        launch = _read_launch(Path(args[0]))
    except (OSError, ValueError) as exc:
        print(f"cannot read the launch file {args[0]!r}: {exc}", file=sys.stderr)
        return 2
    prompt = sys.stdin.read() if launch.stdin_used else None
    try:
        code = asyncio.run(_attach(launch, prompt))
    except PodEnded as exc:
        print(exc.reason, file=sys.stderr, flush=True)
        return exc.exit_code
    except AgentError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # the API unreachable, refused, ...: one line, not a traceback
        print(f"agent Job failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    if code < 0:  # the work was killed by a signal: end the same way, as a local agent would
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code if code >= 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
