"""The Kubernetes tier's fixtures (see k8s_fixtures.py)."""

from k8s_fixtures import kubectl, prefect_api_url, rendered

__all__ = ["kubectl", "prefect_api_url", "rendered"]
