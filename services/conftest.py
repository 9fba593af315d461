"""Unit tests of the services (services/<service>/tests) share the offline helpers of tests/unit."""

from tests.unit.conftest import raw_registry  # noqa: F401  (a fixture)
