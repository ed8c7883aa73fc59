"""Languages: every catalog complete, LANG mapped tolerantly, Accept-Language negotiated."""

from __future__ import annotations

import re

import pytest

from gateway.i18n import LANGUAGES, language_from_env, negotiate


def test_every_code_in_every_language_with_the_same_placeholders(translator):
    english = translator.codes("en")
    assert len(english) > 20
    for language in LANGUAGES:
        assert translator.codes(language) == english, language
        for code in english:
            en = translator.translate("en", code)
            other = translator.translate(language, code)
            assert set(re.findall(r"{(\w+)}", other)) == set(re.findall(r"{(\w+)}", en)), (
                language,
                code,
            )
            if language != "en" and not code.startswith("window_"):
                assert other != en, (language, code)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("en", "en"),
        ("en_US.UTF-8", "en"),
        ("en_GB", "en"),
        ("C", "en"),
        ("C.UTF-8", "en"),
        ("POSIX", "en"),
        ("zh", "zh_CN"),
        ("zh_CN", "zh_CN"),
        ("zh_CN.UTF-8", "zh_CN"),
        ("zh_SG", "zh_CN"),
        ("zh_Hans", "zh_CN"),
        ("zh_Hans_CN.UTF-8", "zh_CN"),
        ("zh_TW", "zh_TW"),
        ("zh_TW.UTF-8", "zh_TW"),
        ("zh_HK", "zh_TW"),
        ("zh_MO", "zh_TW"),
        ("zh_Hant", "zh_TW"),
        ("zh_Hant_TW.Big5", "zh_TW"),
        ("ru", "ru_RU"),
        ("ru_RU", "ru_RU"),
        ("ru_RU.UTF-8", "ru_RU"),
        ("ru_UA.KOI8-U", "ru_RU"),
    ],
)
def test_lang_mapping(lang, expected):
    assert language_from_env(lang) == (expected, None)


@pytest.mark.parametrize("lang", ["de_DE.UTF-8", "fr", "klingon"])
def test_unknown_lang_is_english_and_reported(lang):
    assert language_from_env(lang) == ("en", lang)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "ru_RU"),
        ("", "ru_RU"),
        ("zh-CN", "zh_CN"),
        ("zh-TW,zh;q=0.9", "zh_TW"),
        ("zh-Hant-HK", "zh_TW"),
        ("zh-Hans-HK", "zh_CN"),
        ("de-DE,en;q=0.5", "en"),
        ("de-DE", "ru_RU"),
        ("en;q=0.3, zh-CN;q=0.8, ru;q=0.5", "zh_CN"),
        ("zh-CN;q=0, en", "en"),
        ("*", "ru_RU"),
        ("en;q=0.5,ru;q=0.5", "en"),
        ("garbage;;;q=x", "ru_RU"),
    ],
)
def test_accept_language_negotiation(header, expected):
    assert negotiate(header, "ru_RU") == expected
