"""Gateway access keys: who may spend the operator's key, kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Printable ASCII without spaces, commas or colons: it travels in a header and in a list.
_KEY = re.compile(r"[\x21-\x2b\x2d-\x39\x3b-\x7e]{16,512}")
_HASHED = re.compile(r"sha256:([0-9a-f]{64})")


def digest(key: str) -> bytes:
    # Distinct strings, distinct bytes: a presented key may hold anything a header can.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class GatewayKey:
    """A key's name (what logs and metrics show) and the SHA-256 digest of the key itself."""

    name: str
    digest: bytes


@dataclass(frozen=True)
class Keyring:
    keys: tuple[GatewayKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def find(self, presented: str) -> str | None:
        """The name of the key presented, or None.

        Every stored digest is compared with hmac.compare_digest and the loop never stops early,
        so the time taken says nothing about which key, or how much of one, matched.
        """
        wanted = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, wanted):
                found = key.name
        return found


def parse_entry(entry: str) -> GatewayKey:
    """`key`, `name:key` or `name:sha256:<hex digest>`; errors never repeat the key."""
    name, colon, secret = entry.partition(":")
    if not colon:
        name, secret = "", entry
    elif not _NAME.fullmatch(name):
        raise ValueError("a key's name is 1 to 64 letters, digits, '.', '_' or '-'")
    hashed = _HASHED.fullmatch(secret)
    if hashed and name:
        return GatewayKey(name, bytes.fromhex(hashed.group(1)))
    if not _KEY.fullmatch(secret):
        raise ValueError(
            "a key is 16 to 512 printable ASCII characters without spaces, commas or colons"
        )
    key_digest = digest(secret)
    return GatewayKey(name or "key-" + key_digest.hex()[:8], key_digest)


def _parse(entries: list[tuple[str, str]]) -> list[GatewayKey]:
    keys: list[GatewayKey] = []
    for where, entry in entries:
        try:
            key = parse_entry(entry)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if any(k.name == key.name for k in keys):
            raise ValueError(f"{where}: the name {key.name!r} is taken by another key")
        if any(k.digest == key.digest for k in keys):
            raise ValueError(f"{where}: the same key is listed twice")
        keys.append(key)
    return keys


def load_keyring(listed: str | None, file: str | None) -> Keyring:
    """GATEWAY_KEYS (comma-separated) and GATEWAY_KEYS_FILE (one a line, `#` comments) together.

    A ValueError names the setting and the entry's place, never the entry itself.
    """
    entries = [
        (f"GATEWAY_KEYS entry {n}", item.strip())
        for n, item in enumerate((listed or "").split(","), 1)
        if item.strip()
    ]
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"GATEWAY_KEYS_FILE={file!r} cannot be read ({exc})") from None
        for n, line in enumerate(lines, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                entries.append((f"GATEWAY_KEYS_FILE={file!r} line {n}", text))
    return Keyring(tuple(_parse(entries)))
