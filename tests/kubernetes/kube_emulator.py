"""An emulated Kubernetes cluster for the end-to-end tests of the ``kubernetes`` placement.

Why emulated: no API server, kubelet or cluster can run on these machines (no registry ships
kube-apiserver, kubelet, k3s or kind; see shared/FACTS.md). So the API is PyPI ``kmock``'s
in-memory ``KubernetesEmulator`` (real HTTP, real watch streams, merge patches) with small
shims where it differs from a real API server in what Conductor touches:

- create: ``generateName`` resolved, ``uid``/``resourceVersion``/``creationTimestamp`` set;
- list and watch honour ``labelSelector`` (equality terms, what Conductor uses);
- ``pods/NAME/log`` (with ``follow``) and ``pods/NAME/attach`` (a ``v4.channel.k8s.io``
  websocket: channel 0 is the container's stdin; ``stdinOnce`` closes it on disconnect)
  are served from the test kubelet.

And the ``Kubelet`` below plays the Job controller, the kubelet and the garbage collector
where Conductor looks: for each new Job it creates the Pod (labels ``job-name``,
``batch.kubernetes.io/job-name``, ``controller-uid``, an ownerReference), runs the Pod's
container as a local process (the image's command, with each emptyDir volume a temp dir:
paths under a mountPath are mapped in argv, env and workingDir; ``python`` is this
interpreter), keeps its output as the pod's log, moves the Pod's phase and
``containerStatuses`` and the Job's status and conditions, honours ``backoffLimit``,
``activeDeadlineSeconds`` (DeadlineExceeded) and ``ttlSecondsAfterFinished``, and on Job
deletion SIGTERMs the container, SIGKILLs it after the grace period and deletes the Pod.
Faults are injected by hand (``oom_kill_next``). No image is pulled: the container runs
this checkout's code, as Conductor's image would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import aiohttp.web
import kmock

T = TypeVar("T")

_POD_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/(log|attach)")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif labels.get(term) is None:
            return False
    return True


class ShimmedEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator plus the shims listed in the module docstring."""

    kubelet: Kubelet

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        match = _POD_PATH.fullmatch(raw_request.path)
        if match:
            namespace, name, what = match.groups()
            if what == "attach":
                return await self.kubelet.serve_attach(raw_request, namespace, name)
            return await self.kubelet.serve_log(raw_request, namespace, name)
        return await super().__call__(raw_request)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        action = str(getattr(request.action, "value", request.action) or "").lower()
        if action == "create" and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = str(secrets.randbelow(10**9))
        response = await super()._handle(request)
        plural = getattr(request.resource, "plural", None)
        if plural == "jobs" and response.status < 300:
            if action == "create":
                self.kubelet.soon(self.kubelet.job_created(request.data))
            elif action == "delete" and request.name:
                self.kubelet.soon(self.kubelet.job_deleted(request.namespace, request.name))
        return response

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            result["items"] = [o for o in result["items"] if _selected(o, selector)]
        return result

    async def _serve_watch(self, request: Any) -> Any:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if selector and isinstance(event, dict) and not _selected(event["object"], selector):
                continue
            yield event


@dataclass
class PodRun:
    """One emulated pod: its container process, its log, its volumes."""

    namespace: str
    name: str
    job: str
    spec: dict[str, Any]
    dirs: tempfile.TemporaryDirectory[str]
    process: asyncio.subprocess.Process | None = None
    log: bytearray = field(default_factory=bytearray)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    deleted: bool = False
    exit_code: int | None = None
    reason: str | None = None
    started_at: str = ""

    def append(self, data: bytes) -> None:
        self.log += data
        self.changed.set()


class Kubelet:
    """The Job controller + kubelet + garbage collector of the emulated cluster."""

    def __init__(self, base_url: str, *, max_grace_seconds: float = 3.0) -> None:
        self.base_url = base_url
        self.max_grace_seconds = max_grace_seconds
        self.pods: dict[tuple[str, str], PodRun] = {}
        self.jobs_seen: list[str] = []
        self.job_manifests: dict[str, dict[str, Any]] = {}  # as created, by name
        self.started_at: dict[str, float] = {}  # job name -> loop time its container started
        self._oom_next = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(self.base_url)
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self._session.request(method, path, json=body, headers=headers) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            return data if resp.status < 300 else {}

    async def _patch_job(self, ns: str, name: str, status: dict[str, Any]) -> None:
        await self._api("PATCH", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}", {"status": status})

    async def _patch_pod(self, run: PodRun, status: dict[str, Any]) -> None:
        if not run.deleted:
            path = f"/api/v1/namespaces/{run.namespace}/pods/{run.name}"
            await self._api("PATCH", path, {"status": status})

    async def close(self) -> None:
        for run in list(self.pods.values()):
            await self._stop(run, grace=0.5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def oom_kill_next(self) -> None:
        """The next container is killed as by the OOM killer once it has printed something."""
        self._oom_next += 1

    # -- the Job controller -----------------------------------------------------------------
    async def job_created(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        ns, name = meta["namespace"], meta["name"]
        self.jobs_seen.append(name)
        self.job_manifests[name] = job
        await self._patch_job(ns, name, {"active": 1, "ready": 0, "startTime": _now()})
        deadline = spec.get("activeDeadlineSeconds")
        if deadline:
            self.soon(self._deadline(ns, name, float(deadline)))
        failed = 0
        while True:
            run = await self._create_pod(job)
            await self._run_container(run)
            if run.deleted:
                return
            if run.exit_code == 0:
                await self._patch_job(ns, name, {
                    "active": 0, "ready": 0, "succeeded": 1, "completionTime": _now(),
                    "conditions": [{"type": "Complete", "status": "True",
                                    "lastTransitionTime": _now()}],
                })  # fmt: skip
                break
            failed += 1
            if failed > int(spec.get("backoffLimit", 6)):
                await self._patch_job(ns, name, {
                    "active": 0, "ready": 0, "failed": failed,
                    "conditions": [{"type": "Failed", "status": "True",
                                    "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit",
                                    "lastTransitionTime": _now()}],
                })  # fmt: skip
                break
            await self._patch_job(ns, name, {"failed": failed})
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is not None:
            await asyncio.sleep(float(ttl))
            await self._api("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")

    async def _deadline(self, ns: str, name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        runs = [r for r in self.pods.values() if r.job == name and not r.finished]
        if not runs:
            return
        await self._patch_job(ns, name, {
            "active": 0,
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                            "message": "Job was active longer than specified deadline",
                            "lastTransitionTime": _now()}],
        })  # fmt: skip
        for run in runs:
            await self._stop(run)
            await self._api("DELETE", f"/api/v1/namespaces/{ns}/pods/{run.name}")
            run.deleted = True

    async def job_deleted(self, ns: str, name: str) -> None:
        """Garbage collection of the Job's pods: SIGTERM, grace, SIGKILL, delete."""
        for run in [r for r in self.pods.values() if r.job == name and r.namespace == ns]:
            await self._stop(run)
            if not run.deleted:
                run.deleted = True
                await self._api("DELETE", f"/api/v1/namespaces/{ns}/pods/{run.name}")

    # -- the kubelet ------------------------------------------------------------------------
    async def _create_pod(self, job: dict[str, Any]) -> PodRun:
        meta, template = job["metadata"], job["spec"]["template"]
        ns, job_name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        name = f"{job_name}-{secrets.token_hex(3)[:5]}"
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "job-name": job_name, "batch.kubernetes.io/job-name": job_name,
            "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid,
        }  # fmt: skip
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": ns, "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": uid, "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}]},
        }  # fmt: skip
        await self._api("POST", f"/api/v1/namespaces/{ns}/pods", pod)
        run = PodRun(ns, name, job_name, template["spec"], tempfile.TemporaryDirectory())
        self.pods[(ns, name)] = run
        return run

    def _argv_env(self, run: PodRun) -> tuple[list[str], dict[str, str], str]:
        container = run.spec["containers"][0]
        mounts = sorted(
            ((m["mountPath"], os.path.join(run.dirs.name, m["name"]))
             for m in container.get("volumeMounts", [])),
            key=lambda m: -len(m[0]),
        )  # fmt: skip
        for _, local in mounts:
            os.makedirs(local, exist_ok=True)

        def local(value: str) -> str:
            for mount, path in mounts:
                if value == mount or value.startswith(mount + "/"):
                    return path + value[len(mount) :]
            return value

        argv = [local(a) for a in [*container.get("command", []), *container.get("args", [])]]
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        env = {"PATH": os.environ.get("PATH", os.defpath)}  # the image's ENV
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = local(str(item["value"]))
        return argv, env, local(container.get("workingDir", run.dirs.name))

    async def _run_container(self, run: PodRun) -> None:
        container = run.spec["containers"][0]
        argv, env, cwd = self._argv_env(run)
        os.makedirs(cwd, exist_ok=True)
        oom = self._oom_next > 0
        if oom:
            self._oom_next -= 1
        run.process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env,
            stdin=asyncio.subprocess.PIPE if container.get("stdin") else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        run.started_at = _now()
        self.started_at[run.job] = asyncio.get_running_loop().time()
        await self._patch_pod(run, {
            "phase": "Running", "startTime": run.started_at,
            "containerStatuses": [{"name": container["name"], "ready": True, "restartCount": 0,
                                   "image": container.get("image", ""),
                                   "state": {"running": {"startedAt": run.started_at}}}],
        })  # fmt: skip
        await self._patch_job(run.namespace, run.job, {"ready": 1})
        assert run.process.stdout is not None
        while chunk := await run.process.stdout.read(65536):
            run.append(chunk)
            if oom and run.process.returncode is None:
                oom = False
                run.reason = "OOMKilled"
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
        code = await run.process.wait()
        run.exit_code = code if code >= 0 else 128 - code
        reason = run.reason or ("Completed" if code == 0 else "Error")
        run.finished = True
        run.changed.set()
        await self._patch_pod(run, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": container["name"], "ready": False, "restartCount": 0,
                                   "image": container.get("image", ""),
                                   "state": {"terminated": {
                                       "exitCode": run.exit_code, "reason": reason,
                                       "startedAt": run.started_at, "finishedAt": _now()}}}],
        })  # fmt: skip

    async def _stop(self, run: PodRun, grace: float | None = None) -> None:
        process = run.process
        if process is None or process.returncode is not None:
            return
        if grace is None:
            grace = min(
                float(run.spec.get("terminationGracePeriodSeconds", 30)), self.max_grace_seconds
            )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    # -- pods/log and pods/attach -----------------------------------------------------------
    async def serve_log(
        self, request: aiohttp.web.BaseRequest, ns: str, name: str
    ) -> aiohttp.web.StreamResponse:
        run = self.pods.get((ns, name))
        if run is None:
            return aiohttp.web.json_response(
                {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404},
                status=404,
            )
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = 0
        follow = request.query.get("follow", "").lower() in ("true", "1")  # Go ParseBool
        while True:
            run.changed.clear()
            if len(run.log) > sent:
                await response.write(bytes(run.log[sent:]))
                sent = len(run.log)
            if run.finished or not follow:
                break
            await run.changed.wait()
        await response.write_eof()
        return response

    async def serve_attach(
        self, request: aiohttp.web.BaseRequest, ns: str, name: str
    ) -> aiohttp.web.StreamResponse:
        ws = aiohttp.web.WebSocketResponse(protocols=("v4.channel.k8s.io",), max_msg_size=0)
        await ws.prepare(request)  # type: ignore[arg-type]
        run = self.pods.get((ns, name))
        stdin = run.process.stdin if run and run.process else None
        if stdin is None:
            await ws.close()
            return ws
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x00":
                stdin.write(message.data[1:])
                with contextlib.suppress(ConnectionError):
                    await stdin.drain()
        if run is not None and run.spec["containers"][0].get("stdinOnce"):
            stdin.close()
        return ws


@dataclass
class Cluster:
    """The emulator and kubelet, served from a thread of their own."""

    url: str
    emulator: ShimmedEmulator
    kubelet: Kubelet
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        async def _list() -> list[dict[str, Any]]:
            group = "/api/v1" if plural == "pods" else "/apis/batch/v1"
            path = f"{group}/namespaces/{namespace}/{plural}" if namespace else f"{group}/{plural}"
            data = await self.kubelet._api("GET", path)
            items: list[dict[str, Any]] = data.get("items", [])
            return items

        return self.call(_list())

    def live_processes(self) -> list[int]:
        return [
            run.process.pid
            for run in self.kubelet.pods.values()
            if run.process is not None and run.process.returncode is None
        ]


@contextlib.contextmanager
def emulated_cluster() -> Iterator[Cluster]:
    """Start the emulator and the kubelet on 127.0.0.1 in a background thread."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    stop = asyncio.Event()
    started = threading.Event()

    async def serve() -> None:
        emulator = ShimmedEmulator()
        emulator.resources.load_bundled()
        async with emulator, kmock.Server(emulator) as server:
            url = str(server.url).rstrip("/")
            emulator.kubelet = Kubelet(url)
            ready.update(url=url, emulator=emulator)
            started.set()
            await stop.wait()
            await emulator.kubelet.close()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surfaced to the test through `ready`
            ready["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="emulated-cluster", daemon=True)
    thread.start()
    assert started.wait(30), "the emulated cluster did not start"
    if "error" in ready:
        raise ready["error"]
    cluster = Cluster(ready["url"], ready["emulator"], ready["emulator"].kubelet, loop)
    try:
        yield cluster
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
