#!/usr/bin/env python3
"""Demo app for the platform's tests: one process, standard library plus psycopg, redis and boto3.

Configuration comes only from the environment the platform generates (the
instance's env file): PORT, DATABASE_URL, REDIS_URL, REDIS_PREFIX, S3_ENDPOINT, S3_BUCKET,
S3_ACCESS_KEY_ID, CENTRIFUGO_URL, CENTRIFUGO_SECRET, ... Nothing secret is ever written to a response or a log.

    GET /api/health   200 {"status": "ok", "checks": {...}} when every configured
                      dependency answers, 503 with the failing check otherwise.
                      With the header `X-Health-Probe: liveness` (the load balancer's
                      probe) it answers 200 as long as the process serves requests.
    GET /api/token    a short-lived Centrifugo connection token (HS256) for the page;
                      `?user=<id>` signs `sub=<id>`, without it the instance's own user
    GET /             a page signed in as a user (`?user=<id>`, else the instance's own user)
                      that connects to CENTRIFUGO_URL with the official JS client, subscribes
                      the user's personal channel `user:#<id>` and lists every publication
                      (`data.text`, else the JSON) in <ul id="notifications">; the connection
                      and subscription states are in #state and #subscription
    GET /static/centrifuge.js   the client, vendored from npm at image build time

The demo has no login: the query string says who is signed in, so anyone reaching the page
can sign a token for any user id. A real app takes the user from its own session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

HERE = Path(__file__).resolve().parent
VERSION = os.environ.get("DEMO_VERSION", "dev")
INSTANCE = os.environ.get("APP_INSTANCE", socket.gethostname())
TIMEOUT = 2.0
STARTED = time.monotonic()
# The user a page or token is for without `?user=`: the instance's own (as before users existed).
DEFAULT_USER = f"demo-{INSTANCE}"
# A user id as the `user` namespace's channels accept it (`user:#<id>`).
USER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
PERSONAL_NAMESPACE = "user"


def check_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=int(TIMEOUT), application_name=f"demo-{INSTANCE}") as conn:
        conn.execute("SELECT 1").fetchone()


def check_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        # A write and a read inside the instance's own key prefix: what its ACL grants.
        key = f"{prefix}:health"
        client.set(key, str(time.time()), ex=60)
        client.get(key)
    finally:
        client.close()


_s3 = None


def check_s3(env) -> None:
    """A write and a read of one small object in the instance's own bucket, with a client that
    retries the way an app's would (standard mode, 3 attempts)."""
    global _s3
    if _s3 is None:
        import boto3
        from botocore.config import Config

        _s3 = boto3.client("s3", endpoint_url=env["S3_ENDPOINT"], region_name=env.get("S3_REGION"),
                           aws_access_key_id=env["S3_ACCESS_KEY_ID"], aws_secret_access_key=env["S3_SECRET_ACCESS_KEY"],
                           config=Config(s3={"addressing_style": "path"}, connect_timeout=TIMEOUT, read_timeout=TIMEOUT,
                                         retries={"mode": "standard", "max_attempts": 3}))
    key = f"health/{INSTANCE}"
    _s3.put_object(Bucket=env["S3_BUCKET"], Key=key, Body=str(time.time()).encode())
    _s3.get_object(Bucket=env["S3_BUCKET"], Key=key)["Body"].read()


def health() -> tuple[int, dict]:
    if os.environ.get("DEMO_FAIL_HEALTH") == "1":
        return 503, {"status": "error", "version": VERSION, "checks": {"self": {"ok": False, "error": "forced"}}}
    checks: dict[str, dict] = {}
    if os.environ.get("DATABASE_URL"):
        try:
            check_database(os.environ["DATABASE_URL"])
            checks["database"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - any failure is a failed check
            checks["database"] = {"ok": False, "error": type(exc).__name__}
    if os.environ.get("REDIS_URL"):
        try:
            check_redis(os.environ["REDIS_URL"], os.environ.get("REDIS_PREFIX", INSTANCE).rstrip(":"))
            checks["redis"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = {"ok": False, "error": type(exc).__name__}
    if os.environ.get("S3_ENDPOINT"):
        try:
            check_s3(os.environ)
            checks["s3"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001
            checks["s3"] = {"ok": False, "error": type(exc).__name__}
    ok = all(c["ok"] for c in checks.values())
    body = {"status": "ok" if ok else "error", "version": VERSION, "instance": INSTANCE,
            "uptime": round(time.monotonic() - STARTED, 1), "checks": checks}
    return (200 if ok else 503), body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def connection_token(secret: str, user: str, ttl: int = 600) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"sub": user, "exp": int(time.time()) + ttl}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode()
    sig = _b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{sig}"


def personal_channel(user: str) -> str:
    """The user's personal channel: user-limited (`#`), so only a connection of that user subscribes."""
    return f"{PERSONAL_NAMESPACE}:#{user}"


def requested_user(query: str) -> str | None:
    """The user of `?user=<id>`, DEFAULT_USER without one, None for an id that is not one."""
    values = parse_qs(query, keep_blank_values=True).get("user")
    if not values:
        return DEFAULT_USER
    user = values[-1]
    return user if USER_RE.fullmatch(user) else None


def script_json(value) -> str:
    """JSON for inside a <script> element: no `</script>`, `<!--` or `&` can end or change it."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
<p>version {version}</p>
<p>signed in as <span id="user">{user}</span></p>
<p>realtime: <span id="state">connecting</span></p>
<p>notifications on <span id="channel">{channel}</span>: <span id="subscription">unsubscribed</span></p>
<ul id="notifications"></ul>
<script src="/static/centrifuge.js"></script>
<script>
(function () {{
  const config = {config};
  const state = document.getElementById("state");
  const subscription = document.getElementById("subscription");
  const list = document.getElementById("notifications");
  if (!config.endpoint) {{ state.textContent = "error: realtime not configured"; return; }}
  // The connection token for the signed-in user; fetched again when it is about to expire.
  function getToken() {{
    return fetch("/api/token?user=" + encodeURIComponent(config.user), {{ cache: "no-store" }})
      .then(function (res) {{
        if (res.status === 401 || res.status === 403 || res.status === 404) {{
          throw new Centrifuge.UnauthorizedError("token endpoint answered " + res.status);
        }}
        if (!res.ok) {{ throw new Error("token endpoint answered " + res.status); }}
        return res.json();
      }})
      .then(function (body) {{ return body.token; }});
  }}
  const client = new Centrifuge(config.endpoint, {{ getToken: getToken }});
  client.on("connecting", function (ctx) {{ state.textContent = "connecting"; }});
  client.on("connected", function () {{ state.textContent = "connected"; }});
  client.on("disconnected", function (ctx) {{ state.textContent = "disconnected: " + ctx.reason; }});
  client.on("error", function (ctx) {{ state.textContent = "error: " + ctx.error.message; }});
  // The personal channel needs no subscription token: the server admits the token's user only.
  const sub = client.newSubscription(config.channel);
  sub.on("subscribing", function () {{ subscription.textContent = "subscribing"; }});
  sub.on("subscribed", function () {{ subscription.textContent = "subscribed"; }});
  sub.on("unsubscribed", function (ctx) {{ subscription.textContent = "unsubscribed: " + ctx.reason; }});
  sub.on("error", function (ctx) {{ subscription.textContent = "error: " + ctx.error.message; }});
  sub.on("publication", function (ctx) {{
    const item = document.createElement("li");
    const data = ctx.data;
    item.textContent = data && typeof data.text === "string" ? data.text : JSON.stringify(data);
    list.appendChild(item);
  }});
  sub.subscribe();
  client.connect();
}})();
</script>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "demo"
    sys_version = ""

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        path, _, query = self.path.partition("?")
        if path == "/api/health":
            if self.headers.get("X-Health-Probe") == "liveness":
                return self._json(200, {"status": "alive", "version": VERSION})
            status, body = health()
            return self._json(status, body)
        if path == "/api/token":
            secret = os.environ.get("CENTRIFUGO_SECRET")
            if not secret:
                return self._json(404, {"error": "realtime not configured"})
            user = requested_user(query)
            if user is None:
                return self._json(400, {"error": "user: 1 to 64 of A-Z a-z 0-9 _ -"})
            return self._json(200, {"token": connection_token(secret, user)})
        if path == "/static/centrifuge.js":
            js = HERE / "static" / "centrifuge.js"
            if js.exists():
                return self._send(200, js.read_bytes(), "application/javascript")
        if path == "/":
            user = requested_user(query)
            if user is None:
                return self._json(400, {"error": "user: 1 to 64 of A-Z a-z 0-9 _ -"})
            channel = personal_channel(user)
            config = {"endpoint": os.environ.get("CENTRIFUGO_URL", ""), "user": user, "channel": channel}
            page = PAGE.format(title=html.escape(f"demo {INSTANCE}"), version=html.escape(VERSION),
                               user=html.escape(user), channel=html.escape(channel), config=script_json(config))
            return self._send(200, page.encode(), "text/html; charset=utf-8")
        return self._json(404, {"error": "not found"})

    def log_message(self, fmt, *args):  # one line per request, no headers or query strings
        sys.stderr.write(f"{self.command} {self.path.split('?', 1)[0]} {args[1] if len(args) > 1 else ''}\n")


def _terminate(*_args) -> None:
    raise SystemExit(0)


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    bind = os.environ.get("BIND", "0.0.0.0")
    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    # podman stop sends SIGTERM; by then the proxy has drained this slot.
    signal.signal(signal.SIGTERM, _terminate)
    print(f"demo {VERSION} listening on {bind}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
