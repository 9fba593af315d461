"""Centrifugo's derivations: the browser origins it accepts."""

import pytest

from codeb import registry
from services.centrifugo import model as centrifugo_model


@pytest.fixture(scope="module")
def reg():
    return registry.load()


def test_origins_are_exact_https_and_never_a_wildcard(reg):
    origins = centrifugo_model.origins(reg.instances)
    assert "https://workb.net" in origins and "https://www.workb.net" in origins
    assert all(o.startswith("https://") and "*" not in o for o in origins)
    assert origins == sorted(set(origins))


