"""What `up` concludes from the last `down` (``teardown.take_clean_stop``): whether a run can
have been left in flight, so whether it must check the database before starting the worker."""

from __future__ import annotations

import os
from pathlib import Path

from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.standalone import launch, teardown


def _settings(tmp_path: Path) -> ConductorSettings:
    settings = ConductorSettings(home=tmp_path / "home")
    settings.run_dir.mkdir(parents=True)
    launch.prefect_home(settings).mkdir(parents=True)
    return settings


def test_no_database_yet_is_clean(tmp_path: Path) -> None:
    assert teardown.take_clean_stop(_settings(tmp_path))


def test_a_clean_down_is_used_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (launch.prefect_home(settings) / "prefect.db").write_bytes(b"db")
    assert not teardown.take_clean_stop(settings), "a crash leaves no record"
    teardown._mark_clean_stop(settings)
    assert teardown.take_clean_stop(settings)
    assert not teardown.take_clean_stop(settings), "the next stop must record it again"


def test_a_database_changed_since_down_is_not_clean(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    database = launch.prefect_home(settings) / "prefect.db"
    database.write_bytes(b"db")
    teardown._mark_clean_stop(settings)
    restored = database.with_suffix(".restored")  # a restore puts another file in its place
    restored.write_bytes(b"db")
    os.utime(restored, ns=(database.stat().st_atime_ns, database.stat().st_mtime_ns))
    restored.replace(database)
    assert not teardown.take_clean_stop(settings)
