"""Shared helpers for unit tests: no host is contacted here."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
INVENTORIES = ("production", "staging", "local")


@pytest.fixture
def raw_registry():
    """A fresh, mutable copy of the real registry document."""
    return copy.deepcopy(yaml.safe_load((REPO / "group_data" / "projects.yml").read_text()))


def load_inventory(env: str):
    """The pyinfra Inventory of inventory/<env>.py with its group data, loaded offline.

    Secrets are placeholders (CODEB_RENDER_ONLY), which deploy.py refuses to apply.
    """
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    os.environ["CODEB_RENDER_ONLY"] = "1"
    try:
        with ctx_state.use(State()):
            return make_inventory(str(REPO / "inventory" / f"{env}.py"), cwd=str(REPO),
                                  group_data_directories=[str(REPO / "group_data")])
    finally:
        del os.environ["CODEB_RENDER_ONLY"]


def all_hosts():
    """(env, inventory, host) for every host of every inventory."""
    out = []
    for env in INVENTORIES:
        inv = load_inventory(env)
        for host in inv:
            out.append((env, inv, host))
    return out
