"""Write requirements.txt (runtime) and requirements-dev.txt (runtime + dev group) with uv.

Each lock starts with a digest of pyproject.toml's dependency lists, so tests/unit/test_lock.py
notices a dependency added to pyproject.toml without `make lock`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIGEST_PREFIX = "# pyproject.toml dependencies sha256: "
# The image and the CI run Linux with Python 3.11; hashes cover every wheel of each pinned release.
TARGET = ["--python-version", "3.11", "--python-platform", "linux"]


def digest(pyproject: Path) -> str:
    """sha256 of requires-python, the runtime dependencies and the dev group, as JSON."""
    data = tomllib.loads(pyproject.read_text())
    lists = {
        "requires-python": data["project"]["requires-python"],
        "dependencies": data["project"]["dependencies"],
        "dev": data["dependency-groups"]["dev"],
    }
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def compile_lock(output: Path, *extra: str) -> None:
    uv = Path(sys.executable).with_name("uv")
    command = [str(uv), "pip", "compile", "pyproject.toml", *extra, *TARGET]
    command += ["--generate-hashes", "--quiet", "--custom-compile-command", "make lock"]
    locked = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    output.write_text(DIGEST_PREFIX + digest(ROOT / "pyproject.toml") + "\n" + locked)


def main() -> None:
    runtime, dev = ROOT / "requirements.txt", ROOT / "requirements-dev.txt"
    compile_lock(runtime)
    # Constrained by the runtime lock, so both files pin the same runtime versions.
    compile_lock(dev, "--group", "dev", "--constraints", runtime.name)


if __name__ == "__main__":
    main()
