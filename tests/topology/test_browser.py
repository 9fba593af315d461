"""A real browser on the gateway: a signed-in user's notifications appear in the app's page.

The incident this guards against: a signed-in user's notifications did not appear in the page.
Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by `make deps`) opens
the demo page of an app instance with `realtime` through Caddy on the app host over HTTPS,
signed in as a user (`/?user=<id>`). The page connects to CENTRIFUGO_URL (wss://ws.<domain>
through Caddy on a streaming host) with the official JS client and subscribes the user's
personal channel. A publication to `user:#<id>` from the app host, through Centrifugo's HTTP
API with the instance's own API URL and key, must show up in the page; one to another user's
channel must not.

The browser is driven through chromedriver's W3C WebDriver HTTP API with urllib: a handful
of calls (new session, navigate, execute script, delete session), no Selenium to pin.

It trusts the topology CA the way a user's browser trusts a CA: through an NSS database in a
temporary HOME (certutil), never --ignore-certificate-errors. It resolves the app's domain to
the app host and ws.<domain> to a streaming host with --host-resolver-rules, from the
inventory and the registry, as the gateway has no resolver for these zones.

    .venv/bin/pytest tests/topology/test_browser.py
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from codeb import registry, shared
from services.app import model as app_model
from tests.topology.conftest import CA_CERT, addr, first, group_data, ssh_run

DATA = group_data()
WS_DOMAIN = shared.ws_domain(DATA["platform_domain"])
USER, OTHER_USER = "42", "43"
STATE_TIMEOUT = 30  # seconds for the page to connect and subscribe
DELIVERY = 5  # seconds from the API call's answer to the text in the page
MAKE_DEPS = "run `make deps` (it installs chromium, chromium-driver and libnss3-tools)"


def realtime_instance():
    """The first app instance whose page connects to Centrifugo."""
    found = [i for i in registry.load().instances if i.group == "app" and "realtime" in i.needs]
    assert found, "no app instance has `realtime` in its needs"
    return found[0]


def resolver_rules(domain: str, app_host: str, streaming_host: str) -> str:
    """Chromium's --host-resolver-rules: the page's and the WebSocket's names to the guests.
    A MAP rule names one address: with several streaming hosts, the first (each one's Caddy
    balances over every Centrifugo node)."""
    return f"MAP {domain} {addr(app_host)}, MAP {WS_DOMAIN} {addr(streaming_host)}"


# --- chromedriver's W3C WebDriver HTTP API ------------------------------------------------------

# chromedriver listens on localhost: no proxy from the environment applies.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebDriverError(AssertionError):
    pass


def _call(base: str, method: str, path: str, body: dict | None = None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}").get("value")
    except urllib.error.HTTPError as exc:
        try:
            value = json.loads(exc.read()).get("value", {})
        except ValueError:
            value = {}
        raise WebDriverError(f"{method} {path}: {value.get('error', exc.code)}: "
                             f"{value.get('message', '').splitlines()[0] if value.get('message') else ''}") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium under chromedriver, with its own HOME (NSS database) and profile."""

    def __init__(self, rules: str, ca: Path):
        missing = [tool for tool in ("chromium", "chromedriver", "certutil") if not shutil.which(tool)]
        if missing:
            pytest.fail(f"{', '.join(missing)} not found: {MAKE_DEPS}", pytrace=False)
        if not ca.exists():
            pytest.fail(f"{ca} is missing: the topology CA is created by `make up`", pytrace=False)
        self.home = Path(tempfile.mkdtemp(prefix="codeb-browser-"))
        self.driver = None
        self.session = None
        try:
            self._trust(ca)
            self._start(rules)
        except BaseException:
            self.close()
            raise

    def _trust(self, ca: Path) -> None:
        """The CA in a fresh NSS database at $HOME/.pki/nssdb: where Chromium on Linux reads the
        user's trust anchors. `C,,`: trusted to issue server certificates."""
        nssdb = self.home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        for cmd in (["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"],
                    ["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "codeb-lab", "-i", str(ca)]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, f"{' '.join(cmd[:4])}: {proc.stderr.strip()}"

    def _start(self, rules: str) -> None:
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HOME": str(self.home)}
        self.driver = subprocess.Popen(["chromedriver", f"--port={port}"], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                if _call(self.base, "GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            assert self.driver.poll() is None, f"chromedriver exited: {self.driver.stderr.read().decode()[-500:]}"
            assert time.monotonic() < deadline, "chromedriver did not become ready in 20s"
            time.sleep(0.2)
        args = [
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-proxy-server",
            f"--user-data-dir={self.home / 'profile'}",
            "--window-size=1024,768",
            f"--host-resolver-rules={rules}",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
        caps = {
            "browserName": "chrome",
            "acceptInsecureCerts": False,
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        value = _call(self.base, "POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = value["sessionId"]

    def _session(self, method: str, path: str, body: dict | None = None):
        return _call(self.base, method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def script(self, source: str, *args):
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def console(self) -> list[str]:
        """The page's console messages (chromedriver's log endpoint), for failure messages."""
        try:
            return [e.get("message", "") for e in self._session("POST", "/se/log", {"type": "browser"}) or []]
        except (OSError, WebDriverError):
            return []

    def close(self) -> None:
        if self.session:
            try:
                self._session("DELETE", "")
            except (OSError, WebDriverError):
                pass
            self.session = None
        if self.driver and self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
        if self.driver and self.driver.stderr:
            self.driver.stderr.close()
        shutil.rmtree(self.home, ignore_errors=True)


PAGE_STATE = """
const text = (id) => { const el = document.getElementById(id); return el ? el.textContent : null; };
return {
  url: location.href,
  user: text("user"),
  channel: text("channel"),
  state: text("state"),
  subscription: text("subscription"),
  notifications: Array.from(document.querySelectorAll("#notifications li"), (li) => li.textContent),
};
"""


def page_state(browser: Browser) -> dict:
    return browser.script(PAGE_STATE)


def wait_for(browser: Browser, what: str, ok, timeout: float) -> dict:
    """The page's state once `ok(state)` holds; fails with the last state and the console."""
    deadline = time.monotonic() + timeout
    while True:
        state = page_state(browser)
        if ok(state):
            return state
        if time.monotonic() > deadline:
            console = "\n  ".join(browser.console()[-10:]) or "(empty)"
            raise AssertionError(f"{what} not within {timeout:g}s; page: {state}\n console:\n  {console}")
        time.sleep(0.1)


# --- publishing from the app host ---------------------------------------------------------------

# Run on the app host as the deploy account, fed on stdin (`bash -s -- <env file> <body>`). The
# instance's API URL and key are read from its env file with sudo into shell variables; the key
# reaches curl through a private temporary file, never an argument, and is never printed.
PUBLISH = r"""
set -euo pipefail
env_file=$1 body=$2 url= key=
while IFS= read -r line; do
  case $line in
    CENTRIFUGO_API_URL=*) url=${line#*=} ;;
    CENTRIFUGO_API_KEY=*) key=${line#*=} ;;
  esac
done < <(sudo -n grep -E '^CENTRIFUGO_API_(URL|KEY)=' "$env_file")
if [ -z "$url" ] || [ -z "$key" ]; then
  echo "$env_file has no CENTRIFUGO_API_URL or CENTRIFUGO_API_KEY" >&2
  exit 3
fi
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
printf 'X-API-Key: %s\n' "$key" > "$headers"
curl -sS --fail --max-time 5 -H @"$headers" -H 'Content-Type: application/json' --data-binary "$body" "$url/publish"
"""


def publish(app_host: str, inst, channel: str, text: str) -> None:
    """POST <CENTRIFUGO_API_URL>/publish on the app host with the instance's key; fails unless accepted."""
    body = json.dumps({"channel": channel, "data": {"text": text}})
    remote = f"bash -s -- {shlex.quote(app_model.env_file_path(inst))} {shlex.quote(body)}"
    proc = ssh_run(app_host, remote, stdin=PUBLISH, timeout=30)
    assert proc.returncode == 0, f"publish to {channel} from {app_host}: exit {proc.returncode}: {proc.stderr.strip()}"
    answer = json.loads(proc.stdout or "{}")
    assert "error" not in answer and "result" in answer, f"publish to {channel}: {proc.stdout.strip()}"


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target():
    inst = realtime_instance()
    return {"instance": inst, "domain": inst.domains[0], "app_host": first(inst.group),
            "streaming_host": first("streaming")}


@pytest.fixture(scope="module")
def browser(target):
    b = Browser(resolver_rules(target["domain"], target["app_host"], target["streaming_host"]), CA_CERT)
    yield b
    b.close()


def test_a_signed_in_users_notifications_appear_in_the_page(browser, target):
    inst, domain, app_host = target["instance"], target["domain"], target["app_host"]
    url = f"https://{domain}/?user={USER}"
    try:
        browser.get(url)
    except WebDriverError as exc:
        raise AssertionError(f"{url} did not load in Chromium (CA trust or resolver rules): {exc}") from None
    loaded = page_state(browser)
    if loaded["url"] != url:  # Chromium's error page (chrome-error://): certificate, name or connection
        error = " ".join((browser.script("return document.body ? document.body.innerText : ''") or "").split())
        code = re.search(r"\b(?:NET::)?ERR_[A-Z_]+", error)
        raise AssertionError(f"{url} did not load in Chromium (CA trust, resolver rules, Caddy?): "
                             f"{code.group(0) if code else 'no error code'}: {error[:300]}")
    assert loaded["user"] == USER and loaded["channel"] == f"user:#{USER}", \
        f"the page is not signed in as user {USER}: {loaded}"

    wait_for(browser, f"connected and subscribed to user:#{USER}",
             lambda s: s["state"] == "connected" and s["subscription"] == "subscribed", STATE_TIMEOUT)

    mine, theirs = f"for {USER} {uuid.uuid4().hex[:12]}", f"for {OTHER_USER} {uuid.uuid4().hex[:12]}"
    # Another user's notification first: had it been delivered, it would be in the page by the
    # time this user's own arrives.
    publish(app_host, inst, f"user:#{OTHER_USER}", theirs)
    publish(app_host, inst, f"user:#{USER}", mine)
    wait_for(browser, f"the notification {mine!r}", lambda s: mine in s["notifications"], DELIVERY)
    time.sleep(1)
    state = page_state(browser)
    assert theirs not in state["notifications"], f"user {USER}'s page shows user {OTHER_USER}'s notification: {state}"
    assert state["notifications"] == [mine], state
    assert state["state"] == "connected" and state["subscription"] == "subscribed", state
