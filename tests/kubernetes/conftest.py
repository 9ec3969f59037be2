"""The Kubernetes tier's fixtures (see k8s_fixtures.py)."""

from k8s_fixtures import kubectl, rendered

__all__ = ["kubectl", "rendered"]
