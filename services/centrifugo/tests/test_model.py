"""Centrifugo's derivations: the browser origins it accepts."""

import pytest

from codeb import registry
from services.centrifugo import model as centrifugo_model


@pytest.fixture(scope="module")
def reg():
    return registry.load()


def inst(reg, name):
    return next(i for i in reg.instances if i.name == name)


def test_origins_are_exact_https_and_never_a_wildcard(reg):
    origins = centrifugo_model.origins(reg.instances)
    assert "https://workb.net" in origins and "https://www.workb.net" in origins
    assert all(o.startswith("https://") and "*" not in o for o in origins)
    assert origins == sorted(set(origins))


GROUPS = {"app": ["10.0.0.11", "10.0.0.21"], "streaming": ["10.0.0.12"], "storage": ["10.0.0.13"],
          "backup": ["10.0.0.14"]}


SERVICES = {
    "ssh": {"port": 22, "on": "all", "from": ["@admin"]},
    "node-exporter": {"port": 9100, "on": "all", "from": ["backup"]},
    "postgresql": {"port": 5432, "on": "storage", "from": ["app", "backup"]},
    "dns": {"port": 53, "on": "storage", "from": ["@any"], "proto": "both"},
}


PEERS = [{"name": "n1", "private_ip": "10.78.0.11", "public_ip": "198.51.100.11"},
         {"name": "n2", "private_ip": "10.78.0.12", "public_ip": "198.51.100.12"},
         {"name": "n3", "private_ip": "10.78.0.13", "public_ip": "198.51.100.13"}]
