"""Backup and restore of a stack's history: the Prefect database (flow runs, their states,
artifacts: results, reports), the results folder (result.json, patches, transcripts) and the
config file.

Standalone: the SQLite database is copied with SQLite's online backup API, so a backup taken
while the stack runs is consistent (a snapshot of one moment, never a half-written page), and
the copy is checked with ``PRAGMA integrity_check``. ``restore`` refuses to run over a live
stack, or over a home that already has history unless told to replace it.

Docker: ``pg_dump`` of the Prefect database, taken through ``docker compose exec`` in the running
stack's own PostgreSQL container, and a tar of the results folder of the stack's data folder (a
host folder, ``CONDUCTOR_DATA_DIR``); ``restore`` loads them back into a running stack (``psql``,
and the results unpacked into its data folder), with its workers stopped first.

A backup folder holds ``manifest.json`` (what, when, from where), and ``prefect.db`` or
``prefect.sql``, ``results/`` or ``results.tar.gz``, ``config.yaml``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from claude_conductor.errors import ConductorError, InputError
from claude_conductor.settings import ConductorSettings, config_path
from claude_conductor.system import processes
from claude_conductor.tiers.docker.files import (
    compose_argv,
    data_dir,
    docker_options,
    find_compose_dir,
    read_env_file,
    stack_files,
    stack_overrides,
)
from claude_conductor.tiers.standalone import launch

__all__ = [
    "BackupInfo",
    "backup_docker",
    "backup_standalone",
    "default_backup_dir",
    "read_manifest",
    "restore_docker",
    "restore_standalone",
]

_MANIFEST = "manifest.json"
_FORMAT = 1


class BackupInfo(BaseModel):
    """What a backup folder holds (``manifest.json``)."""

    format: int = Field(default=_FORMAT, description="Backup layout version.")
    tier: str = Field(description="standalone or docker.")
    created_at: datetime = Field(description="When the backup was taken (UTC).")
    source_home: str = Field(description="The Conductor home it was taken from.")
    stack_was_running: bool = Field(description="Whether the stack ran during the backup.")
    database: str = Field(description="The database file in the folder.")
    database_bytes: int = Field(default=0, description="Its size.")
    flow_runs: int | None = Field(default=None, description="Flow runs in the copy.")
    results: str | None = Field(default=None, description="The results in the folder.")
    result_files: int = Field(default=0, description="Files under results.")
    config: str | None = Field(default=None, description="config.yaml, when there was one.")
    seconds: float = Field(default=0.0, description="How long the backup took.")
    path: str = Field(default="", description="The backup folder.")


def default_backup_dir(settings: ConductorSettings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.home / "backups" / f"backup-{stamp}"


def _database_path(settings: ConductorSettings) -> Path:
    return launch.prefect_home(settings) / "prefect.db"


def _stack_running(settings: ConductorSettings) -> bool:
    if processes.is_running(settings, launch.SERVER):
        return True
    return processes.http_ok(launch.health_url(launch.local_api_url(settings)), 1.0)


def _fresh_target(target: Path) -> Path:
    target = target.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(
            f"--to {str(target)!r} already exists and is not an empty folder; give a new "
            "folder for the backup",
            field="to",
            value=str(target),
        )
    target.mkdir(parents=True, exist_ok=True)
    return target


def _sqlite_copy(source: Path, target: Path) -> int:
    """Copy ``source`` to ``target`` with the online backup API; return its flow-run count."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        # One step: a single read transaction, so the copy is one moment of the database
        # (stepwise copies restart whenever the server writes, which it does all the time).
        # Under WAL the server's writers are not blocked meanwhile.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")
        check = dst.execute("PRAGMA integrity_check").fetchone()
        if not check or check[0] != "ok":
            raise ConductorError(f"the database copy {target} failed its integrity check: {check}")
        try:
            count = dst.execute("SELECT count(*) FROM flow_run").fetchone()
        except sqlite3.Error:
            return 0
        return int(count[0]) if count else 0
    except sqlite3.Error as exc:
        raise ConductorError(f"could not copy the Prefect database {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _write_manifest(target: Path, info: BackupInfo) -> BackupInfo:
    info = info.model_copy(update={"path": str(target)})
    (target / _MANIFEST).write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return info


def read_manifest(folder: Path) -> BackupInfo:
    path = folder.expanduser() / _MANIFEST
    try:
        info = BackupInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{str(folder)!r} is not a Conductor backup (no {_MANIFEST}); give a folder "
            "`conductor backup` wrote",
            field="dir",
            value=str(folder),
        ) from None
    except ValueError as exc:
        raise InputError(
            f"{str(path)!r} is not a readable backup manifest ({exc.__class__.__name__}); "
            "give a folder `conductor backup` wrote",
            field="dir",
            value=str(folder),
        ) from exc
    if info.format != _FORMAT:
        raise InputError(
            f"{str(folder)!r} is a backup of format {info.format}; this Conductor reads "
            f"format {_FORMAT}",
            field="dir",
        )
    return info.model_copy(update={"path": str(folder.expanduser().resolve())})


# -- standalone ----------------------------------------------------------------------------


def backup_standalone(settings: ConductorSettings, to: Path | None = None) -> BackupInfo:
    """A consistent copy of the standalone stack's history, running or not."""
    started = time.monotonic()
    database = _database_path(settings)
    if not database.is_file():
        raise InputError(
            f"no Prefect database at {database}: nothing to back up (has `conductor up` ever "
            f"run with CONDUCTOR_HOME={settings.home}?)",
            field="home",
            value=str(settings.home),
        )
    running = _stack_running(settings)
    target = _fresh_target(to or default_backup_dir(settings))
    runs = _sqlite_copy(database, target / "prefect.db")
    results = None
    if settings.results_dir.is_dir():
        shutil.copytree(settings.results_dir, target / "results", symlinks=True)
        results = "results"
    config = None
    if config_path(settings.home).is_file():
        shutil.copy2(config_path(settings.home), target / "config.yaml")
        config = "config.yaml"
    info = BackupInfo(
        tier="standalone",
        created_at=datetime.now(UTC),
        source_home=str(settings.home),
        stack_was_running=running,
        database="prefect.db",
        database_bytes=(target / "prefect.db").stat().st_size,
        flow_runs=runs,
        results=results,
        result_files=_count_files(target / "results"),
        config=config,
        seconds=round(time.monotonic() - started, 3),
    )
    return _write_manifest(target, info)


def restore_standalone(
    settings: ConductorSettings, folder: Path, *, replace: bool = False
) -> BackupInfo:
    """Put a standalone backup back under the home. Refuses over a live stack, and over
    existing history unless ``replace`` (which moves the old files aside, never deletes)."""
    info = read_manifest(folder)
    source = Path(info.path)
    if info.tier != "standalone":
        raise InputError(
            f"{str(folder)!r} is a backup of the {info.tier} tier; restore it with "
            f"`conductor restore {folder} --tier {info.tier}`",
            field="tier",
        )
    if _stack_running(settings):
        raise InputError(
            f"the standalone stack under {settings.home} is running; stop it with "
            "`conductor down` first (a restore replaces the database under the server)",
            field="stack",
        )
    database = _database_path(settings)
    existing = [p for p in (database, settings.results_dir) if p.exists()]
    if existing and not replace:
        raise InputError(
            f"{settings.home} already has history ({', '.join(str(p) for p in existing)}); "
            "add --replace to set it aside (renamed *.before-restore-<time>) and restore",
            field="replace",
        )
    with processes.locked(settings):
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        for path in existing:
            path.rename(path.with_name(f"{path.name}.before-restore-{stamp}"))
        for suffix in ("-wal", "-shm"):
            stale = database.with_name(database.name + suffix)
            if stale.exists():
                stale.rename(stale.with_name(f"{stale.name}.before-restore-{stamp}"))
        database.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(source / info.database, database)
        if info.results and (source / info.results).is_dir():
            shutil.copytree(source / info.results, settings.results_dir, symlinks=True)
        if info.config and (source / info.config).is_file():
            target = config_path(settings.home)
            if target.exists():
                target.rename(target.with_name(f"config.yaml.before-restore-{stamp}"))
            shutil.copy2(source / info.config, target)
    return info


# -- docker --------------------------------------------------------------------------------


_PG_SOCKET_DIR = "/tmp"
"""Where the stack's PostgreSQL puts its socket (deployments/docker/scripts/infra-postgres.sh:
its root filesystem is read-only)."""


def _docker_results(settings: ConductorSettings) -> Path:
    """The stack's results folder, on the host (the data folder is a host folder mounted at the
    same path in the containers)."""
    return data_dir(settings, docker_options()) / "results"


def _compose(
    settings: ConductorSettings, *args: str, stdin: bytes | None = None, timeout: float = 600
) -> bytes:
    """``docker compose ARGS`` on the running docker stack, bytes in and out (the dump and the
    archive are streamed through stdin/stdout, never through argv)."""
    opts = docker_options()
    files = stack_files(settings, opts)
    if not files.env_file.is_file():
        raise InputError(
            f"no docker-tier stack {opts.stack!r} under {files.folder}: run "
            "`conductor up --tier docker` first",
            field="tier",
        )
    argv = compose_argv(find_compose_dir(opts), files, *args, overrides=stack_overrides(files))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    for key in read_env_file(files.env_file):
        env.pop(key, None)
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=timeout)
    except FileNotFoundError as exc:
        raise ConductorError("`docker` is not installed; see `.ci/docker-setup.sh`") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConductorError(f"`docker compose {' '.join(args[:3])}` took over {timeout}s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-800:]
        raise ConductorError(f"`docker compose {' '.join(args[:4])}` failed: {tail}")
    return proc.stdout


def backup_docker(settings: ConductorSettings, to: Path | None = None) -> BackupInfo:
    """``pg_dump`` of the running docker stack's Prefect database plus its results volume."""
    started = time.monotonic()
    target = _fresh_target(to or default_backup_dir(settings))
    dump = _compose(
        settings,
        "exec", "-T", "postgres",  # the local socket, as the postgres superuser (peer auth)
        "pg_dump", "--host", _PG_SOCKET_DIR, "--username", "postgres", "--dbname", "prefect",
        "--clean", "--if-exists",
    )  # fmt: skip
    (target / "prefect.sql").write_bytes(dump)
    results = _docker_results(settings)
    with tarfile.open(target / "results.tar.gz", "w:gz") as archive:
        if results.is_dir():
            archive.add(results, arcname="results")
    config = None
    if config_path(settings.home).is_file():
        shutil.copy2(config_path(settings.home), target / "config.yaml")
        config = "config.yaml"
    info = BackupInfo(
        tier="docker",
        created_at=datetime.now(UTC),
        source_home=str(settings.home),
        stack_was_running=True,
        database="prefect.sql",
        database_bytes=len(dump),
        results="results.tar.gz",
        config=config,
        seconds=round(time.monotonic() - started, 3),
    )
    return _write_manifest(target, info)


def restore_docker(settings: ConductorSettings, folder: Path) -> BackupInfo:
    """Load a docker backup into the running docker stack: its workers and services stopped,
    the database loaded with ``psql``, the results unpacked into the home volume, then the
    workers started again."""
    info = read_manifest(folder)
    source = Path(info.path)
    if info.tier != "docker":
        raise InputError(
            f"{str(folder)!r} is a backup of the {info.tier} tier; restore it with "
            f"`conductor restore {folder}` (--tier {info.tier})",
            field="tier",
        )
    services = ("worker", "coordinator", "prefect-services")
    _compose(settings, "stop", *services)
    try:
        _compose(
            settings,
            "exec", "-T", "postgres",
            "psql", "--host", _PG_SOCKET_DIR, "--username", "postgres", "--dbname", "prefect",
            "--quiet",
            "--set", "ON_ERROR_STOP=1",
            stdin=(source / info.database).read_bytes(),
        )  # fmt: skip
        results = _docker_results(settings)
        results.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source / "results.tar.gz", "r:gz") as archive:
            archive.extractall(results.parent, filter="data")
    finally:
        _compose(settings, "start", *services)
    return info
