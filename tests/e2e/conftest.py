"""The e2e tests use the same running services as the integration tests."""

from tests.integration.conftest import services  # noqa: F401 - a fixture, re-exported

__all__ = ["services"]
