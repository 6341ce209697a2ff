"""systemd/coopagent-svc hands a command the credentials systemd would, then removes them.

Real: the script, setpriv, the real `coopagent status` reading its bearer token through
$CREDENTIALS_DIRECTORY and sending it to an HTTP server that stands in for the running
agent's API. Not real: the user. The service user's uid cannot enter pytest's 0700 temp
folders, so the test runs it with COOPAGENT_USER=root; the switch is the same setpriv call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "systemd" / "coopagent-svc"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv")


class StatusApi:
    """GET /v1/status like the agent's API: records the bearer token it was sent."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                api.tokens.append(self.headers.get("Authorization", "").removeprefix("Bearer "))
                body = json.dumps({"running": True, "dev": "coop-a/branch-1/agent-1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def api() -> Iterator[StatusApi]:
    a = StatusApi()
    try:
        yield a
    finally:
        a.close()


def run_status(tmp_path: Path, port: int, token_file: str) -> dict[str, object]:
    etc, opt, run = tmp_path / "etc", tmp_path / "opt", tmp_path / "run"
    (etc / "credentials").mkdir(parents=True)
    run.mkdir()
    (opt / "venv").mkdir(parents=True)
    (opt / "venv" / "bin").symlink_to(Path(sys.executable).parent)  # this venv's coopagent
    (etc / "api.token").write_text("main-token\n")
    (etc / "credentials" / "alt.token").write_text("alt-token\n")
    (etc / "agent.toml").write_text(f'[agent]\ndata_dir = "{tmp_path / "state"}"\n'
                                    f'[api]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{token_file}"\n')
    env = dict(os.environ, COOPAGENT_ETC=str(etc), COOPAGENT_OPT=str(opt), COOPAGENT_USER="root",
               COOPAGENT_RUNDIR=str(run))
    r = subprocess.run([str(SCRIPT), "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert list(run.iterdir()) == [], "the credentials copy must be removed"
    doc: dict[str, object] = json.loads(r.stdout)
    return doc


@pytest.mark.parametrize(("name", "token"), [("api.token", "main-token"), ("secret_alt.token", "alt-token")])
def test_credentials_reach_the_command_under_their_systemd_names(
        tmp_path: Path, api: StatusApi, name: str, token: str) -> None:
    doc = run_status(tmp_path, api.port, name)
    assert doc["running"] is True
    assert api.tokens == [token]


def test_a_missing_credential_is_reported(tmp_path: Path, api: StatusApi) -> None:
    doc = run_status(tmp_path, api.port, "secret_missing.password")
    assert "cannot read secret file" in str(doc["reason"])
    assert api.tokens == []


def test_refuses_without_a_command() -> None:
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "coopagent-svc camera test" in r.stdout


def test_config_is_added_only_where_the_command_takes_one(tmp_path: Path, api: StatusApi) -> None:
    """`serial list` has no --config; `status` got one above (it found the token by it)."""
    run_status(tmp_path, api.port, "api.token")  # lays out etc/opt/run
    env = dict(os.environ, COOPAGENT_ETC=str(tmp_path / "etc"), COOPAGENT_OPT=str(tmp_path / "opt"),
               COOPAGENT_USER="root", COOPAGENT_RUNDIR=str(tmp_path / "run"))
    r = subprocess.run([str(SCRIPT), "serial", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "no such option" not in r.stderr.lower(), r.stderr
    assert r.returncode == 0, r.stderr
