"""A real browser (Debian's chromium, headless, driven by Selenium) uses the console end to end: a console of
many nodes, and the console a node serves on its first run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from gateway.console.config import load_settings
from tests.console.cluster import PASSWORDS, Cluster, wait_for
from tests.support.infra import require
from tests.support.node import ShippedNode
from tests.support.stack import ROOT

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACT = ROOT / "var" / "artifacts" / "console.png"


def ensure_chromium() -> None:
    """Debian's chromium and its driver, installed by scripts/bootstrap.sh (as root): skipped without
    them, failed under CI."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    require(f"{' and '.join(missing)} missing: run scripts/bootstrap.sh as root" if missing else None)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"):
        options.add_argument(flag)
    options.add_argument("--window-size=1440,1000")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_browser_logs_in_sees_both_nodes_and_restarts_a_process(
    cluster: Cluster, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # The board replaces itself when the server pushes a change: an element found just before may go stale.
    wait = WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException])
    browser.get(f"{cluster.base}/")  # not logged in: sent to the login page
    wait.until(expected_conditions.presence_of_element_located((By.ID, "password")))
    browser.find_element(By.ID, "name").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["admin"])
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()

    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".nodecard.status-ok")) >= 2)
    cards = browser.execute_script("return [...document.querySelectorAll('.nodecard strong')].map(e => e.textContent)")
    assert {"node-a", "node-b"} <= set(cards)
    assert browser.find_element(By.ID, "live").text == "live"  # the state stream is connected

    before = cluster.a.info("app:sleeper")["pid"]
    button = 'tr[data-key="node-a/app:sleeper"] button[data-action="restart"]'
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, button).click() or True)  # retried if it goes stale
    confirm = wait.until(expected_conditions.alert_is_present())
    assert "Restart node-a/app:sleeper?" in confirm.text
    confirm.accept()
    results = wait.until(
        lambda d: (panel := d.find_element(By.ID, "results")).is_displayed() and "ok in" in panel.text and panel
    )
    assert "✔ node-a" in results.text and "app:sleeper: restarted, RUNNING" in results.text
    assert cluster.a.info("app:sleeper")["pid"] != before
    # The board refreshes itself with the new pid (pushed over SSE, fetched as a fragment).
    new_pid = str(cluster.a.info("app:sleeper")["pid"])
    row_text = "return document.querySelector('tr[data-key=\"node-a/app:sleeper\"]').textContent"
    wait.until(lambda d: new_pid in d.execute_script(row_text))

    shot = tmp_path / "console.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    assert ARTIFACT.stat().st_size > 10_000

    browser.get(f"{cluster.base}/?view=group")
    wait.until(lambda d: "logical group" in d.execute_script("return document.body.textContent"))
    browser.save_screenshot(str(tmp_path / "console-groups.png"))
    shutil.copyfile(tmp_path / "console-groups.png", ARTIFACT.with_name("console-groups.png"))

    # The audit log shows the restart, found by searching for the process.
    browser.get(f"{cluster.base}/audit")
    search = wait.until(expected_conditions.presence_of_element_located((By.NAME, "q")))
    search.send_keys("node-a/app:sleeper")
    search.submit()
    wait.until(lambda d: "q=node-a" in d.current_url)
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")]
    assert any("admin" in r and "restart" in r and "node-a/app:sleeper" in r and " ok" in r for r in rows), rows
    browser.save_screenshot(str(tmp_path / "console-audit.png"))
    shutil.copyfile(tmp_path / "console-audit.png", ARTIFACT.with_name("console-audit.png"))

    # The live tail page shows what the program prints, as it prints it.
    browser.get(f"{cluster.base}/tail?node=node-a&process=app:printer&stream=stdout")
    wait.until(lambda d: "tick" in d.find_element(By.ID, "log").text)
    first = browser.find_element(By.ID, "log").text
    wait_for(lambda: browser.find_element(By.ID, "log").text != first, 5, "more log lines")
    browser.save_screenshot(str(tmp_path / "console-tail.png"))
    shutil.copyfile(tmp_path / "console-tail.png", ARTIFACT.with_name("console-tail.png"))


@pytest.fixture
def first_run(tmp_path: Path) -> Iterator[ShippedNode]:
    """A whole node started the way `checkgate run` starts it, with no console configured (a first run),
    on the tests' broker and Redis under its own queue prefix."""
    node = ShippedNode(tmp_path, own_redis=False)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        node.cleanup.cleanup()


def test_a_first_run_node_serves_its_console_to_the_generated_admin(
    first_run: ShippedNode, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    node = first_run
    node.wait_running()
    # RUNNING is supervisord's view; the gateway listens once its broker and backend answer.
    wait_for(lambda: requests.get(f"{node.gateway}/console/login", timeout=5).ok, 90, "the gateway's console")
    # The one place `checkgate run` says the password is.
    user, _, password = (node.home / "var" / "console-credentials").read_text().strip().partition(":")
    name = load_settings(node.env["CHECKGATE_CONSOLE_CONFIG"], node.env).nodes[0].name  # this host's name

    wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])
    browser.get(f"{node.gateway}/console/")  # sent to the login page
    wait.until(expected_conditions.presence_of_element_located((By.ID, "password")))
    browser.find_element(By.ID, "name").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()

    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".nodecard.status-ok"))
    keys = "return [...document.querySelectorAll('tr.proc.state-running')].map(e => e.dataset.key)"
    expected = {f"{name}/{program}" for program in node.programs | node.gateway_programs()}
    wait.until(lambda d: expected <= set(d.execute_script(keys)))
    # The node's application health, from its gateway's /health: ok once every queue has its worker.
    WebDriverWait(browser, 90).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".health.health-ok"))

    shot = tmp_path / "console-first-run.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACT.with_name("console-first-run.png"))
