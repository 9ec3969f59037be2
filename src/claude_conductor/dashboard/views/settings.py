"""Settings: the effective configuration (secrets masked) and an export without secrets."""

from __future__ import annotations

import streamlit as st
import yaml

from claude_conductor.dashboard import components, forms
from claude_conductor.settings import config_path

settings = components.settings()

st.title("Settings")
st.caption(
    f"Effective settings: `CONDUCTOR_*` environment variables, then `{config_path()}`, then "
    "defaults. Secrets are masked and never leave this server."
)

public = settings.public_dict()
left, right = st.columns([3, 2])
with left:
    st.subheader("Effective configuration", divider="gray")
    st.code(yaml.safe_dump(public, sort_keys=False), language="yaml")
with right:
    st.subheader("Security", divider="gray")
    if settings.dashboard.password is None:
        st.warning(
            "No dashboard password: the dashboard listens on 127.0.0.1 only. Set "
            "`CONDUCTOR_DASHBOARD_PASSWORD` to require signing in (and to serve other hosts).",
            icon=":material/lock_open:",
        )
    else:
        st.success(
            "A dashboard password is set: every page needs signing in.", icon=":material/lock:"
        )
    auth = "set (masked)" if settings.server.auth_string is not None else "not set"
    st.markdown(
        f"Prefect API `{public['server']['api_url'] or settings.server.url}` · basic auth {auth}"
    )
    st.subheader("Export", divider="gray")
    st.caption(
        "A portable config without secrets or the home folder; load it elsewhere with "
        "`conductor config import FILE`."
    )
    exported = forms.export_settings_yaml(settings)
    st.download_button(
        "Export settings (YAML)",
        exported,
        file_name="conductor-config.yaml",
        mime="application/x-yaml",
        icon=":material/download:",
        type="primary",
    )
    with st.expander("Preview the export"):
        st.code(exported, language="yaml")
