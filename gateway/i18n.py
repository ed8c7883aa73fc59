"""Message catalogs in four languages, and the choice of language for a request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files

from babel.messages.pofile import read_po

LANGUAGES = ("en", "zh_CN", "zh_TW", "ru_RU")
DEFAULT_LANGUAGE = "en"

_TRADITIONAL_REGIONS = ("tw", "hk", "mo")
_QVALUE = re.compile(r"^q=([01](?:\.\d{0,3})?)$")


def map_language(tag: str | None) -> str | None:
    """Map a POSIX locale (zh_CN.UTF-8) or a BCP 47 tag (zh-Hant-TW) to one of LANGUAGES.

    None means the tag names no language we have.
    """
    if tag is None:
        return None
    base = tag.split(".", 1)[0].split("@", 1)[0].strip().replace("-", "_").lower()
    if base in ("", "c", "posix", "*"):
        return DEFAULT_LANGUAGE
    parts = base.split("_")
    if parts[0] == "en":
        return "en"
    if parts[0] == "ru":
        return "ru_RU"
    if parts[0] == "zh":
        rest = parts[1:]
        regional = any(r in _TRADITIONAL_REGIONS for r in rest)
        if "hant" in rest or (regional and "hans" not in rest):
            return "zh_TW"
        return "zh_CN"
    return None


def language_from_env(raw: str | None) -> tuple[str, str | None]:
    """The default language from LANG, and the raw value if it named none we have."""
    if raw is None or not raw.strip():
        return DEFAULT_LANGUAGE, None
    mapped = map_language(raw)
    if mapped is None:
        return DEFAULT_LANGUAGE, raw
    return mapped, None


def negotiate(accept_language: str | None, default: str) -> str:
    """Pick the best of LANGUAGES for an Accept-Language header, honouring q-values."""
    if not accept_language:
        return default
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")):
        tag, *params = (p.strip() for p in item.split(";"))
        quality = 1.0
        for param in params:
            match = _QVALUE.match(param.replace(" ", "").lower())
            if match:
                quality = float(match.group(1))
        if not tag or quality <= 0:
            continue
        language = default if tag == "*" else map_language(tag)
        if language is not None:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else default


class Translator:
    """Every message of every language, loaded once."""

    def __init__(self, catalogs: Mapping[str, Mapping[str, str]]) -> None:
        self._catalogs = catalogs

    @classmethod
    def load(cls) -> Translator:
        folder = files("gateway") / "translations"
        catalogs: dict[str, dict[str, str]] = {}
        for language in LANGUAGES:
            with (folder / f"{language}.po").open("rb") as handle:
                catalog = read_po(handle, locale=language)
            catalogs[language] = {
                str(m.id): str(m.string) for m in catalog if m.id and isinstance(m.string, str)
            }
        return cls(catalogs)

    def codes(self, language: str) -> set[str]:
        return set(self._catalogs[language])

    def translate(self, language: str, code: str, **params: object) -> str:
        text = self._catalogs.get(language, {}).get(code) or self._catalogs[DEFAULT_LANGUAGE].get(
            code, code
        )
        return text.format(**params) if params else text
