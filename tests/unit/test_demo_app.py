"""The demo app's page and token endpoint, served on a local port with a fake environment.

The page's behaviour in a real browser is tests/topology/test_browser.py's; here: who the page
and the token are for, what the page subscribes, and that nothing secret is in a response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from demo import app as demo
from demo import build

SECRET = "unit-test-hmac-secret"
ENDPOINT = "wss://ws.example.test/connection/websocket"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def served(monkeypatch):
    """GET <path> on demo/app.py's handler on 127.0.0.1: (status, content type, body)."""
    monkeypatch.setenv("CENTRIFUGO_URL", ENDPOINT)
    monkeypatch.setenv("CENTRIFUGO_SECRET", SECRET)
    monkeypatch.setenv("CENTRIFUGO_API_KEY", "unit-test-api-key")
    for key in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "DEMO_FAIL_HEALTH"):
        monkeypatch.delenv(key, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), demo.Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def get(path: str):
        try:
            with OPENER.open(f"http://127.0.0.1:{server.server_port}{path}", timeout=5) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    yield get
    server.shutdown()
    server.server_close()


def claims(token: str) -> dict:
    header, body, sig = token.split(".")
    expected = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == expected, "not signed with CENTRIFUGO_SECRET"
    assert json.loads(base64.urlsafe_b64decode(header + "==="))["alg"] == "HS256"
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def page_config(page: str) -> dict:
    m = re.search(r"const config = (\{.*?\});\n", page)
    assert m, "the page has no config"
    return json.loads(m.group(1))


def test_token_is_signed_for_the_requested_user(served):
    status, ctype, body = served("/api/token?user=42")
    assert status == 200 and ctype == "application/json"
    token_claims = claims(json.loads(body)["token"])
    assert token_claims["sub"] == "42"
    assert 0 < token_claims["exp"] - demo.time.time() <= 600


def test_token_without_a_user_is_the_instances_own(served):
    status, _, body = served("/api/token")
    assert status == 200
    assert claims(json.loads(body)["token"])["sub"] == demo.DEFAULT_USER == f"demo-{demo.INSTANCE}"


@pytest.mark.parametrize("user", ["", "4%2C2", "a%3Cb", "x" * 65, "%23x", "42%0A"])
def test_a_user_id_that_is_no_channel_id_is_refused(served, user):
    for path in (f"/api/token?user={user}", f"/?user={user}"):
        status, ctype, body = served(path)
        assert status == 400 and ctype == "application/json", path
        assert "token" not in json.loads(body)


def test_page_signs_in_and_subscribes_the_users_personal_channel(served):
    status, ctype, page = served("/?user=42")
    assert status == 200 and ctype == "text/html; charset=utf-8"
    assert page_config(page) == {"endpoint": ENDPOINT, "user": "42", "channel": "user:#42"}
    for element in ('id="user">42<', 'id="channel">user:#42<', 'id="state"', 'id="subscription"',
                    '<ul id="notifications">'):
        assert element in page, element
    assert '<script src="/static/centrifuge.js"></script>' in page
    # The client fetches the user's token, subscribes the configured channel and lists publications.
    assert 'fetch("/api/token?user=" + encodeURIComponent(config.user)' in page
    assert "new Centrifuge(config.endpoint, { getToken: getToken })" in page
    assert "client.newSubscription(config.channel)" in page
    assert 'sub.on("publication"' in page and "list.appendChild(item)" in page
    assert "data.text" in page and "JSON.stringify(data)" in page
    # Text only: a publication can never become markup.
    assert "innerHTML" not in page
    # Only CENTRIFUGO_URL from the environment: no other address in the page.
    assert re.findall(r"wss?://[^\"' ]+", page) == [ENDPOINT]


def test_page_without_a_user_is_the_instances_own(served):
    _, _, page = served("/")
    assert page_config(page)["channel"] == f"user:#{demo.DEFAULT_USER}"


def test_page_script_is_valid_javascript(served, tmp_path):
    node = shutil.which("node")
    assert node, "node not found: run `make deps`"
    _, _, page = served("/?user=42")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    (tmp_path / "page.js").write_text(script)
    proc = subprocess.run([node, "--check", str(tmp_path / "page.js")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_no_secret_in_any_response(served):
    for path in ("/", "/?user=42", "/api/token?user=42", "/api/health", "/nothing"):
        _, _, body = served(path)
        assert SECRET not in body and "unit-test-api-key" not in body, path


def test_health_is_unchanged(served):
    status, _, body = served("/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_script_json_cannot_close_the_script_element():
    out = demo.script_json({"endpoint": "</script><script>alert(1)</script>&<!--"})
    assert "<" not in out and ">" not in out and "&" not in out
    assert json.loads(out) == {"endpoint": "</script><script>alert(1)</script>&<!--"}


def test_the_image_inputs_include_the_app(monkeypatch, tmp_path):
    """demo/build.py rebuilds the image when demo/app.py changes."""
    before = build.inputs_key()
    (tmp_path / "app.py").write_bytes((build.DEMO / "app.py").read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(build, "DEMO", tmp_path)
    assert build.inputs_key() != before
