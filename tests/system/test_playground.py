"""The playground in headless Chromium, through nginx (deploy/nginx.conf) in front of a gateway
process and the fake upstream streaming slowly: the answer arrives in pieces, the limits count
down, and the 429 reads as the gateway's catalog says, in the page's language.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import pairwise

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from gateway.i18n import Translator
from tests.support.processes import (
    ROOT,
    Process,
    free_port,
    gateway,
    require,
    wait_until_serving_sync,
)

pytestmark = pytest.mark.e2e

LIMIT = 3
CHUNK_DELAY = 0.4  # between the fake upstream's deltas, so the page shows each one
ANSWER = "Hello, world!"  # the fake upstream's pieces: "Hello", ", ", "world", "!"
DEADLINE = 60.0  # generous: a loaded two-core machine starts Chromium slowly
ARTIFACTS = ROOT / "artifacts"
TAGS = {"en": "en", "zh_CN": "zh-CN", "ru_RU": "ru-RU"}

# Test instrumentation: notes every text the answer shows, however briefly.
OBSERVE_ANSWER = """
window.answerStates = [];
const answer = document.getElementById("answer");
new MutationObserver(() => window.answerStates.push(answer.textContent))
    .observe(answer, {childList: true, characterData: true, subtree: true});
"""


def nginx_config(listen: int, upstream: int) -> str:
    """deploy/nginx.conf with only its listen port and its upstream server changed."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in (
        ("listen 5000;", f"listen 127.0.0.1:{listen};"),
        ("server gateway:5000;", f"server 127.0.0.1:{upstream};"),
    ):
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("upstream")
    port = free_port()
    args = [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(port)]
    process = Process(
        [*args, "--chunk-delay", str(CHUNK_DELAY)], log=folder / "upstream.log", cwd=ROOT
    )
    try:
        wait_until_serving_sync(f"http://127.0.0.1:{port}/v1/models", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    chromium = require("chromium")
    driver = require("chromedriver")
    folder = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--user-data-dir={folder / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver, log_output=str(folder / "chromedriver.log"))
    session = webdriver.Chrome(options=options, service=service)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture
def site(request, tmp_path, upstream_url) -> Iterator[str]:
    """A fresh gateway (so fresh limits) behind nginx; the URL the browser opens.

    Indirect parameters override its settings; None drops one.
    """
    nginx = require("nginx")
    settings = {
        "OPENAI_BASE_URL": upstream_url,
        "API_KEY": "sk-playground",
        "ROUTE": "api",
        "MINUTE_LIMIT": str(LIMIT),
        "TRUSTED_PROXIES": "127.0.0.1/32",
        **getattr(request, "param", {}),
    }
    port = free_port()
    log = tmp_path / "gateway.log"
    processes = [gateway(port, log, **{k: v for k, v in settings.items() if v is not None})]
    try:
        wait_until_serving_sync(f"http://127.0.0.1:{port}/readyz", processes[0])
        listen = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_config(listen, port))
        daemon = f"daemon off; pid {tmp_path}/nginx.pid;"
        args = [nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-g", daemon]
        processes.append(Process(args, log=tmp_path / "nginx.log"))
        wait_until_serving_sync(f"http://127.0.0.1:{listen}/healthz", processes[-1])
        yield f"http://127.0.0.1:{listen}"
    finally:
        for process in reversed(processes):
            process.close()


def text(browser: WebDriver, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def console_errors(browser: WebDriver) -> list[str]:
    """Errors the page logged (CSP violations, script errors), not the HTTP errors it expects."""
    entries = browser.get_log("browser")
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


def open_page(browser: WebDriver, site: str, language: str, route: str) -> WebDriverWait[WebDriver]:
    wait = WebDriverWait(browser, DEADLINE, poll_frequency=0.05)
    browser.get(f"{site}/playground")
    wait.until(lambda d: d.find_element(By.ID, "legacy-route").text == "POST /api")
    Select(browser.find_element(By.ID, "language")).select_by_value(language)
    wait.until(
        lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == TAGS[language]
    )
    browser.find_element(By.CSS_SELECTOR, f'input[name="route"][value="{route}"]').click()
    browser.find_element(By.ID, "prompt").send_keys("Say hello")
    return wait


def send_when_ready(browser: WebDriver, wait: WebDriverWait[WebDriver]) -> None:
    button = browser.find_element(By.ID, "send")
    wait.until(lambda _: button.is_enabled())
    button.click()


@pytest.mark.parametrize(
    ("language", "route", "width"),
    [("en", "legacy", 1024), ("ru_RU", "openai", 390)],
    ids=["en-legacy", "ru_RU-v1-narrow"],
)
def test_playground_streams_counts_down_and_explains_the_429(
    browser: WebDriver, site: str, language: str, route: str, width: int
) -> None:
    translator = Translator.load()
    browser.set_window_size(width, 1000)
    wait = open_page(browser, site, language, route)
    browser.execute_script(OBSERVE_ANSWER)

    # First call: the answer grows piece by piece, and the limits show one call used.
    send_when_ready(browser, wait)
    wait.until(lambda d: text(d, "answer") == ANSWER and d.find_element(By.ID, "send").is_enabled())
    states = [s for s in browser.execute_script("return window.answerStates") if s]
    growth = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert growth[-1] == ANSWER
    assert all(ANSWER.startswith(s) for s in growth), growth
    assert all(len(a) < len(b) for a, b in pairwise(growth)), growth
    assert len(growth[:-1]) >= 2, f"the answer did not arrive in pieces: {growth}"
    assert text(browser, "limit-remaining") == str(LIMIT - 1)
    assert text(browser, "limit-limit") == str(LIMIT)
    assert browser.find_element(By.ID, "error").is_displayed() is False

    # Every further call counts down, until the gateway refuses one.
    for remaining in range(LIMIT - 2, -1, -1):
        send_when_ready(browser, wait)
        wait.until(lambda d, r=remaining: text(d, "limit-remaining") == str(r))
    wait.until(lambda d: text(d, "answer") == ANSWER and d.find_element(By.ID, "send").is_enabled())
    send_when_ready(browser, wait)
    error = browser.find_element(By.ID, "error")
    wait.until(lambda _: error.is_displayed())

    retry_after = browser.find_element(By.ID, "retry-after").get_attribute("data-seconds")
    assert retry_after is not None and retry_after.isdigit()
    window = translator.translate(language, "window_minute")
    expected = translator.translate(
        language, "too_many_requests", limit=LIMIT, window=window, seconds=int(retry_after)
    )
    assert error.text == expected
    assert text(browser, "limit-remaining") == "0"
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways at {width}px"

    assert console_errors(browser) == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"playground-{language}.png"
    assert browser.save_screenshot(str(shot)), shot


@pytest.mark.parametrize("site", [{"API_KEY": None}], indirect=True)
def test_playground_asks_for_a_key_on_401_and_sends_it(browser: WebDriver, site: str) -> None:
    translator = Translator.load()
    browser.set_window_size(1024, 1400)
    wait = open_page(browser, site, "zh_CN", "openai")
    send_when_ready(browser, wait)
    error = browser.find_element(By.ID, "error")
    wait.until(lambda _: error.is_displayed())
    reason, hint = (p.text for p in error.find_elements(By.TAG_NAME, "p"))
    assert reason == translator.translate("zh_CN", "missing_api_key")
    assert "网关密钥" in hint
    assert browser.find_element(By.ID, "key-box").get_attribute("open") is not None
    key = browser.find_element(By.ID, "key")
    assert browser.switch_to.active_element == key

    # On /v1 the bearer reaches the upstream (until gateway keys exist), so the call now succeeds.
    key.send_keys("sk-from-the-page")
    send_when_ready(browser, wait)
    wait.until(lambda d: text(d, "answer") == ANSWER and d.find_element(By.ID, "send").is_enabled())
    assert not error.is_displayed()
    stored = browser.execute_script("return sessionStorage.getItem('gateway-playground-key')")
    assert stored == "sk-from-the-page"
    assert console_errors(browser) == []
