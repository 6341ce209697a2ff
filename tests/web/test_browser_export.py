"""An auditor exports a void from its page in the browser, and the bundle is checked anywhere.

Headless Debian chromium downloads the bundle the record page's button makes; then the
offline verifier (`coop-verify`, its console script's code run as a separate process, as a
court's expert would run it) accepts it and names the record's device, and refuses a copy
with one byte changed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from receiver.keys import load_central_key
from tests.peers.net import wait_for
from tests.web.conftest import Browser, Web
from wire.keys import public_pem

pytestmark = pytest.mark.slow

VERIFY = [sys.executable, "-c", "import sys; from coopverify.cli import main; sys.exit(main())"]


def test_export_a_void_from_its_page_and_verify_it_offline(browser: Browser, web: Web, tmp_path: Path) -> None:
    b = browser
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    b.d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    b.login("audrey")
    b.get("/exceptions")
    row = next(r for r in b.d.find_elements(By.CSS_SELECTOR, "#results tbody tr") if "R-1003" in r.text)
    row.find_element(By.CSS_SELECTOR, "a.open").click()
    b.wait(lambda d: d.find_elements(By.ID, "export-one"))
    b.d.find_element(By.ID, "export-one").click()
    bundle = wait_for(lambda: next((p for p in downloads.glob("evidence-*") if not p.name.endswith(".crdownload")),
                                   None), timeout=30, what="the downloaded bundle")
    b.shot("exported")

    centre_key = tmp_path / "centre.pub.pem"
    centre_key.write_text(public_pem(load_central_key(web.centre.config.receiver.key_file).public_key()))
    ok = subprocess.run([*VERIFY, str(bundle), "--centre-key", str(centre_key)], capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "soc-a/branch-1/agent-1" in ok.stdout and "FAILED" not in ok.stdout

    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the archive (a clip or a batch)
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(bytes(data))
    bad = subprocess.run([*VERIFY, str(tampered), "--centre-key", str(centre_key)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED" in bad.stdout
