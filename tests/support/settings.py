"""The names of every setting the gateway reads, asked of load_settings itself."""

from __future__ import annotations

from gateway.config import load_settings


def settings_read() -> set[str]:
    """Every name load_settings asks an empty environment for."""
    asked: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, name, default=None):
            asked.add(name)
            return default

        def __contains__(self, name):
            asked.add(str(name))
            return False

    load_settings(Recording())
    return asked
