"""Gateway keys as configured: entries, names, digests, and errors that never repeat a key."""

from __future__ import annotations

import hashlib

import pytest

from gateway.config import ConfigError, load_settings
from gateway.keyring import Keyring, load_keyring, parse_entry

KEY = "gw-0123456789abcdef-key"


def test_a_named_key_is_kept_as_its_digest_only():
    key = parse_entry(f"alice:{KEY}")
    assert key.name == "alice"
    assert key.digest == hashlib.sha256(KEY.encode()).digest()
    assert KEY not in repr(key) and KEY not in repr(Keyring((key,)))


def test_an_unnamed_key_is_named_by_its_digest_prefix():
    key = parse_entry(KEY)
    assert key.name == "key-" + hashlib.sha256(KEY.encode()).hexdigest()[:8]


def test_a_hashed_entry_needs_no_key_in_the_file():
    hexdigest = hashlib.sha256(KEY.encode()).hexdigest()
    ring = load_keyring(f"bob:sha256:{hexdigest}", None)
    assert ring.find(KEY).name == "bob"
    assert ring.find(KEY + "x") is None


def test_find_names_the_key_and_nothing_for_others():
    ring = load_keyring(f"alice:{KEY}, bob:{KEY[::-1]}", None)
    assert ring.find(KEY).name == "alice"
    assert ring.find(KEY[::-1]).name == "bob"
    assert ring.find("") is None and ring.find(KEY[:-1]) is None
    assert not load_keyring(None, None) and not load_keyring(" , ", None)


def test_the_file_takes_comments_blank_lines_and_both_forms(tmp_path):
    file = tmp_path / "keys"
    file.write_text(f"# team keys\n\ncarol:{KEY}\n  {KEY[::-1]}  \n")
    ring = load_settings({"GATEWAY_KEYS": f"dave:{KEY}x", "GATEWAY_KEYS_FILE": str(file)})
    assert [k.name for k in ring.gateway_keys.keys][:2] == ["dave", "carol"]
    assert ring.gateway_keys.find(KEY[::-1]) is not None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GATEWAY_KEYS": "short-secret"},
            "GATEWAY_KEYS entry 1: a key is 16 to 512 printable ASCII characters without spaces, "
            "commas or colons",
        ),
        (
            {"GATEWAY_KEYS": f"{KEY}, bad!name:{KEY}x"},
            "GATEWAY_KEYS entry 2: a key's name is 1 to 64 letters, digits, '.', '_' or '-'",
        ),
        (
            {"GATEWAY_KEYS": f"a:{KEY},a:{KEY}x"},
            "GATEWAY_KEYS entry 2: the name 'a' is taken by another key",
        ),
        (
            {"GATEWAY_KEYS": f"a:{KEY},b:{KEY}"},
            "GATEWAY_KEYS entry 2: the same key is listed twice",
        ),
    ],
)
def test_bad_keys_stop_start_up_without_showing_the_key(env, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == message
    assert KEY not in str(caught.value) and "short-secret" not in str(caught.value)


def test_a_missing_key_file_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"GATEWAY_KEYS_FILE='.*nope' cannot be read"):
        load_settings({"GATEWAY_KEYS_FILE": str(missing)})


def test_a_bad_line_in_the_file_is_named_by_its_number(tmp_path):
    file = tmp_path / "keys"
    file.write_text(f"a:{KEY}\n\nb:tiny\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_KEYS_FILE": str(file)})
    assert f"GATEWAY_KEYS_FILE={str(file)!r} line 3: a key is 16" in str(caught.value)
    assert "tiny" not in str(caught.value)


def test_a_non_ascii_lookalike_is_not_the_key():
    ring = load_keyring(f"q:{KEY}?", None)
    assert ring.find(f"{KEY}?").name == "q"
    assert ring.find(f"{KEY}é") is None and ring.find(f"{KEY}\udcff") is None


def test_key_limits_take_tabs_trailing_spaces_leading_zeros_and_zero_for_none(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{KEY}\tminute_limit=007 \t tokens_per_day=0   \r\n")
    (alice,) = load_keyring(None, str(keys)).keys
    assert [(w.name, w.quantity, w.scope) for w in alice.limits] == [("minute", 7, "key")]
    assert alice.budgets == ()
    assert parse_entry(f"bob:{KEY} day_limit=0").subject is None


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("minute_limit=", "minute_limit must be a whole number from 0 to 1000000000000000"),
        ("minute_limit=+3", "minute_limit must be a whole number from 0 to 1000000000000000"),
        ("minute_limit=٣", "minute_limit must be a whole number from 0 to 1000000000000000"),
        ("minute_limit=" + "9" * 5000, "minute_limit must be a whole number from 0 to 10"),
        ("MINUTE_LIMIT=3", "after the key, only limits are allowed"),
        ("minute_limit=3 minute_limit=3", "minute_limit is given twice"),
        (f"minute_limit={KEY}", "minute_limit must be a whole number"),
        (KEY, "after the key, only limits are allowed"),
    ],
)
def test_bad_key_limits_never_repeat_the_key_or_the_value(words, message):
    with pytest.raises(ValueError) as caught:
        load_keyring(f"alice:{KEY} {words}", None)
    assert message in str(caught.value)
    assert KEY not in str(caught.value) and "9999" not in str(caught.value)
