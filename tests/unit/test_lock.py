"""The lock files against pyproject.toml: every dependency pinned, in range, and locked since."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.processes import ROOT

RUNTIME, DEV = ROOT / "requirements.txt", ROOT / "requirements-dev.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
# What the locks are resolved for (scripts/lock.py): the image's and CI's Linux, Python 3.11.
TARGET = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(lock: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lock.splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            assert name not in found, f"{name} pinned twice"
            found[name] = match.group(2)
    return found


def wanted(requirements: list[str]) -> list[Requirement]:
    parsed = [Requirement(r) for r in requirements]
    return [r for r in parsed if r.marker is None or r.marker.evaluate(TARGET)]


def test_every_runtime_dependency_is_pinned_in_range_in_both_locks():
    runtime, dev = pins(RUNTIME.read_text()), pins(DEV.read_text())
    for requirement in wanted(pyproject()["project"]["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in runtime, f"{requirement} is not in {RUNTIME.name}"
        assert requirement.specifier.contains(runtime[name], prereleases=True), (
            f"{RUNTIME.name} pins {name}=={runtime[name]}, outside {requirement}"
        )
    # `make install` installs the dev lock alone, so it must run what the image runs.
    assert {name: dev[name] for name in runtime if name in dev} == runtime


def test_every_dev_dependency_is_pinned_in_range_in_the_dev_lock():
    dev = pins(DEV.read_text())
    for requirement in wanted(pyproject()["dependency-groups"]["dev"]):
        name = canonicalize_name(requirement.name)
        assert name in dev, f"{requirement} is not in {DEV.name}"
        assert requirement.specifier.contains(dev[name], prereleases=True), (
            f"{DEV.name} pins {name}=={dev[name]}, outside {requirement}"
        )


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=lambda path: path.name)
def test_each_pin_is_exact_and_hashed(lock):
    text = lock.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    pinned = [entry for entry in entries if PIN.match(entry)]
    assert pinned
    for entry in pinned:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=lambda path: path.name)
def test_lock_was_made_from_the_current_dependency_lists(lock):
    """Adding, removing or changing a dependency without `make lock` fails here."""
    data = pyproject()
    lists = {
        "requires-python": data["project"]["requires-python"],
        "dependencies": data["project"]["dependencies"],
        "dev": data["dependency-groups"]["dev"],
    }
    expected = hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()
    first = lock.read_text().splitlines()[0]
    assert first == f"# pyproject.toml dependencies sha256: {expected}", (
        f"{lock.name} is older than pyproject.toml's dependencies: run `make lock`"
    )
