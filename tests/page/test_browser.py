"""The status page in headless chromium against a whole branch: the real agent, Mosquitto, the
reference receiver, a GStreamer RTSP camera, and a scale and a scanner on pty pairs."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from drivers.serial.sim.devices import MtSicsSim, ScannerSim
from drivers.serial.sim.pty import PtyLink
from tests.page.conftest import Browser
from tests.peers.agent import Branch
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera

pytestmark = pytest.mark.slow

T = TypeVar("T")
GTIN = "5901234123457"


def until(driver: WebDriver, cond: Callable[[WebDriver], T], timeout: float, what: str) -> T:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(cond, f"timed out waiting for {what}")


def classes(driver: WebDriver, element_id: str) -> list[str]:
    return (driver.find_element(By.ID, element_id).get_attribute("class") or "").split()


def thumbnail(driver: WebDriver) -> bytes | None:
    """The bytes the page's <img> shows now (its blob: URL read back in the page)."""
    got = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const img = document.querySelector('figure[data-camera="dock"] img');
        if (!img || !img.src.startsWith('blob:') || !img.complete || !img.naturalWidth) { done(null); return; }
        fetch(img.src).then(r => r.arrayBuffer()).then(b => {
            let s = ''; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); done(btoa(s)); });
    """)
    return base64.b64decode(got) if got else None


def sign_in(browser: Browser, branch: Branch) -> None:
    d = browser.driver
    d.get(f"http://127.0.0.1:{branch.api_port}/page")
    d.find_element(By.ID, "token").send_keys(branch.token)
    d.find_element(By.ID, "login").click()
    until(d, lambda d: d.find_elements(By.ID, "link"), 10, "the page after signing in")


def test_status_page_live(tmp_path: Path, branch: Branch, browser: Browser) -> None:
    cam = RtspCamera(tmp_path / "rtsp").start()
    scale_link = PtyLink(tmp_path / "tty-scale", tmp_path / "dev-scale").start()
    scan_link = PtyLink(tmp_path / "tty-scanner", tmp_path / "dev-scanner").start()
    scale = MtSicsSim(scale_link.device_side).start()
    scanner = ScannerSim(scan_link.device_side).start()
    try:
        branch.start_receiver()
        agent = branch.start_agent(
            cameras=[{"name": "dock", "url": cam.url("main"), "sub_url": cam.url("sub"), "stale_after_s": 4}],
            recording={"dir": str(tmp_path / "recordings"), "segment_s": 1, "io_timeout_s": 3},
            scales=[{"name": "dock", "port": str(scale_link.agent_side), "protocol": "mt-sics",
                     "poll_interval_s": 0.05}],
            scanners=[{"name": "door", "port": str(scan_link.agent_side)}],
        )
        wait_for(lambda: agent.health().get("scale:dock") == "ok", timeout=15, what="scale online")
        d = browser.driver
        sign_in(browser, branch)

        # Components, broker link, backlog and its chart.
        until(d, lambda d: "good" in classes(d, "link"), 15, "the broker link green")
        until(d, lambda d: "api" in d.find_element(By.ID, "components").text, 10, "the components")
        assert d.find_element(By.ID, "backlog").text.isdigit()
        until(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-seq polyline"), 10, "the seq chart")
        assert "free" in d.find_element(By.ID, "disk").text

        # A camera thumbnail appears, then changes (the test camera's picture moves).
        first = until(d, thumbnail, 20, "a camera thumbnail")
        assert first[:2] == b"\xff\xd8"  # a JPEG
        until(d, lambda d: (t := thumbnail(d)) is not None and t != first, 20, "the thumbnail to change")
        # The components list follows the agent (refreshed every 5 s): the camera's components,
        # down while its stream was still starting when the page loaded, turn ok.
        until(d, lambda d: all(f"camera:dock:{c}\nok" in d.find_element(By.ID, "components").text
                               or f"camera:dock:{c} ok" in d.find_element(By.ID, "components").text
                               for c in ("frames", "record")), 20, "the camera's components ok on the page")
        browser.shot("connected-thumbnail")

        # A weight placed on the scale is on the page within a second; a scan shows up too.
        placed = time.monotonic()
        scale.place(1234)
        until(d, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-scale="dock"] .weight')
              .get_attribute("data-grams") == "1234", 5, "the weight on the page")
        took = time.monotonic() - placed
        assert took < 1.0, f"the weight took {took:.2f} s to reach the page"
        assert "1.234 kg" in d.find_element(By.CSS_SELECTOR, 'tr[data-scale="dock"] .weight').text
        scanner.scan(GTIN)
        until(d, lambda d: any(GTIN in li.text for li in d.find_elements(By.CSS_SELECTOR, "li.scan")), 5,
              "the scan on the page")
        browser.shot("weight-and-scan")

        # A broker outage turns the link red, its return green again.
        branch.broker.stop()
        until(d, lambda d: "bad" in classes(d, "link"), 15, "the broker link red")
        red = d.find_element(By.ID, "link").value_of_css_property("background-color")
        assert red in ("rgba(198, 40, 40, 1)", "rgb(198, 40, 40)"), red
        assert d.find_element(By.ID, "link").text == "disconnected"
        browser.shot("broker-down")
        branch.broker.start()
        until(d, lambda d: "good" in classes(d, "link"), 20, "the broker link green again")
        assert d.find_element(By.ID, "link").value_of_css_property("background-color") in (
            "rgba(26, 127, 55, 1)", "rgb(26, 127, 55)")

        # The doctor's results, with their fixes: run when the page opened, then again on the button.
        def finished(d: WebDriver) -> str:
            return d.find_element(By.ID, "doctor-when").get_attribute("data-finished") or ""

        first_run = until(d, finished, 90, "the doctor's first results")
        until(d, lambda d: d.find_element(By.ID, "doctor-run").is_enabled(), 10, "the doctor's button")
        d.find_element(By.ID, "doctor-run").click()
        until(d, lambda d: finished(d) not in ("", first_run), 90, "the doctor's second run")
        assert d.find_elements(By.CSS_SELECTOR, 'tr.finding[data-id="config.valid"]')
        ids = [tr.get_attribute("data-id") for tr in d.find_elements(By.CSS_SELECTOR, "tr.finding")]
        assert "broker.connect" in ids or any(i and i.startswith("broker") for i in ids), ids
        assert any(i and i.startswith("camera.") for i in ids), ids
        assert any(i and i.startswith("serial.") for i in ids), ids
        fixes = d.find_elements(By.CSS_SELECTOR, "tr.finding .fix")
        not_ok = d.find_elements(By.CSS_SELECTOR, "tr.finding .pill.warning, tr.finding .pill.error")
        assert len(fixes) == len(not_ok), "every warning and error comes with its fix"
        d.execute_script("document.getElementById('doctor-panel').scrollIntoView()")
        browser.shot("doctor")
    finally:
        scale.stop()
        scanner.stop()
        scale_link.stop()
        scan_link.stop()
        branch.stop_agent()
        cam.stop()


