"""Gateway access keys: who may spend the operator's key, kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from gateway.limits.backend import Subject
from gateway.quota import LARGEST, Limit, request_limits, token_budgets

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Printable ASCII without spaces, commas or colons: it travels in a header and in a list.
_KEY = re.compile(r"[\x21-\x2b\x2d-\x39\x3b-\x7e]{16,512}")
_HASHED = re.compile(r"sha256:([0-9a-f]{64})")
# A key's own limits, named as the settings that set the address's, in lower case.
LIMIT_OPTIONS = (
    "second_limit",
    "minute_limit",
    "hour_limit",
    "day_limit",
    "tokens_per_minute",
    "tokens_per_day",
)


def digest(key: str) -> bytes:
    # Distinct strings, distinct bytes: a presented key may hold anything a header can.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class GatewayKey:
    """A key's name (what logs and metrics show), the SHA-256 digest of the key itself, and the
    limits and token budgets of its own, counted for every call that presents it."""

    name: str
    digest: bytes
    limits: tuple[Limit, ...] = ()
    budgets: tuple[Limit, ...] = ()

    @cached_property
    def subject(self) -> Subject | None:
        """What the limiter holds its calls to, if it has limits of its own. Its bucket looks
        like no client address."""
        if not self.limits and not self.budgets:
            return None
        return Subject(f"key:{self.name}", self.limits, self.budgets)


@dataclass(frozen=True)
class Keyring:
    keys: tuple[GatewayKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def find(self, presented: str) -> GatewayKey | None:
        """The key presented, or None.

        Every stored digest is compared with hmac.compare_digest and the loop never stops early,
        so the time taken says nothing about which key, or how much of one, matched.
        """
        wanted = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, wanted):
                found = key
        return found


def _options(words: list[str]) -> dict[str, int]:
    options: dict[str, int] = {}
    for word in words:
        option, equals, value = word.partition("=")
        if not equals or option not in LIMIT_OPTIONS:
            raise ValueError(
                f"after the key, only limits are allowed: {', '.join(LIMIT_OPTIONS)} "
                "(as option=number)"
            )
        if option in options:
            raise ValueError(f"{option} is given twice")
        options[option] = _quantity(option, value)
    return options


def _quantity(option: str, value: str) -> int:
    digits = value.lstrip("0") or "0"
    # Its length first: int() of thousands of digits raises an error of its own.
    if value.isascii() and value.isdigit() and len(digits) <= len(str(LARGEST)):
        quantity = int(digits)
        if quantity <= LARGEST:
            return quantity
    raise ValueError(f"{option} must be a whole number from 0 to {LARGEST}")


def parse_entry(entry: str) -> GatewayKey:
    """`key`, `name:key` or `name:sha256:<hex digest>`, then optionally the key's own limits as
    `minute_limit=60 tokens_per_day=100000`; errors never repeat the key."""
    spec, *words = entry.split()
    key = _parse_key(spec)
    options = _options(words)
    get = options.get
    limits = request_limits(
        get("second_limit", 0),
        get("minute_limit", 0),
        get("hour_limit", 0),
        get("day_limit", 0),
        scope="key",
    )
    budgets = token_budgets(get("tokens_per_minute", 0), get("tokens_per_day", 0), scope="key")
    return GatewayKey(key.name, key.digest, limits, budgets)


def _parse_key(entry: str) -> GatewayKey:
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
