"""The dashboard in a real browser: Debian's chromium driven by Python playwright, against the
real dashboard process (``dashboard_argv``) on a real Prefect server with real runs.

Screenshots land in ``test-output/<test name>/`` at the repository root (gitignored).

The full end-to-end path (the standalone tier up, a real agent run submitted through the form
and followed to ``succeeded``) needs the standalone stack; it lives with the tier's tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.settings import ConductorSettings
from helpers import CHROMIUM_ARGS, network_change_retried
from helpers import chromium as _chromium
from helpers import settled as _settled_in
from helpers import shot as _shot
from helpers import sign_in as _sign_in_with

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "correct horse battery"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
WAIT_MS = 30_000

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def protected_url(
    settings: ConductorSettings,
    seeded: Any,
    start_dashboard: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    with_password = settings.model_copy(
        update={"dashboard": settings.dashboard.model_copy(update={"password": _secret()})}
    )
    with start_dashboard(with_password, tmp_path_factory.mktemp("dash")) as url:
        yield url


@pytest.fixture(scope="module")
def open_url(
    settings: ConductorSettings,
    seeded: Any,
    start_dashboard: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    with start_dashboard(settings, tmp_path_factory.mktemp("dash")) as url:
        yield url


def _secret() -> Any:
    from pydantic import SecretStr

    return SecretStr(PASSWORD)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.shots = OUTPUT / request.node.name  # type: ignore[attr-defined]
    pg.shots.mkdir(parents=True, exist_ok=True)
    for stale in ("failure.png", "console.txt"):
        (pg.shots / stale).unlink(missing_ok=True)
    console: list[str] = []
    pg.console_lines = console  # type: ignore[attr-defined]
    pg.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    pg.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    try:
        yield pg
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            _shot(pg, "failure")
            (pg.shots / "console.txt").write_text("\n".join(console), encoding="utf-8")
        context.close()


@network_change_retried()
def test_sign_in_refuses_a_wrong_password_then_shows_the_overview(
    page: Any, protected_url: str
) -> None:
    _sign_in(page, protected_url, "not the password")
    expect(page.get_by_text("Wrong password")).to_be_visible()
    expect(page.get_by_text("Agents online")).to_have_count(0)
    expect(page.get_by_role("link", name="Tasks")).to_have_count(0)
    _shot(page, "wrong-password")

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Agents online")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    expect(page.get_by_text("Wrong password")).to_have_count(0)
    _settled(page)
    assert _shot(page, "overview").stat().st_size > 10_000


@network_change_retried()
def test_a_deep_link_survives_signing_in(page: Any, protected_url: str, seeded: Any) -> None:
    page.goto(f"{protected_url}/tasks?task={seeded.ok_id}")
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    expect(page.get_by_text("Rename foo to bar")).to_have_count(0)  # nothing before sign-in
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Rename foo to bar")).to_be_visible()


@network_change_retried()
def test_task_detail_shows_the_diff(page: Any, protected_url: str, seeded: Any) -> None:
    _sign_in(page, f"{protected_url}/tasks?task={seeded.ok_id}")
    expect(page.get_by_role("heading", name="Rename foo to bar")).to_be_visible()
    expect(page.get_by_text("succeeded").first).to_be_visible()
    expect(page.get_by_role("tab", name="Diff (2 files)")).to_be_visible()
    expect(page.get_by_text("+def bar(x):").first).to_be_visible()
    expect(page.get_by_text("+print(bar(21))").first).to_be_visible()
    _settled(page)
    _shot(page, "task-detail")
    page.get_by_role("tab", name=re.compile(r"^Transcript")).click()
    expect(page.get_by_text("I'll rename foo to bar and add a test.")).to_be_visible()
    page.get_by_text("Edit src/app.py").click()
    expect(page.get_by_text("The file src/app.py has been updated.")).to_be_visible()
    _shot(page, "task-transcript")
    # Back to the list through the dashboard, and into the other task by selecting its row.
    page.get_by_role("button", name="All tasks").click()
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
    page.get_by_role("textbox", name="Search").fill(seeded.failed_id)
    page.keyboard.press("Enter")
    expect(page.get_by_text("1 of ")).to_be_visible()
    _settled(page)
    _shot(page, "tasks")
    # The table is a canvas: click the first row's selection box by position.
    box = page.get_by_test_id("stDataFrame").first.bounding_box()
    page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
    expect(page.get_by_role("heading", name="Review the error handling")).to_be_visible()
    assert f"task={seeded.failed_id}" in page.url


@network_change_retried()
def test_submit_form_shows_errors_next_to_fields_then_opens_the_task(
    page: Any, protected_url: str, tmp_path: Path
) -> None:
    _sign_in(page, f"{protected_url}/submit")
    expect(page.get_by_role("heading", name="Submit a task")).to_be_visible()
    priority = page.get_by_role("spinbutton", name="Priority")
    prompt = page.get_by_role("textbox", name="Prompt")
    priority.fill("0")
    page.get_by_role("button", name="Submit task").click()
    prompt_error = page.get_by_text("needs a prompt")
    expect(prompt_error).to_be_visible()
    expect(page.get_by_text("from 1 (lowest) to 10")).to_be_visible()
    expect(page.get_by_text("give a local repository path or a git URL")).to_be_visible()
    # "Next to the field": below the prompt box, above the next field.
    command = page.get_by_role("textbox", name="Command (kind: command only)")
    prompt_y = prompt.bounding_box()["y"]
    error_y = prompt_error.bounding_box()["y"]
    assert prompt_y < error_y < command.bounding_box()["y"]
    _settled(page)
    _shot(page, "submit-errors")

    page.get_by_role("textbox", name="Repository").fill(str(tmp_path))
    prompt.fill("Summarise the README in three lines")
    priority.fill("7")
    page.get_by_role("button", name="Submit task").click()
    expect(page.get_by_role("heading", name="Summarise the README in three lines")).to_be_visible()
    assert re.search(r"[?&]task=t-", page.url), page.url
    expect(page.get_by_text("queued").first).to_be_visible()
    _settled(page)
    _shot(page, "submitted-task")


@network_change_retried()
def test_cancel_a_running_task_from_its_page(page: Any, protected_url: str, seeded: Any) -> None:
    task_id = seeded.make_running("browser-cancel")
    _sign_in(page, f"{protected_url}/tasks?task={task_id}")
    expect(page.get_by_text("running").first).to_be_visible()
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.get_by_text(re.compile(r"Prefect state Cancell(ing|ed)"))).to_be_visible()
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    _settled(page)
    _shot(page, "cancelled")


@network_change_retried()
def test_a_running_task_page_follows_it_to_succeeded(
    page: Any, protected_url: str, seeded: Any
) -> None:
    task_id = seeded.make_running("browser-follow")
    _sign_in(page, f"{protected_url}/tasks?task={task_id}")
    expect(page.get_by_text("Prefect state Running")).to_be_visible()
    expect(page.get_by_role("tab", name="Logs", selected=True)).to_be_visible()
    _settled(page)
    _shot(page, "running")
    seeded.finish(task_id)  # as the worker would; the page is not reloaded
    expect(page.get_by_text("Prefect state Completed")).to_be_visible()
    expect(page.get_by_text("succeeded").first).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.get_by_text("All done.").first).to_be_visible()
    _settled(page)
    _shot(page, "succeeded")


@network_change_retried()
def test_without_a_password_it_opens_and_says_it_is_local_only(page: Any, open_url: str) -> None:
    page.goto(open_url)
    expect(page.get_by_text("Agents online")).to_be_visible()
    expect(page.get_by_text("listening on 127.0.0.1 only")).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_have_count(0)
    for name in ("Agents", "Settings"):
        page.get_by_role("link", name=name).click()
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        _settled(page)
        _shot(page, name.lower())
    expect(page.get_by_text("No dashboard password: the dashboard listens on")).to_be_visible()


def _settled(page: Any) -> None:
    _settled_in(page, WAIT_MS)


def _sign_in(page: Any, url: str, password: str = PASSWORD) -> None:
    _sign_in_with(page, url, password)
