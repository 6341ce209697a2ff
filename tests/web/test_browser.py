"""The evidence view in a real headless chromium (Debian's chromium + chromium-driver, through Selenium).

As an auditor would use it: log in, find the void in the exceptions, open it, and watch the
clip play beside the receipt lines (the video's currentTime must advance: an element that
only exists, or a clip the browser cannot decode, fails). Then what must not work: a wrong
password, an expired session, an auditor on an admin page, an authority not granted a
society; each must say so plainly and show nothing it should not. Screenshots are kept in
test-output/evidence-web/.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.web.conftest import PASSWORD, Browser, Web

pytestmark = pytest.mark.slow


def test_find_a_void_and_watch_it_beside_the_receipt(browser: Browser, web: Web) -> None:
    b = browser
    b.login("audrey")
    b.get("/exceptions")
    b.shot("exceptions")
    rows = b.d.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows][:1] == ["stock-take variance"]  # newest first
    void_row = next(r for r in rows if "R-1003" in r.text)
    assert "void" in void_row.text
    void_row.find_element(By.CSS_SELECTOR, "a.open").click()
    b.wait(lambda d: d.find_elements(By.ID, "receipt"))

    lines = b.d.find_elements(By.CSS_SELECTOR, "#lines tbody tr.line")
    assert len(lines) == 2 and "06291041500213" in lines[0].text and "0.500 KWD" in lines[0].text
    assert b.d.find_element(By.ID, "total").text == "1.250 KWD"
    assert b.d.find_element(By.ID, "void-badge").text == "VOID"
    assert b.d.find_element(By.ID, "signature").text.startswith("signature valid")
    assert b.d.find_element(By.ID, "chain").text.startswith("chain continuous")
    # The camera that recorded nothing says so, in words, not with an empty player.
    gap = b.d.find_element(By.CSS_SELECTOR, "p.gap").text
    assert gap.startswith("No recording from camera door between 2025-11-24 16:00:40.000 UTC and "
                          "2025-11-24 16:01:40.000 UTC"), gap
    assert len(b.d.find_elements(By.TAG_NAME, "video")) == 1

    video = b.d.find_element(By.CSS_SELECTOR, "video.player")
    receipt = b.d.find_element(By.ID, "receipt")
    # Beside the receipt: to its right, overlapping it vertically.
    assert video.location["x"] > receipt.location["x"] + receipt.size["width"] - 5
    assert abs(video.location["y"] - receipt.location["y"]) < receipt.size["height"]
    b.d.execute_script("arguments[0].play()", video)
    b.wait(lambda d: d.execute_script("return arguments[0].currentTime", video) > 1.0, timeout=20)
    state = b.d.execute_script(
        "const v = arguments[0]; return [v.currentTime, v.videoWidth, v.error === null, v.duration]", video)
    assert state[1] == 320 and state[2] and 3.5 < state[3] < 4.5, state
    b.shot("void-playing")

    # The viewing is in the access log (an admin reads it; the chain holds).
    db = web.centre.web_db()
    try:
        actions = [r[0] for r in db.execute("SELECT action FROM access_log WHERE account = 'audrey'")]
    finally:
        db.close()
    assert "view_clip" in actions


def test_wrong_password_says_so_and_opens_nothing(browser: Browser) -> None:
    b = browser
    b.login("audrey", "not the password")
    assert b.d.find_element(By.ID, "message").text == "Wrong user name or password."
    assert not b.d.get_cookie("coop_session")
    b.shot("wrong-password")
    b.get("/exceptions")
    assert "/login" in b.d.current_url and "R-1003" not in b.text()


def test_expired_session_goes_back_to_login_with_the_reason(browser: Browser, web: Web) -> None:
    b = browser
    b.login("audrey")
    b.get("/search?receipt=R-1003")
    assert "R-1003" in b.text()
    # An hour passes without a request (the session idles out after 30 minutes): age it in the store.
    db = web.centre.web_db()
    try:
        db.begin()
        db.execute("UPDATE web_sessions SET seen_at = seen_at - ?", (3_600_000,))
        db.commit()
    finally:
        db.close()
    b.get("/search?receipt=R-1003")
    assert "/login" in b.d.current_url
    assert b.d.find_element(By.ID, "message").text == "Your session has expired. Log in again."
    assert "R-1003" not in b.text()
    b.shot("expired")
    # Logging in again lands on the page that was asked for.
    b.d.find_element(By.ID, "name").send_keys("audrey")
    b.d.find_element(By.ID, "password").send_keys(PASSWORD)
    b.d.find_element(By.ID, "login").click()
    b.wait(lambda d: "/search" in d.current_url)
    assert "R-1003" in b.text()


def test_auditor_on_an_admin_page_is_refused(browser: Browser) -> None:
    b = browser
    b.login("audrey")
    for path in ("/admin", "/admin/access-log", "/admin/devices"):
        b.get(path)
        msg = b.d.find_element(By.ID, "message").text
        assert msg.startswith("This page needs the admin role; your account audrey is auditor"), msg
        assert not b.d.find_elements(By.ID, "accounts") and not b.d.find_elements(By.ID, "log")
    b.shot("auditor-on-admin")


def test_authority_not_granted_a_society_sees_none_of_it(browser: Browser, web: Web) -> None:
    b = browser
    b.login("pat")  # partner authority: soc-b, sales only
    b.get("/exceptions")
    text = b.text()
    assert "R-9001" in text and "R-1003" not in text and "R-2001" not in text and "W-77" not in text
    b.get("/search?society=soc-a")
    assert b.d.find_element(By.ID, "message").text == "Your authority (partner) has not been granted society soc-a."
    void = web.centre.ids["void"].replace(":", "/")
    b.get(f"/record/{void}")
    assert "has not been granted" in b.d.find_element(By.ID, "message").text
    assert not b.d.find_elements(By.ID, "receipt") and "R-1003" not in b.text()
    b.get("/compliance/soc-a")
    assert "has not been granted society soc-a" in b.d.find_element(By.ID, "message").text
    b.shot("not-granted")
    # Its own society's void opens, but no clip: the partner is not granted media.
    b.get("/exceptions")
    b.d.find_element(By.CSS_SELECTOR, "#results a.open").click()
    b.wait(lambda d: d.find_elements(By.ID, "receipt"))
    assert "R-9001" in b.text() and not b.d.find_elements(By.TAG_NAME, "video")


def test_admin_reads_the_access_log_with_its_chain_checked(browser: Browser) -> None:
    b = browser
    b.login("admin")
    b.get("/admin/access-log")
    assert b.d.find_element(By.ID, "chain-state").text.startswith("Hash chain intact")
    assert "login" in b.d.find_element(By.ID, "log").text
    b.shot("access-log")

