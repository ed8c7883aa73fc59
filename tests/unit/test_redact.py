"""Masking what looks like a key in upstream error text, and rebuilding OpenAI's error shape."""

from __future__ import annotations

import json

import pytest

from gateway.upstream.redact import mask, scrub_error


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "Incorrect API key provided: sk-abc123XYZ, sorry",
            "Incorrect API key provided: sk-****, sorry",
        ),
        ("key sk-proj-Ab_cd-EF0123 is gone", "key sk-**** is gone"),
        ("header was Bearer eyJhbGciOi.J9x", "header was Bearer ****"),
        ("api_key=hunter2hunter2 and token: 'abc'", "api_key=**** and token: '****'"),
        ("The model `nope` does not exist", "The model `nope` does not exist"),
        ("ask-me nothing; desk-top", "ask-me nothing; desk-top"),
    ],
)
def test_mask(text, masked):
    assert mask(text) == masked


def test_scrub_keeps_only_the_shape_and_masks_every_string():
    body = {
        "error": {
            "message": "bad key sk-secret0123",
            "type": "invalid_request_error",
            "param": "Bearer sk-x",
            "code": "invalid_api_key",
            "organization": "org-operator",
        },
        "request": {"headers": {"Authorization": "Bearer sk-secret0123"}},
    }
    assert scrub_error(json.dumps(body).encode()) == {
        "error": {
            "message": "bad key sk-****",
            "type": "invalid_request_error",
            "param": "Bearer ****",
            "code": "invalid_api_key",
        }
    }


@pytest.mark.parametrize(
    "body", [b"<html>502</html>", b"[]", b'{"error": "text"}', b'{"error": {"code": 1}}', b"\xff"]
)
def test_scrub_refuses_what_is_not_openais_shape(body):
    assert scrub_error(body) is None
