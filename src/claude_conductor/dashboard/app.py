"""The Conductor dashboard: ``streamlit run app.py`` (or ``conductor dashboard``).

The router: signs the user in when a dashboard password is configured (nothing else is
rendered until then), then lets ``st.navigation`` run one page from ``views/``.

The page scripts live in ``views/``, not ``pages/``: Streamlit treats a ``pages/`` folder next
to the entry script as an old-style multipage app, listing every file in the sidebar and
running the first session without the router (and so without the sign-in gate).
"""

from __future__ import annotations

import hashlib
import hmac
import time

import streamlit as st

from claude_conductor.dashboard import components
from claude_conductor.settings import ConductorSettings

_SIGNED_IN = "conductor_signed_in"
_WRONG_PASSWORD_DELAY_SECONDS = 0.5


def _fingerprint(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def _signed_in(settings: ConductorSettings) -> bool:
    secret = settings.dashboard.password
    if secret is None:
        return True
    # Sessions stay valid only for the password they signed in with.
    return st.session_state.get(_SIGNED_IN) == _fingerprint(secret.get_secret_value())


def _sign_in_page() -> None:
    settings = components.settings()
    secret = settings.dashboard.password
    assert secret is not None
    _, middle, _ = st.columns([1, 1.2, 1])
    with middle:
        st.title(":material/lock: Claude Conductor")
        st.write("This dashboard is protected. Sign in with the dashboard password.")
        with st.form("sign_in"):
            entered = st.text_input("Password", type="password", key="sign_in_password")
            submitted = st.form_submit_button("Sign in", type="primary")
        if submitted:
            expected = secret.get_secret_value().encode("utf-8")
            if entered and hmac.compare_digest(entered.encode("utf-8"), expected):
                st.session_state[_SIGNED_IN] = _fingerprint(secret.get_secret_value())
                st.rerun()
            time.sleep(_WRONG_PASSWORD_DELAY_SECONDS)
            st.error("Wrong password. Nothing is shown until you sign in.", icon=":material/block:")


def _sign_out() -> None:
    st.session_state.pop(_SIGNED_IN, None)


def _sidebar(settings: ConductorSettings) -> None:
    with st.sidebar:
        api_url = settings.public_dict()["server"]["api_url"] or settings.server.url
        st.caption(f"Prefect API: `{api_url}` · tier: {settings.tier}")
        if settings.dashboard.password is None:
            address = st.get_option("server.address") or "127.0.0.1"
            st.caption(
                f":material/lock_open: No dashboard password: listening on {address} only. "
                "Set CONDUCTOR_DASHBOARD_PASSWORD to serve other hosts."
            )
        else:
            st.button("Sign out", icon=":material/logout:", on_click=_sign_out)


def main() -> None:
    st.set_page_config(page_title="Claude Conductor", page_icon=":material/hub:", layout="wide")
    settings = components.settings()
    pages = [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/tasks.py", title="Tasks", icon=":material/list_alt:"),
        st.Page("views/submit.py", title="Submit", icon=":material/add_task:"),
        st.Page("views/agents.py", title="Agents", icon=":material/smart_toy:"),
        st.Page("views/schedules.py", title="Schedules", icon=":material/event_repeat:"),
        st.Page("views/settings.py", title="Settings", icon=":material/settings:"),
    ]
    if not _signed_in(settings):
        # Register the pages (so the address asked for, e.g. a task's page, survives signing
        # in) but hide the menu and run none of them: only the sign-in form is drawn.
        st.navigation(pages, position="hidden")
        _sign_in_page()
        return
    nav = st.navigation(pages)
    st.logo(_LOGO_SVG, size="large")
    _sidebar(settings)
    nav.run()


_LOGO_SVG = (
    "data:image/svg+xml;utf8,"
    "<svg xmlns='http://www.w3.org/2000/svg' width='200' height='32'>"
    "<text x='0' y='23' font-family='sans-serif' font-size='20' font-weight='600' "
    "fill='%23333'>Claude Conductor</text></svg>"
)

main()
