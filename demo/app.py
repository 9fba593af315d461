#!/usr/bin/env python3
"""Demo app for the platform's tests: one process, standard library plus psycopg, redis and boto3.

Configuration comes only from the environment the platform generates (the
instance's env file): PORT, DATABASE_URL, REDIS_URL, REDIS_PREFIX, S3_ENDPOINT, S3_BUCKET,
S3_ACCESS_KEY_ID, CENTRIFUGO_URL, CENTRIFUGO_SECRET, ... Nothing secret is ever written to a response or a log.

    GET /api/health   200 {"status": "ok", "checks": {...}} when every configured
                      dependency answers, 503 with the failing check otherwise.
                      With the header `X-Health-Probe: liveness` (the load balancer's
                      probe) it answers 200 as long as the process serves requests.
    GET /api/token    a short-lived Centrifugo connection token (HS256) for the page
    GET /             a page that connects to Centrifugo with the official JS client
    GET /static/centrifuge.js   the client, vendored from npm at image build time
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = os.environ.get("DEMO_VERSION", "dev")
INSTANCE = os.environ.get("APP_INSTANCE", socket.gethostname())
TIMEOUT = 2.0
STARTED = time.monotonic()


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


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
<p>version {version}</p>
<p>realtime: <span id="state">connecting</span></p>
<script src="/static/centrifuge.js"></script>
<script>
(async function () {{
  const state = document.getElementById("state");
  const res = await fetch("/api/token");
  const {{ token }} = await res.json();
  const client = new Centrifuge({endpoint}, {{ token: token }});
  client.on("connected", function () {{ state.textContent = "connected"; }});
  client.on("disconnected", function (ctx) {{ state.textContent = "disconnected: " + ctx.reason; }});
  client.on("error", function (ctx) {{ state.textContent = "error: " + ctx.error.message; }});
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
        path = self.path.split("?", 1)[0]
        if path == "/api/health":
            if self.headers.get("X-Health-Probe") == "liveness":
                return self._json(200, {"status": "alive", "version": VERSION})
            status, body = health()
            return self._json(status, body)
        if path == "/api/token":
            secret = os.environ.get("CENTRIFUGO_SECRET")
            if not secret:
                return self._json(404, {"error": "realtime not configured"})
            return self._json(200, {"token": connection_token(secret, f"demo-{INSTANCE}")})
        if path == "/static/centrifuge.js":
            js = HERE / "static" / "centrifuge.js"
            if js.exists():
                return self._send(200, js.read_bytes(), "application/javascript")
        if path == "/":
            page = PAGE.format(title=html.escape(f"demo {INSTANCE}"), version=html.escape(VERSION),
                               endpoint=json.dumps(os.environ.get("CENTRIFUGO_URL", "")))
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
