"""The shared-Redis fixture's rule: a Redis that is missing skips its tests, or fails them on CI."""

from __future__ import annotations

import pytest

from tests.support.redis_server import _shared_url, free_port


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_redis_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        next(_shared_url())
