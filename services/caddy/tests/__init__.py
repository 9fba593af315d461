"""The pinned Caddy (artifacts['caddy']) for tests that validate rendered configuration."""

from __future__ import annotations

import pytest


def pinned_caddy() -> str:
    """Path of the pinned Caddy in the artifact cache: the version the hosts run, with its
    plugins. Fails (naming the pin and `make artifacts`) when this control node has not built it:
    `make test-unit` builds every pin first."""
    from codeb.artifacts import ArtifactError
    from services.caddy import local_binary

    try:
        return str(local_binary())
    except (ArtifactError, KeyError) as exc:
        pytest.fail(f"the pinned caddy is not available: {exc}")
