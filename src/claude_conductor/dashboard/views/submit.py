"""Submit: a task form (or a task YAML) checked by the same model as task files."""

from __future__ import annotations

from typing import Any

import streamlit as st

from claude_conductor.dashboard import components, data, forms
from claude_conductor.errors import ConductorError
from claude_conductor.models import TASK_KINDS, TaskSpec

settings = components.settings()

st.title("Submit a task")
_FIELD_HELP = {name: info.description for name, info in TaskSpec.model_fields.items()}


def _send(spec: TaskSpec) -> None:
    try:
        submitted = data.submit(settings, spec)
    except ConductorError as exc:
        st.error(f"Not submitted: {exc}", icon=":material/error:")
        return
    components.open_task(submitted.task_id)


def _show_errors(check: forms.FormCheck, slots: dict[str, Any]) -> None:
    for name, message in check.errors.items():
        target = slots.get(name, slots["_top"])
        target.error(message, icon=":material/error:")
    for name, message in check.warnings.items():
        slots.get(name, slots["_top"]).warning(message, icon=":material/warning:")


def _form() -> None:
    slots: dict[str, Any] = {}
    with st.form("task_form", border=True):
        slots["_top"] = st.container()
        c1, c2 = st.columns([2, 1])
        kind = c1.selectbox(
            "Kind",
            TASK_KINDS,
            index=TASK_KINDS.index("generic"),
            help=_FIELD_HELP["kind"],
            key="form_kind",
        )
        slots["kind"] = c1.container()
        priority = c2.number_input(
            "Priority", value=5, step=1, help=_FIELD_HELP["priority"], key="form_priority"
        )
        slots["priority"] = c2.container()
        title = st.text_input("Title", help=_FIELD_HELP["title"], key="form_title")
        slots["title"] = st.container()
        c1, c2 = st.columns([3, 1])
        repo = c1.text_input(
            "Repository",
            placeholder="/path/to/repo or https://host/org/repo.git",
            help=_FIELD_HELP["repo"],
            key="form_repo",
        )
        slots["repo"] = c1.container()
        ref = c2.text_input("Ref", placeholder="HEAD", help=_FIELD_HELP["ref"], key="form_ref")
        slots["ref"] = c2.container()
        prompt = st.text_area(
            "Prompt",
            height=160,
            help=_FIELD_HELP["prompt"],
            placeholder="What should the agent do?",
            key="form_prompt",
        )
        slots["prompt"] = st.container()
        command = st.text_input(
            "Command (kind: command only)", help=_FIELD_HELP["command"], key="form_command"
        )
        slots["command"] = st.container()
        c1, c2, c3 = st.columns(3)
        timeout = c1.number_input(
            "Timeout (seconds)",
            value=900.0,
            step=60.0,
            help=_FIELD_HELP["timeout_seconds"],
            key="form_timeout",
        )
        slots["timeout_seconds"] = c1.container()
        turns = c2.number_input(
            "Max turns", value=30, step=1, help=_FIELD_HELP["max_turns"], key="form_turns"
        )
        slots["max_turns"] = c2.container()
        budget = c3.number_input(
            "Max budget (USD)",
            value=2.0,
            step=0.5,
            format="%.2f",
            help=_FIELD_HELP["max_budget_usd"],
            key="form_budget",
        )
        slots["max_budget_usd"] = c3.container()
        c1, c2 = st.columns([3, 1])
        verify = c1.text_input(
            "Verify command", placeholder="pytest -q", help=_FIELD_HELP["verify"], key="form_verify"
        )
        slots["verify"] = c1.container()
        model = c2.text_input(
            "Model", placeholder="default", help=_FIELD_HELP["model"], key="form_model"
        )
        slots["model"] = c2.container()
        submitted = st.form_submit_button("Submit task", type="primary", icon=":material/send:")
    if not submitted:
        return
    check = forms.check_form(
        {
            "kind": kind,
            "title": title,
            "repo": repo,
            "ref": ref,
            "prompt": prompt,
            "command": command,
            "priority": priority,
            "timeout_seconds": timeout,
            "max_turns": turns,
            "max_budget_usd": budget,
            "verify": verify,
            "model": model,
        }
    )
    _show_errors(check, slots)
    if check.ok and check.spec is not None:
        _send(check.spec)


def _yaml() -> None:
    st.caption("Upload or paste a task file, as for `conductor run task.yaml`.")
    upload = st.file_uploader("Task YAML file", type=["yaml", "yml"], key="yaml_upload")
    text = st.text_area(
        "…or paste it here",
        height=220,
        key="yaml_text",
        placeholder="kind: refactor\nrepo: /path/to/repo\nprompt: |\n  Rename foo to bar.",
    )
    if st.button("Submit YAML", type="primary", icon=":material/send:", key="yaml_submit"):
        source = upload.name if upload is not None else "the pasted YAML"
        body = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else text
        check = forms.check_yaml(body, source)
        if check.errors:
            st.error("The task is not valid:", icon=":material/error:")
            for name, message in check.errors.items():
                st.markdown(f"- **{name}**: {message}")
        for name, message in check.warnings.items():
            st.warning(f"{name}: {message}", icon=":material/warning:")
        if check.ok and check.spec is not None:
            _send(check.spec)


form_tab, yaml_tab = st.tabs(["Form", "Task YAML"])
with form_tab:
    _form()
with yaml_tab:
    _yaml()
