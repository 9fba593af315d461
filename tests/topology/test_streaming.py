"""The streaming hosts on the local topology: one Centrifugo per app instance behind Caddy at
wss://ws.codeb.test/<instance>/connection/websocket, on two streaming hosts.

A real client (the official centrifuge-python SDK) on the gateway connects through Caddy
with tokens signed by the instance's own key; publications come from an app host through
the instance's internal HTTP API. Two instances of different projects (A and B) prove the
isolation both ways. Secrets are read from .lab/secrets/local.yml and only ever travel on
standard input, never on a command line; they are never printed.

    .venv/bin/pytest tests/topology/test_streaming.py
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shlex
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from tests.topology.conftest import (
    CA_CERT,
    addr,
    connect,
    first,
    group_data,
    hosts_in,
    lab_secrets,
    private,
    ssh_run,
)

centrifuge = pytest.importorskip("centrifuge")
websockets = pytest.importorskip("websockets")

from codeb import registry, shared  # noqa: E402
from services.centrifugo import model as centrifugo_model  # noqa: E402

DATA = group_data()
WS_DOMAIN = shared.ws_domain(DATA["platform_domain"])
FOREIGN_ORIGIN = "https://evil.example"
LATENCY = 1.0  # seconds from the API call on the app host to the client


def _two_projects():
    """Two realtime instances of two different projects: A and B."""
    insts = centrifugo_model.realtime_instances(registry.load().instances)
    a = insts[0]
    b = next(i for i in insts if i.project != a.project)
    return a, b


A, B = _two_projects()


def url(inst=None) -> str:
    return centrifugo_model.client_url(DATA["platform_domain"], inst or A)


def internal(inst=None) -> int:
    return centrifugo_model.internal_port(inst or A, DATA["centrifugo_internal_port_offset"])


def client_port(inst=None) -> int:
    return centrifugo_model.client_port(inst or A, DATA["centrifugo_client_port_offset"])


def origin(inst=None) -> str:
    return centrifugo_model.origins([inst or A])[0]


def streaming_hosts() -> list[str]:
    return hosts_in("streaming")


def api_host() -> str:
    """The streaming host whose internal API the app hosts call first (CENTRIFUGO_API_URL)."""
    return first("streaming")


# --- helpers -------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: dict, secret: str) -> str:
    """An HS256 JWT, as the apps sign them with CENTRIFUGO_SECRET."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"exp": int(time.time()) + 600, **claims}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"



def hmac_secret(inst=None) -> str:
    return lab_secrets()[shared.secret_centrifugo_token_key(inst or A)]


def api_key(inst=None) -> str:
    return lab_secrets()[shared.secret_centrifugo_api_key(inst or A)]


def conn_token(user: str, secret: str | None = None, inst=None) -> str:
    return jwt({"sub": user}, secret or hmac_secret(inst))


def sub_token(user: str, channel: str, inst=None) -> str:
    return jwt({"sub": user, "channel": channel}, hmac_secret(inst))


def ws_address() -> str:
    """ws.<domain> from PowerDNS on the storage host when it answers, else the streaming host."""
    for dns in hosts_in("storage"):
        try:
            out = subprocess.run(["dig", "+short", "+time=2", "+tries=1", f"@{addr(dns)}", WS_DOMAIN, "A"],
                                 capture_output=True, text=True, timeout=10).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out:
            return out[0]
    return addr(api_host())


@pytest.fixture(scope="module", autouse=True)
def resolve_ws_domain():
    """The gateway has no resolver for the platform zone: resolve ws.<domain> as PowerDNS does."""
    target = ws_address()
    assert target in [addr(h) for h in streaming_hosts()], f"{WS_DOMAIN} resolves to {target}, not a streaming host"
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(target if host == WS_DOMAIN else host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    yield target
    socket.getaddrinfo = real


def tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(CA_CERT))


def client(token: str, origin_: str | None = None, events=None, inst=None):
    """A client of instance `inst` (default A), connecting through Caddy; `origin_` defaults
    to the instance's own first origin."""
    return centrifuge.Client(url(inst), events=events, token=token, headers={"Origin": origin_ or origin(inst)},
                             ssl_context=tls(), proxy=None, timeout=5.0, max_reconnect_delay=1.0)


def on_host(name: str, script: str, stdin: str = "", timeout: int = 20) -> subprocess.CompletedProcess:
    """Run a shell script on a guest; secrets go on stdin only."""
    return ssh_run(name, f"bash -c {shlex.quote(script)}", stdin=stdin, timeout=timeout)


def api_publish_from_app_host(channel: str, marker: str, inst=None, key_of=None,
                              host: str | None = None) -> subprocess.CompletedProcess:
    """POST /api/publish to `inst`'s Centrifugo (default A) from an app host, with the API key
    of `key_of` (default: the same instance); the publication carries the host's clock."""
    api = f"http://{private(host or api_host())}:{internal(inst)}/api/publish"
    script = (
        'set -eu; h=$(mktemp); trap \'rm -f "$h"\' EXIT; cat > "$h"; '
        f'body=$(printf \'{{"channel":"%s","data":{{"marker":"%s","sent":%s}}}}\' {shlex.quote(channel)} '
        f'{shlex.quote(marker)} "$(date +%s.%N)"); '
        f'curl -sS --fail --max-time 5 -H @"$h" -H "Content-Type: application/json" -d "$body" {api}'
    )
    return on_host(hosts_in("app")[0], script, stdin=f"X-API-Key: {api_key(key_of or inst)}\n")


class Recorder(centrifuge.SubscriptionEventHandler):
    def __init__(self):
        self.publications: asyncio.Queue = asyncio.Queue()
        self.unsubscribed: list[int] = []

    async def on_publication(self, ctx):
        await self.publications.put((time.time(), ctx.pub.data))

    async def on_unsubscribed(self, ctx):
        self.unsubscribed.append(ctx.code)


class ClientRecorder(centrifuge.ClientEventHandler):
    def __init__(self):
        self.disconnected: list[int] = []
        self.errors: list[str] = []

    async def on_disconnected(self, ctx):
        self.disconnected.append(ctx.code)

    async def on_error(self, ctx):
        self.errors.append(repr(ctx.error))


def run_async(coro):
    """A client scenario (a coroutine) to its end, within a minute."""
    return asyncio.run(asyncio.wait_for(coro, 60))


# --- the acceptance path -------------------------------------------------------------------


def test_subscribe_and_receive_api_publications_within_a_second():
    user = f"u{uuid.uuid4().hex[:8]}"
    ident = uuid.uuid4().hex[:12]
    channels = {
        f"user:#{user}": "",  # personal: user-limited, no subscription token
        f"workspace:{ident}": "token",
        f"project:{ident}": "token",
        f"chat:{ident}": "token",
    }

    async def scenario():
        c = client(conn_token(user))
        await c.connect()
        await c.ready(timeout=10)
        subs = {}
        for channel, kind in channels.items():
            rec = Recorder()
            sub = c.new_subscription(channel, events=rec, token=sub_token(user, channel) if kind else "")
            await sub.subscribe()
            await sub.ready(timeout=10)
            subs[channel] = rec
        latencies = {}
        try:
            for channel, rec in subs.items():
                marker = uuid.uuid4().hex
                started = time.monotonic()
                publish = asyncio.create_task(asyncio.to_thread(api_publish_from_app_host, channel, marker))
                received_at, data = await asyncio.wait_for(rec.publications.get(), 15)
                proc = await publish
                assert proc.returncode == 0, proc.stderr
                assert data["marker"] == marker
                # Guests share the gateway's kernel clock: `sent` is the app host's time at the API call.
                latencies[channel] = received_at - float(data["sent"])
                assert time.monotonic() - started < 15
        finally:
            await c.disconnect()
        return latencies

    latencies = run_async(scenario())
    print({ch: f"{t * 1000:.0f} ms" for ch, t in latencies.items()})
    slow = {ch: round(t, 3) for ch, t in latencies.items() if not 0 <= t < LATENCY}
    assert not slow, f"publications slower than {LATENCY}s: {slow}"


# --- what must be refused --------------------------------------------------------------------


def test_foreign_origin_is_refused():
    async def handshake(origin_):
        try:
            async with websockets.connect(url(), ssl=tls(), origin=origin_, proxy=None, open_timeout=10):
                return 101
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code

    assert run_async(handshake(origin(A))) == 101
    assert run_async(handshake(FOREIGN_ORIGIN)) == 403
    assert run_async(handshake(origin(B))) == 403  # another project's page: not an origin of A

    async def sdk():
        events = ClientRecorder()
        c = client(conn_token("u-origin"), origin_=FOREIGN_ORIGIN, events=events)
        await c.connect()
        with pytest.raises(centrifuge.CentrifugeError):
            await c.ready(timeout=3)
        state = c.state
        await c.disconnect()
        return state

    assert run_async(sdk()) != centrifuge.ClientState.CONNECTED


@pytest.mark.parametrize("token", ["none", "wrong-secret", "garbage"])
def test_connection_without_a_valid_token_is_refused(token):
    value = {"none": "", "wrong-secret": conn_token("u-bad", secret="not-the-secret"), "garbage": "x.y.z"}[token]

    async def scenario():
        events = ClientRecorder()
        c = client(value, events=events)
        await c.connect()
        with pytest.raises(centrifuge.CentrifugeError):
            await c.ready(timeout=5)
        state = c.state
        await c.disconnect()
        return state, events.disconnected

    state, codes = run_async(scenario())
    assert state != centrifuge.ClientState.CONNECTED
    assert codes, "the server never said why"


def _subscribe_refused(user: str, channel: str, token: str = "", inst=None) -> list[int]:
    """Subscribe as `user` (to instance A by default); returns the unsubscribe codes (the
    refusal) or fails if subscribed."""

    async def scenario():
        events = ClientRecorder()
        c = client(conn_token(user, inst=inst), events=events, inst=inst)
        await c.connect()
        await c.ready(timeout=10)
        rec = Recorder()
        sub = c.new_subscription(channel, events=rec, token=token)
        await sub.subscribe()
        with pytest.raises(centrifuge.CentrifugeError):
            await sub.ready(timeout=5)
        state = sub.state
        await c.disconnect()
        return state, rec.unsubscribed + events.disconnected

    state, codes = run_async(scenario())
    assert state != centrifuge.SubscriptionState.SUBSCRIBED
    return codes


def test_another_users_personal_channel_is_refused():
    assert 103 in _subscribe_refused("alice", "user:#bob")  # permission denied


def test_a_personal_channel_for_several_users_is_refused():
    # `user:#alice,bob` would be user-limited to both; the namespace admits one id only.
    assert 107 in _subscribe_refused("alice", "user:#alice,bob")  # bad request


@pytest.mark.parametrize("namespace", ["workspace", "project", "chat"])
def test_membership_namespaces_need_a_subscription_token(namespace):
    assert 103 in _subscribe_refused("alice", f"{namespace}:w1")


def test_a_subscription_token_for_another_user_is_refused():
    codes = _subscribe_refused("alice", "workspace:w1", token=sub_token("bob", "workspace:w1"))
    assert 3500 in codes  # invalid token: the server closes the connection


def test_undefined_namespace_is_refused_even_with_a_token():
    assert 102 in _subscribe_refused("alice", "secret:w1", token=sub_token("alice", "secret:w1"))


def test_channel_without_namespace_is_refused_even_with_a_token():
    assert 107 in _subscribe_refused("alice", "news", token=sub_token("alice", "news"))


# --- isolation between projects: A against B, and B against A -------------------------------------


PAIRS = [pytest.param(A, B, id="A-against-B"), pytest.param(B, A, id="B-against-A")]


@pytest.mark.parametrize(("mine", "theirs"), PAIRS)
def test_one_projects_token_cannot_connect_to_another_projects_centrifugo(mine, theirs):
    """A token signed with my instance's key, presented at the other instance's endpoint (from
    the other instance's own page origin): refused, the client never connects."""

    async def scenario():
        events = ClientRecorder()
        c = client(conn_token("42", inst=mine), origin_=origin(theirs), events=events, inst=theirs)
        await c.connect()
        with pytest.raises(centrifuge.CentrifugeError):
            await c.ready(timeout=5)
        state = c.state
        await c.disconnect()
        return state, events.disconnected

    state, codes = run_async(scenario())
    assert state != centrifuge.ClientState.CONNECTED
    assert 3500 in codes, codes  # invalid token


@pytest.mark.parametrize(("mine", "theirs"), PAIRS)
def test_one_projects_subscription_token_cannot_subscribe_to_another_projects_channel(mine, theirs):
    """Connected to the other instance with a valid token of its own, a subscription token signed
    with my key for `project:x` is refused there."""

    async def scenario():
        events = ClientRecorder()
        c = client(conn_token("42", inst=theirs), events=events, inst=theirs)
        await c.connect()
        await c.ready(timeout=10)
        rec = Recorder()
        sub = c.new_subscription("project:shared-name", events=rec, token=sub_token("42", "project:shared-name",
                                                                                     inst=mine))
        await sub.subscribe()
        with pytest.raises(centrifuge.CentrifugeError):
            await sub.ready(timeout=5)
        state = sub.state
        await c.disconnect()
        return state, rec.unsubscribed + events.disconnected

    state, codes = run_async(scenario())
    assert state != centrifuge.SubscriptionState.SUBSCRIBED
    assert 103 in codes, codes  # permission denied: the token's signature is not this instance's key


@pytest.mark.parametrize(("mine", "theirs"), PAIRS)
def test_one_projects_api_key_cannot_publish_to_another_projects_channels(mine, theirs):
    """My API key at the other instance's HTTP API: 401, on every streaming host."""
    for host in streaming_hosts():
        proc = api_publish_from_app_host("user:#42", uuid.uuid4().hex, inst=theirs, key_of=mine, host=host)
        assert proc.returncode == 22 and "401" in proc.stderr, (host, proc.returncode, proc.stderr)
        assert _curl_from(hosts_in("app")[0], "/api/info", with_key=True, inst=theirs, key_of=mine,
                          host=host).returncode == 22


def test_the_same_user_id_in_two_projects_never_shares_a_channel():
    """User 42 of A and user 42 of B each subscribe `user:#42` (the same name, the same shape):
    a publication through A's API reaches A's client only, and B's reaches B's only."""

    async def scenario():
        clients, recs = [], {}
        for inst in (A, B):
            c = client(conn_token("42", inst=inst), inst=inst)
            await c.connect()
            await c.ready(timeout=10)
            rec = Recorder()
            sub = c.new_subscription("user:#42", events=rec)
            await sub.subscribe()
            await sub.ready(timeout=10)
            clients.append(c)
            recs[inst.name] = rec
        try:
            for sender, other in ((A, B), (B, A)):
                marker = uuid.uuid4().hex
                proc = await asyncio.to_thread(api_publish_from_app_host, "user:#42", marker, sender)
                assert proc.returncode == 0, proc.stderr
                _, data = await asyncio.wait_for(recs[sender.name].publications.get(), 10)
                assert data["marker"] == marker
                await asyncio.sleep(1.0)
                assert recs[other.name].publications.empty(), f"{other.name} received {sender.name}'s publication"
        finally:
            for c in clients:
                await c.disconnect()

    run_async(scenario())


@pytest.mark.parametrize("inst", [A, B], ids=["A", "B"])
@pytest.mark.parametrize("namespace", ["workspace", "project", "chat"])
def test_the_four_namespaces_keep_their_shape_in_each_project(inst, namespace):
    """In each instance: `user:#<me>` without a token (checked above), the membership namespaces
    only with a subscription token of that instance."""

    async def scenario():
        c = client(conn_token("42", inst=inst), inst=inst)
        await c.connect()
        await c.ready(timeout=10)
        channel = f"{namespace}:shape"
        sub = c.new_subscription(channel, events=Recorder(), token=sub_token("42", channel, inst=inst))
        await sub.subscribe()
        await sub.ready(timeout=10)
        state = sub.state
        await c.disconnect()
        return state

    assert run_async(scenario()) == centrifuge.SubscriptionState.SUBSCRIBED
    assert 103 in _subscribe_refused("42", f"{namespace}:shape", inst=inst)  # no token: permission denied


@pytest.mark.destructive
def test_history_survives_a_restart_of_every_node():
    """The Redis engine keeps a `project:` channel's history when every node of the instance
    restarts (with the memory engine it was lost)."""
    channel = f"project:{uuid.uuid4().hex[:12]}"
    markers = [uuid.uuid4().hex for _ in range(3)]
    for marker in markers:
        assert api_publish_from_app_host(channel, marker).returncode == 0
    for name in streaming_hosts():
        proc = ssh_run(name, f"sudo systemctl restart centrifugo@{A.name}", timeout=60)
        assert proc.returncode == 0, proc.stderr
    for name in streaming_hosts():
        for _ in range(30):
            if _curl_from(hosts_in("app")[0], "/health", host=name).returncode == 0:
                break
            time.sleep(1)
    script = ('set -eu; h=$(mktemp); trap \'rm -f "$h"\' EXIT; cat > "$h"; '
              f'curl -sS --fail --max-time 5 -H @"$h" -d \'{{"channel":"{channel}","limit":10}}\' '
              f'http://{private(streaming_hosts()[-1])}:{internal()}/api/history')
    proc = on_host(hosts_in("app")[0], script, stdin=f"X-API-Key: {api_key()}\n")
    assert proc.returncode == 0, proc.stderr
    got = [pub["data"]["marker"] for pub in json.loads(proc.stdout)["result"]["publications"]]
    assert got == markers


# --- the internal port: API from app hosts, metrics from the backup host -----------------------


def _curl_from(name: str, path: str, with_key: bool = False, inst=None, key_of=None,
               host: str | None = None) -> subprocess.CompletedProcess:
    target = f"http://{private(host or api_host())}:{internal(inst)}{path}"
    if with_key:
        script = ('set -eu; h=$(mktemp); trap \'rm -f "$h"\' EXIT; cat > "$h"; '
                  f'curl -sS --fail --max-time 4 -H @"$h" -X POST -d "{{}}" {target}')
        return on_host(name, script, stdin=f"X-API-Key: {api_key(key_of or inst)}\n")
    return on_host(name, f"curl -sS --fail --max-time 4 {target}")


def test_api_reachable_from_app_hosts_with_the_key():
    for name in hosts_in("app"):
        proc = _curl_from(name, "/api/info", with_key=True)
        assert proc.returncode == 0, proc.stderr
        assert "nodes" in json.loads(proc.stdout)["result"]
        # Without the key the API answers 401.
        assert _curl_from(name, "/api/info").returncode == 22


def test_metrics_reachable_from_the_backup_host():
    for name in hosts_in("backup"):
        proc = _curl_from(name, "/metrics")
        assert proc.returncode == 0, proc.stderr
        assert "centrifugo_" in proc.stdout


@pytest.mark.parametrize("path", ["/api/info", "/metrics", "/health"])
def test_internal_port_unreachable_from_the_storage_host(path):
    for name in hosts_in("storage"):
        proc = _curl_from(name, path)
        assert proc.returncode in (7, 28), (proc.returncode, proc.stderr)  # refused / timed out


@pytest.mark.parametrize("kind", ["internal", "client"])
def test_centrifugo_ports_unreachable_from_the_gateway(kind):
    port = internal() if kind == "internal" else client_port()
    for name in streaming_hosts():
        with pytest.raises(OSError):
            socket.create_connection((addr(name), port), timeout=3).close()


def test_everything_but_the_connection_endpoint_is_404():
    proc = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(CA_CERT),
         "--resolve", f"{WS_DOMAIN}:443:{ws_address()}", f"https://{WS_DOMAIN}/api/info",
         f"https://{WS_DOMAIN}/metrics", f"https://{WS_DOMAIN}/", f"https://{WS_DOMAIN}/connection/websocket",
         f"https://{WS_DOMAIN}/{A.name}/api/info", f"https://{WS_DOMAIN}/{A.name}/metrics",
         f"https://{WS_DOMAIN}/no-such-instance/connection/websocket"],
        capture_output=True, text=True, timeout=30)
    assert proc.stdout == "404" * 7, proc.stderr


def test_security_headers_on_the_ws_site():
    proc = subprocess.run(
        ["curl", "-sS", "-D-", "-o", "/dev/null", "--cacert", str(CA_CERT),
         "--resolve", f"{WS_DOMAIN}:443:{ws_address()}", url().replace("wss://", "https://")],
        capture_output=True, text=True, timeout=30)
    headers = proc.stdout.lower()
    assert "strict-transport-security: max-age=31536000" in headers
    assert "x-content-type-options: nosniff" in headers
    assert "\nserver:" not in headers


# --- the host itself ---------------------------------------------------------------------------


@pytest.mark.each_host("streaming")
def test_one_centrifugo_per_realtime_instance(name):
    h = connect(name)
    assert h.user("centrifugo").shell == "/usr/sbin/nologin"
    assert h.run("/usr/local/bin/centrifugo version").stdout.startswith("Centrifugo v6.9.1")
    unit = h.file("/etc/systemd/system/centrifugo@.service").content_string
    assert "ExecStartPre=/usr/local/bin/centrifugo checkconfig --strict --config /etc/centrifugo/%i.json" in unit
    assert not h.file("/etc/systemd/system/centrifugo.service").exists  # the single Centrifugo is gone
    assert not h.file("/etc/centrifugo/config.json").exists
    listening = h.run("ss -Hltn").stdout
    for inst in centrifugo_model.realtime_instances(registry.load().instances):
        svc = h.service(f"centrifugo@{inst.name}")
        assert svc.is_running and svc.is_enabled, inst.name
        conf = h.file(f"/etc/centrifugo/{inst.name}.json")
        assert (conf.user, conf.group, conf.mode) == ("root", "centrifugo", 0o640)
        assert h.run(f"systemctl show centrifugo@{inst.name} -p LimitNOFILE").stdout.strip() == \
            f"LimitNOFILE={DATA['centrifugo_nofile']}"
        check = h.run(f"runuser -u centrifugo -- /usr/local/bin/centrifugo checkconfig --strict "
                      f"--config /etc/centrifugo/{inst.name}.json")
        assert check.rc == 0, check.stderr
        # Both ports on the private address only: Caddy on every streaming host reaches them.
        assert f"{private(name)}:{client_port(inst)} " in listening
        assert f"{private(name)}:{internal(inst)} " in listening


@pytest.mark.each_host("app")
def test_no_legacy_centrifugo_on_app_hosts(name):
    from services.centrifugo import LegacyCentrifugo

    fact = LegacyCentrifugo()
    found = fact.process(connect(name).run(fact.command()).stdout.splitlines())
    assert found == {"unit": [], "file": [], "container": []}
