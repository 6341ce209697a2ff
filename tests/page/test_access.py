"""Who may see the status page: the API token always (a login form that sets an HttpOnly,
SameSite=Strict cookie, or a bearer header); a client off loopback only with [status_page]
allow_lan. Against the real agent's API, over real sockets."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

from agent.config.loader import ConfigError, parse_config
from agent.page.routes import COOKIE
from tests.peers.agent import Branch

DATA_ROUTES = ["/page/status", "/page/history", "/page/doctor", "/page/events", "/page/panels/serial/state"]


def lan_address() -> str:
    """This machine's first non-loopback IPv4 address: a request to it comes from it, not from loopback."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        try:
            with socket.create_connection((addr, 9), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return addr  # routable from here: the kernel answered with a reset
        except OSError:
            continue
    pytest.skip("no non-loopback IPv4 address on this machine")


def test_loopback_needs_the_token_once_then_a_cookie(branch: Branch) -> None:
    branch.start_agent()
    base = f"http://127.0.0.1:{branch.api_port}"
    with httpx.Client(base_url=base, timeout=10) as c:
        page = c.get("/page")
        assert page.status_code == 200 and 'name="token"' in page.text  # the login form, no data
        assert branch.device in page.text and "Broker link" not in page.text
        for route in ["/page/status", "/page/history", "/page/doctor", "/page/events"]:
            r = c.get(route)
            assert r.status_code == 401, (route, r.status_code)
        assert c.post("/page/doctor/run").status_code == 401
        wrong = c.post("/page/login", data={"token": "x" * 32})
        assert wrong.status_code == 401 and COOKIE not in wrong.cookies
        ok = c.post("/page/login", data={"token": branch.token})
        assert ok.status_code == 303
        set_cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/page" in set_cookie
        assert branch.token not in ok.headers["set-cookie"]  # an HMAC of the token, never the token
        status = c.get("/page/status")  # the client keeps the cookie
        assert status.status_code == 200 and status.json()["broker"]["url"] == branch.broker.url
        assert "Broker link" in c.get("/page").text
    bearer = httpx.get(f"{base}/page/status", headers={"Authorization": f"Bearer {branch.token}"}, timeout=10)
    assert bearer.status_code == 200


def test_lan_clients_get_nothing_unless_allowed(branch: Branch) -> None:
    addr = lan_address()
    lan = {"listen": f"0.0.0.0:{branch.api_port}", "allow_non_loopback": True}
    auth = {"Authorization": f"Bearer {branch.token}"}
    branch.start_agent(api=lan)
    base = f"http://{addr}:{branch.api_port}"
    # The API itself is open to the LAN here (with its token), the page is not, token or not.
    assert httpx.get(f"{base}/v1/status", headers=auth, timeout=10).status_code == 200
    assert httpx.get(f"{base}/page", timeout=10).status_code == 404
    for route in DATA_ROUTES:
        assert httpx.get(base + route, headers=auth, timeout=10).status_code == 404, route
    assert httpx.post(f"{base}/page/login", data={"token": branch.token}, timeout=10).status_code == 404
    # The same agent still serves the page on loopback.
    assert httpx.get(f"http://127.0.0.1:{branch.api_port}/page/status", headers=auth, timeout=10).status_code == 200
    branch.stop_agent()

    branch.start_agent(api=lan, status_page={"allow_lan": True})
    assert 'name="token"' in httpx.get(f"{base}/page", timeout=10).text
    assert httpx.get(f"{base}/page/status", timeout=10).status_code == 401  # still the token
    assert httpx.get(f"{base}/page/status", headers=auth, timeout=10).status_code == 200


def test_allow_lan_needs_the_api_opened_explicitly(branch: Branch) -> None:
    with pytest.raises(ConfigError, match="allow_lan"):
        parse_config(branch.agent_dict(status_page={"allow_lan": True}))
