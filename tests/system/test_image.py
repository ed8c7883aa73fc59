"""The image without a Docker engine: the Dockerfile's own build, install, CMD and HEALTHCHECK
commands, run against a copy of what it copies, in a fresh venv outside the repository.

The one step not run as written is `pip install -r requirements.txt` (minutes, from the network):
the fresh venv sees this venv's site-packages through a .pth file instead, after its own, so the
gateway itself is imported from the wheel alone.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

from gateway.i18n import language_from_env
from tests.support.processes import ROOT, Process, free_port, run, wait_until_serving

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, from its FROM on; global ARGs come first, alone."""
    result: list[list[tuple[str, str]]] = [[]]
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, arguments))
    return result


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    (value,) = [arguments for kw, arguments in stage if kw == keyword]
    return value


def exec_form(arguments: str) -> list[str]:
    if arguments.startswith("CMD "):
        arguments = arguments[4:]
    return list(json.loads(arguments))


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_final_stage_is_small_unprivileged_and_self_describing():
    head, builder, final = stages()
    base = only(head, "ARG")
    assert re.fullmatch(r"PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert only(builder, "FROM") == "${PYTHON_IMAGE} AS builder"
    assert only(final, "FROM") == "${PYTHON_IMAGE}"
    assert only(final, "USER").split(":")[0] not in ("root", "0")
    assert exec_form(only(final, "CMD")) == ["python", "-m", "gateway"]
    healthcheck = only(final, "HEALTHCHECK")
    assert exec_form(healthcheck[healthcheck.index("CMD ") :]) == ["python", "-m", "gateway.probe"]
    copies = [arguments for keyword, arguments in final if keyword == "COPY"]
    assert copies == ["--from=builder /venv /venv"], "only the built venv reaches the final stage"
    runs = " ".join(arguments for keyword, arguments in final if keyword == "RUN")
    assert "pip" not in runs and "apt-get" not in runs


def test_image_language_is_english_unless_lang_is_set():
    final = stages()[-1]
    assert language_from_env(env_of(final).get("LANG")) == ("en", None)


def test_dependencies_are_installed_before_the_source_is_copied():
    builder = stages()[1]
    steps = [f"{keyword} {arguments}" for keyword, arguments in builder]
    deps = next(i for i, s in enumerate(steps) if "install -r requirements.txt" in s)
    source = next(i for i, s in enumerate(steps) if s.startswith("COPY gateway"))
    assert deps < source
    assert [s for s in steps[:deps] if s.startswith("COPY")] == ["COPY requirements.txt ./"]
    assert "--require-hashes" in steps[deps]


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_build_copies_and_drops_secrets():
    for kept in (
        "pyproject.toml",
        "requirements.txt",
        "README.md",
        "gateway/app.py",
        "gateway/translations/en.po",
    ):
        assert not dockerignore_excludes(kept), kept
    for dropped in (".env", ".venv/bin/python", ".git/HEAD", "tests/conftest.py"):
        assert dockerignore_excludes(dropped), dropped
    assert dockerignore_excludes("gateway/__pycache__/app.cpython-311.pyc")


def copy_build_context(builder: list[tuple[str, str]], src: Path) -> None:
    """What the builder's COPY lines copy, links kept as links (as Docker does)."""
    for keyword, arguments in builder:
        if keyword != "COPY":
            continue
        *sources, _ = arguments.split()
        for name in sources:
            origin = ROOT / name
            if origin.is_dir() and not origin.is_symlink():
                shutil.copytree(
                    origin,
                    src / name,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                shutil.copy2(origin, src / name, follow_symlinks=False)


def builder_commands(builder: list[tuple[str, str]], venv: Path, wheels: Path) -> list[str]:
    """The builder's RUN commands, split at &&, with its paths moved under the test's directory."""
    commands = []
    for keyword, arguments in builder:
        if keyword == "RUN":
            commands += [c.strip() for c in arguments.split("&&")]
    moved = []
    for command in commands:
        command = command.replace("/venv/", f"{venv}/").replace("/venv ", f"{venv} ")
        command = command.replace("/wheels", str(wheels))
        if command.endswith("/venv"):
            command = command[: -len("/venv")] + str(venv)
        assert command.startswith("python "), command
        moved.append(shlex.quote(sys.executable) + command[len("python") :])
    return moved


@pytest.mark.e2e
async def test_wheel_from_the_dockerfile_carries_its_data_and_serves(tmp_path):
    _, builder, final = stages()
    src, venv, wheels, workdir = (tmp_path / d for d in ("src", "venv", "wheels", "app"))
    for folder in (src, workdir):
        folder.mkdir()
    copy_build_context(builder, src)
    for command in builder_commands(builder, venv, wheels):
        if "install -r requirements.txt" in command:
            continue
        done = await run(command, shell=True, cwd=src, timeout=120)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    # Only now, so that pip installed the wheel into a venv where no gateway was to be seen.
    fresh_site = next(venv.glob("lib/python*/site-packages"))
    (fresh_site / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # tests/unit/test_lock.py checks that requirements.txt, installed above, agrees with pyproject.
    assert (src / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()

    (wheel,) = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "gateway"
    catalogs = {p.relative_to(ROOT).as_posix() for p in package.glob("translations/*.po")}
    scripts = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.lua")}
    modules = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")}
    assert len(catalogs) == 4 and len(scripts) == 3, (catalogs, scripts)  # take_back.lua too
    assert catalogs | scripts | modules | {"gateway/py.typed"} <= names
    assert not {n for n in names if n.startswith("tests/")}

    python = venv / "bin" / "python"
    located = await run([python, "-c", "import gateway; print(gateway.__file__)"], cwd=workdir)
    assert Path(located.stdout.strip()).is_relative_to(venv)

    port = free_port()
    env = {
        **env_of(final),
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    healthcheck = only(final, "HEALTHCHECK")
    probe = exec_form(healthcheck[healthcheck.index("CMD ") :])
    proc = Process(
        exec_form(only(final, "CMD")), log=tmp_path / "gateway.log", env=env, cwd=workdir
    )
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
        assert (await run(probe, env=env, cwd=workdir, timeout=30)).returncode == 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/nowhere") as response:
                english = (await response.json())["data"]["response"]
            headers = {"Accept-Language": "ru"}
            async with session.get(f"http://127.0.0.1:{port}/nowhere", headers=headers) as response:
                russian = (await response.json())["data"]["response"]
        assert response.status == 404
        assert english != "not_found" and english.isascii()
        assert re.search("[а-яА-Я]", russian)
        proc.signal(signal.SIGTERM)
        assert await proc.wait(20) == 0
        assert (await run(probe, env=env, cwd=workdir, timeout=30)).returncode != 0
    finally:
        proc.close()
