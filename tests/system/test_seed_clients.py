"""The original README's two example clients, unchanged but for the URL, against a live gateway."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

CLIENTS = Path(__file__).parents[1] / "support" / "seed_clients"
SEED_URL = "https://chatgpt.example.com/api"


async def run_client(tmp_path, name: str, url: str, stdin: str) -> tuple[int, str, str]:
    source = (CLIENTS / name).read_text()
    assert SEED_URL in source
    script = tmp_path / name
    script.write_text(source.replace(SEED_URL, url))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("name", ["single_turn.py", "continuous.py"])
async def test_seed_client_prints_the_answer(client, fake, tmp_path, name):
    url = str(client.make_url("/api"))
    code, out, err = await run_client(tmp_path, name, url, "Be brief.\nHello there\nexit\n")
    assert (code, err) == (0, "")
    assert "ChatGPT> Hello, world!" in out
    sent = fake.received[0]
    assert sent.key == "Your API Key"
    assert sent.model == "gpt-3.5-turbo"
    assert sent.max_tokens == 3000
    assert sent.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]


async def test_continuous_client_keeps_talking(client, fake, tmp_path):
    url = str(client.make_url("/api"))
    code, out, _ = await run_client(tmp_path, "continuous.py", url, "S\none\ntwo\nquit\n")
    assert code == 0
    assert out.count("ChatGPT> Hello, world!") == 2
    assert out.rstrip().endswith("Program has exited")
    assert len(fake.received) == 2
