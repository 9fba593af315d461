"""The operator tools (tools/): argument handling that runs before any host is contacted."""

from __future__ import annotations

import pytest

from tools.restore import normalise_target


def test_restore_target_needs_a_zone():
    """A point-in-time target must carry a zone (Z becomes +00); a bare time, a word or
    anything with shell syntax is refused before a host is contacted."""
    assert normalise_target("2025-01-31 14:05:00+09") == "2025-01-31 14:05:00+09"
    assert normalise_target("2025-01-31T05:05:00.123Z") == "2025-01-31T05:05:00.123+00"
    for bad in ("2025-01-31 14:05:00", "yesterday", "2025-01-31; rm -rf /"):
        with pytest.raises(SystemExit):
            normalise_target(bad)
