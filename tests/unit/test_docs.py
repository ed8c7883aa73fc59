"""The docs against the code: configuration.md lists exactly the settings; README links hold."""

from __future__ import annotations

import re
from collections import Counter

from gateway.config import load_settings
from tests.support.processes import ROOT
from tests.support.settings import settings_read

DOCS = ROOT / "docs"
# Written by other developers on their branches; linked from the README ahead of them.


def settings_table() -> list[list[str]]:
    """The cells of each row of the table whose header starts with `| setting |`."""
    rows: list[list[str]] = []
    inside = False
    for line in (DOCS / "configuration.md").read_text().splitlines():
        if line.startswith("| setting |"):
            inside = True
        elif inside and not line.startswith("|"):
            break
        elif inside and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert rows, "no table starting with | setting | in docs/configuration.md"
    return rows


def test_configuration_documents_every_setting_exactly_once():
    names = [name for row in settings_table() for name in re.findall(r"`(\w+)`", row[0])]
    twice = [name for name, count in Counter(names).items() if count > 1]
    assert not twice, f"documented more than once: {twice}"
    assert set(names) == settings_read()


def test_each_setting_has_a_default_and_a_valid_example_of_itself():
    for name, default, example, meaning in settings_table():
        assert default and meaning, name
        match = re.fullmatch(r"`(\w+)=([^`]*)`", example)
        assert match and f"`{match.group(1)}`" == name, f"{name}: example {example}"
        load_settings({match.group(1): match.group(2).replace("...", "x")})


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_is_short_and_keeps_the_two_commands():
    text = readme()
    assert len(text.splitlines()) < 150
    for command in ("make run", "make test"):
        assert re.search(rf"^{command}\b", text, re.MULTILINE), command


def test_readme_has_the_public_deployment_checklist():
    section = readme().partition("\n## Security\n")[2].partition("\n## ")[0]
    for item in ("**Keys.**", "**Caps.**", "**Ops endpoints.**", "**TLS at the load balancer.**"):
        assert item in section, item
    assert "GATEWAY_KEYS" in section and "OPS_ALLOW" in section and "docs/security.md" in section


def test_readme_links_only_to_docs_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme())
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert {"docs/configuration.md", "docs/architecture.md"} <= set(local)
    for link in local:
        assert (ROOT / link).is_file(), link


def test_links_between_the_docs_resolve():
    pages = [*DOCS.glob("*.md"), ROOT / "deploy" / "kubernetes" / "README.md"]
    for page in pages:
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"\w+://", link):
                continue
            target = (page.parent / link).resolve()
            assert target.exists(), f"{page.relative_to(ROOT)} links to {link}"
