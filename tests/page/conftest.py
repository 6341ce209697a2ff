"""The status page's test fixtures: headless chromium driven by Selenium, screenshots kept.

Screenshots go to the test's tmp dir and are copied to test-output/status-page/ in the
source tree (ignored by git), so a person can look at what the browser really showed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "status-page"

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--window-size=1280,1600",
]


class Browser:
    def __init__(self, driver: webdriver.Chrome, shots: Path, test: str) -> None:
        self.driver = driver
        self.shots = shots
        self.test = test
        self.n = 0

    def shot(self, name: str) -> Path:
        self.n += 1
        path = self.shots / f"{self.test}-{self.n:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, OUTPUT / path.name)
        return path


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver",
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, shots, request.node.name.removeprefix("test_")[:40])
    finally:
        driver.quit()
