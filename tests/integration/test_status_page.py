"""The metaserver's status page, read in a real headless browser against a running cluster.

Debian's chromium driven through chromedriver (selenium), both installed by
``.ci/run``; without them the test skips and says why. Screenshots go to
``artifacts/status-page-*.png``.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fds.client import Client
from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,900")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
for _binary in (CHROMIUM, CHROMEDRIVER):
    if not os.access(_binary, os.X_OK):
        pytest.skip(f"{_binary} is missing: apt-get install chromium chromium-driver (.ci/run does)",
                    allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless chromium with a fresh profile; selenium finds nothing itself (no downloads)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()  # ends chromium and the chromedriver process selenium started (by its PID)


def _wait(driver: Any, what: str, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Wait until ``condition()`` is truthy; fail with what the page showed."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _: condition())
    except Exception as exc:  # TimeoutException, or a row replaced while being read
        shown = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"page never showed {what}; it shows:\n{shown}") from exc


def _rows(driver: Any) -> dict[str, dict[str, str]]:
    """The servers table, by server id: each cell's text (and the bytes stored, raw)."""
    return driver.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll("#servers tbody tr")) {
          const cell = (c) => tr.querySelector("td." + c).textContent;
          out[tr.dataset.serverId] = {url: cell("url"), state: cell("state"), alive: tr.dataset.alive,
                                      bytes: tr.querySelector("td.stored").dataset.bytes, rows: cell("rows")};
        }
        return out;""")


def _health(driver: Any) -> tuple[str, str]:
    banner = driver.find_element(By.ID, "health")
    return str(banner.get_attribute("data-health")), str(banner.text)


def _screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"status-page-{name}.png"))


async def _write(cluster: LocalCluster, tracts: int, stop: threading.Event | None = None) -> None:
    """Write ``tracts`` tracts to a new blob; with ``stop``, keep writing new blobs until it is set."""
    async with Client(cluster.metaserver_url, token=cluster.token("write")) as fds:
        while True:
            blob = await fds.create_blob()
            await blob.extend(tracts)
            await blob.write_tracts((i, bytes([i % 251]) * SMALL_TRACT) for i in range(tracts))
            if stop is None or stop.is_set():
                return


def test_status_page_without_credentials_is_refused(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(tractservers=1, replicas=1)
    for path in ("/", "/status"):
        assert httpx.get(cluster.metaserver_url + path).status_code == 401
        resp = httpx.get(cluster.metaserver_url + path, headers=cluster.headers("read"))
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        policy = resp.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert re.findall(r'(?:src|href)="([^"]*)"', resp.text) == ["data:,"]  # nothing loaded from elsewhere


def test_status_page_in_a_browser(make_cluster: Callable[..., LocalCluster], browser: Any) -> None:
    # k = 3 on exactly 3 servers: when one dies no other server can take its rows, so the cluster stays
    # unhealthy (a state the page must show) until a fourth server joins and recovery copies them.
    cluster = make_cluster(tractservers=3, replicas=3)
    asyncio.run(_write(cluster, 6))
    meta = cluster.metaserver_url
    table_version = httpx.get(f"{meta}/v1/table", headers=cluster.headers("read")).json()["version"]

    browser.get(f"{meta}/healthz")  # the cookie needs a page of the metaserver's origin first
    browser.add_cookie({"name": "fds_token", "value": cluster.token("read"), "path": "/"})
    browser.get_log("browser")  # drain: /healthz's favicon request had no cookie yet
    browser.get(f"{meta}/?refresh=0.5")
    _wait(browser, "three servers, each storing bytes",
          lambda: len(rows := _rows(browser)) == 3 and all(int(r["bytes"]) > 0 for r in rows.values()))
    health, text = _health(browser)
    assert health == "healthy" and text.startswith("HEALTHY"), text
    assert browser.find_element(By.ID, "tlt-version").text == str(table_version)
    assert browser.find_element(By.ID, "replicas").text == "3"
    assert browser.find_element(By.ID, "alive").text == "3 / 3"
    rows = _rows(browser)
    assert {r["url"] for r in rows.values()} == {c.url for c in cluster.tract_children}
    assert set(rows) == {cluster.server_id(c.name) for c in cluster.tract_children}
    assert all(r["state"] == "active" and r["alive"] == "true" for r in rows.values())

    # Throughput: from the request counters heartbeats carry, while a writer keeps writing.
    stop = threading.Event()
    writer = threading.Thread(target=asyncio.run, args=(_write(cluster, 4, stop),))
    writer.start()
    try:
        _wait(browser, "write throughput above zero",
              lambda: int(browser.find_element(By.ID, "throughput").get_attribute("data-bytes-in-per-s") or 0) > 0)
        _screenshot(browser, "healthy")
    finally:
        stop.set()
        writer.join(60)
    assert not writer.is_alive()

    # One tract server dies: its row turns dead and the banner unhealthy, naming it.
    victim = cluster.server_id("ts1")
    cluster.kill("ts1")
    _wait(browser, f"{victim} dead and the cluster unhealthy",
          lambda: _rows(browser)[victim]["state"] == "dead" and _health(browser)[0] == "unhealthy")
    health, text = _health(browser)
    assert text.startswith("UNHEALTHY") and victim in text and "under-replicated" in text, text
    assert _rows(browser)[victim]["alive"] == "false"
    assert browser.find_element(By.ID, "alive").text == "2 / 3"
    _screenshot(browser, "server-dead")

    # A new server joins: recovery copies the dead server's rows to it, and the page says healthy again.
    joined = cluster.add_tractserver()
    cluster.wait_healthy()
    newcomer = cluster.server_id(joined.name)
    _wait(browser, "healthy again with the newcomer holding rows",
          lambda: _health(browser)[0] == "healthy" and _rows(browser).get(newcomer, {}).get("rows", "0") != "0")
    assert "last repair took" in browser.find_element(By.ID, "recovery").text
    assert _rows(browser)[victim]["state"] == "dead"
    _screenshot(browser, "recovered")

    # The page ran under its own Content-Security-Policy without a complaint from the browser.
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems, problems
