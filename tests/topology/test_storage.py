"""The storage host's services on the running topology (PostgreSQL, Redis, Garage, PowerDNS):
checked on the storage host (n3) and with real clients from an app host (n1) and from a host
that is not one (n2): each project reaches only its own database, keys and bucket, over TLS
where the protocol has it, and the registry alone adds and removes a project's access.

Secrets come from the lab's secrets file and reach the client hosts only on stdin
(written to a temporary 0600 file for the duration of one command), never on a
command line. The clients (psql, redis-cli, dig, curl) are the `admin_tools` the
common role installs.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from codeb import registry, shared
from codeb.registry import HOST_GROUPS
from services.app import model as app_model
from services.powerdns import model as powerdns_model
from tests.topology.conftest import REPO, addr, connect, first, group_data, hosts_in, lab_secrets, private, ssh_run

DATA = group_data()
REG = registry.load()


def storage_host() -> str:
    return first("storage")


def app_host() -> str:
    return first("app")


def other_host() -> str:
    """A host that is not an app host."""
    return first("streaming")


def db_ip() -> str:
    """Internal services: the storage host's private (mesh) address."""
    return private(storage_host())


def db_public() -> str:
    """DNS also answers on the public address."""
    return addr(storage_host())


def app_ips() -> list[str]:
    """Published records: the app hosts' public addresses."""
    return sorted(addr(n) for n in hosts_in("app"))


def with_need(need):
    return [i for i in REG.instances if need in i.needs]


def run_with_secret(name: str, secret: str, command: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """Run `command` on `name`; `$SECRET_FILE` is a 0600 file holding `secret`, given on stdin."""
    script = ('umask 077; SECRET_FILE=$(mktemp); trap \'rm -f "$SECRET_FILE"\' EXIT; '
              'cat > "$SECRET_FILE"; export SECRET_FILE; ' + command)
    return ssh_run(name, f"bash -c {shlex.quote(script)}", stdin=secret, timeout=timeout)


def tcp_open(src: str, ip: str, port: int) -> bool:
    proc = ssh_run(src, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' && echo open || echo closed",
                   timeout=30)
    return proc.stdout.strip() == "open"


# --- on the storage host ---------------------------------------------------------------


@pytest.fixture(scope="module")
def n3():
    return connect(storage_host())


@pytest.mark.parametrize("service", [f"postgresql@{DATA['postgresql_version']}-main", "redis-server", "garage",
                                     "pdns"])
def test_service_enabled_and_running(n3, service):
    s = n3.service(service)
    assert s.is_enabled and s.is_running


def listeners(n3, proto: str) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for line in n3.check_output(f"ss -Hln{proto}").splitlines():
        local = line.split()[3]
        host, port = local.rsplit(":", 1)
        out.setdefault(int(port), set()).add(host.strip("[]").split("%")[0])
    return out


def test_listening_only_on_expected_addresses(n3):
    tcp = listeners(n3, "t")
    loop = {"127.0.0.1", "::1"}
    assert tcp[DATA["postgresql_port"]] == loop | {db_ip()}
    assert tcp[DATA["redis_port"]] == loop | {db_ip()}
    for port in (DATA["s3_port"], DATA["garage_rpc_port"], DATA["garage_admin_port"]):
        assert tcp[port] == {db_ip()}
    assert tcp[53] == {"127.0.0.1", db_ip(), db_public()}
    assert tcp[DATA["pdns_api_port"]] == {db_ip()}
    assert 9000 not in tcp and 9001 not in tcp  # no MinIO left
    assert listeners(n3, "u")[53] == {"127.0.0.1", db_ip(), db_public()}
    # Nothing of ours on a wildcard address.
    for port in (DATA["postgresql_port"], DATA["redis_port"], DATA["s3_port"], 53, DATA["pdns_api_port"]):
        assert not tcp[port] & {"0.0.0.0", "*", "::"}


def test_configs_pass_their_checkers(n3):
    v = DATA["postgresql_version"]
    n3.check_output(f"runuser -u postgres -- /usr/lib/postgresql/{v}/bin/postgres -D /var/lib/postgresql/{v}/main "
                    f"-c config_file=/etc/postgresql/{v}/main/postgresql.conf -C listen_addresses")
    errors = n3.check_output("runuser -u postgres -- psql -XAtc "
                             "\"SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL\"")
    assert errors == "0"
    n3.check_output("codeb-redis-check /etc/redis/redis.conf")
    n3.check_output("pdns_server --config=check")
    assert "0 had errors" in n3.check_output("pdnsutil check-all-zones")
    n3.check_output("systemd-analyze verify /etc/systemd/system/garage.service")


def test_checkers_reject_broken_files(n3):
    """The checks used before a reload are real: a broken copy is refused."""
    script = (
        "d=$(mktemp -d); chmod 755 $d; trap 'rm -rf $d' EXIT; "
        "sed \"s#^aclfile .*#aclfile $d/users.acl#\" /etc/redis/redis.conf > $d/redis.conf; "
        "echo 'user broken on nosuchrule' > $d/users.acl; chmod 644 $d/*; "
        "if codeb-redis-check $d/redis.conf 2>/dev/null; then echo redis-accepted; fi; "
        "mkdir $d/pdns; cp /etc/powerdns/pdns.conf $d/pdns/; echo 'no-such-setting=1' >> $d/pdns/pdns.conf; "
        "if pdns_server --config-dir=$d/pdns --config=check 2>/dev/null; then echo pdns-accepted; fi; "
        "echo done"
    )
    assert n3.check_output(script) == "done"


def test_every_project_has_role_database_user_bucket(n3):
    roles = set(n3.check_output("runuser -u postgres -- psql -XAtc "
                                "\"SELECT rolname FROM pg_roles WHERE rolcanlogin\"").split())
    dbs = set(n3.check_output("runuser -u postgres -- psql -XAtc \"SELECT datname FROM pg_database\"").split())
    for inst in with_need("database"):
        assert shared.db_role(inst) in roles and shared.db_name(inst) in dbs
    acl_users = {line.split()[1] for line in n3.check_output("codeb-redis-cli ACL LIST").splitlines()}
    assert {shared.redis_user(i) for i in with_need("redis")} <= acl_users
    listing = n3.check_output("garage -c /etc/garage.toml bucket list").splitlines()[1:]
    buckets = {line.split()[2] for line in listing if len(line.split()) >= 3}
    assert {shared.bucket_name(i) for i in with_need("bucket")} <= buckets


def test_public_connect_revoked_and_owner_set(n3):
    for inst in with_need("database"):
        row = n3.check_output("runuser -u postgres -- psql -XAtc \"SELECT pg_get_userbyid(datdba) || ' ' || "
                              f"has_database_privilege('public', datname, 'CONNECT') FROM pg_database "
                              f"WHERE datname = '{shared.db_name(inst)}'\"")
        assert row == f"{shared.db_role(inst)} false"


def test_garage_health_endpoint(n3):
    n3.check_output(f"curl -fsS -o /dev/null http://{db_ip()}:{DATA['garage_admin_port']}/health")


def test_dns_zones_hold_exactly_the_derived_records(n3):
    """Records that leave the registry leave DNS: nothing beyond what powerdns_model.dns_zones wants."""
    hosts = sorted((n, addr(n)) for n in {h for g in HOST_GROUPS for h in hosts_in(g)})
    addrs = {g: sorted(addr(n) for n in hosts_in(g)) for g in HOST_GROUPS}
    zones = powerdns_model.dns_zones(DATA["platform_domain"], hosts, addrs, REG.instances)
    assert set(n3.check_output("pdnsutil list-all-zones").split()) == set(zones)
    for zone, z in zones.items():
        have = set()
        for line in n3.check_output(f"pdnsutil list-zone {zone}").splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3] in ("A", "AAAA"):
                have.add((parts[0] + ".", parts[3], parts[4]))
        want = {(n, t, c) for (n, t), cs in z["rrsets"].items() for c in cs}
        assert have == want, zone


# --- from an app host -------------------------------------------------------------------


def db_name() -> str:
    """The storage host's platform name: in the server's certificate; /etc/hosts: private address."""
    return f"{storage_host()}.{DATA['platform_domain']}"


CA_FILE = shared.PLATFORM_CA_FILE


def psql(inst_db: str, role: str, password: str, sslmode: str = "require", host: str | None = None):
    # PGPASSFILE line: host:port:database:user:password
    host = host or db_ip()
    tls = f"sslmode={sslmode}" + (f" sslrootcert={CA_FILE}" if sslmode.startswith("verify") else "")
    return run_with_secret(
        app_host(), f"{host}:{DATA['postgresql_port']}:*:{role}:{password}\n",
        f"PGPASSFILE=$SECRET_FILE PGCONNECT_TIMEOUT=5 psql -XAt "
        f"'host={host} port={DATA['postgresql_port']} dbname={inst_db} user={role} {tls}' "
        "-c 'SELECT current_user, current_database(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'")


def test_psql_verifies_the_server_certificate_for_the_storage_hosts_name():
    """What the apps' DATABASE_URL does: verify-full against the platform CA, by name."""
    inst = with_need("database")[0]
    pw = lab_secrets()[shared.secret_db_password(inst)]
    proc = psql(shared.db_name(inst), shared.db_role(inst), pw, sslmode="verify-full", host=db_name())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{shared.db_role(inst)}|{shared.db_name(inst)}|t"
    # The check is real: the same server reached by an address its certificate does not
    # name fails verification.
    proc = psql(shared.db_name(inst), shared.db_role(inst), pw, sslmode="verify-full", host=db_ip())
    assert proc.returncode != 0 and "does not match host name" in proc.stderr, proc.stderr
    # And the apps are configured that way.
    env = connect(app_host()).check_output(f"grep ^DATABASE_URL= {app_model.env_file_path(inst)}")
    by_name = f"@{db_name()}:{DATA['postgresql_port']}/" in env
    verified = env.endswith(f"?sslmode=verify-full&sslrootcert={CA_FILE}")
    del env  # holds the password: never in an assertion message
    assert by_name and verified, "DATABASE_URL does not verify the storage host's certificate by name"


@pytest.mark.parametrize("inst", with_need("database"), ids=lambda i: i.name)
def test_psql_from_app_host_reaches_own_database_over_tls(inst):
    pw = lab_secrets()[shared.secret_db_password(inst)]
    proc = psql(shared.db_name(inst), shared.db_role(inst), pw)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{shared.db_role(inst)}|{shared.db_name(inst)}|t"


def test_psql_refused_on_another_projects_database():
    a, b = with_need("database")[:2]
    proc = psql(shared.db_name(b), shared.db_role(a), lab_secrets()[shared.secret_db_password(a)])
    assert proc.returncode != 0
    assert "no pg_hba.conf entry" in proc.stderr, proc.stderr


def test_psql_refused_without_tls_and_with_wrong_password():
    inst = with_need("database")[0]
    pw = lab_secrets()[shared.secret_db_password(inst)]
    proc = psql(shared.db_name(inst), shared.db_role(inst), pw, sslmode="disable")
    assert proc.returncode != 0 and "no encryption" in proc.stderr, proc.stderr
    proc = psql(shared.db_name(inst), shared.db_role(inst), pw + "x")
    assert proc.returncode != 0 and "password authentication failed" in proc.stderr, proc.stderr


def redis_cli(user: str, password: str, *args: str):
    cmd = " ".join(shlex.quote(a) for a in args)
    return run_with_secret(app_host(), f"REDISCLI_AUTH={password}\n",
                           f"set -a; . $SECRET_FILE; set +a; redis-cli --no-auth-warning --user {user} "
                           f"-h {db_ip()} -p {DATA['redis_port']} {cmd}")


def test_redis_user_limited_to_its_prefix():
    a, b = with_need("redis")[:2]
    user, pw = shared.redis_user(a), lab_secrets()[shared.secret_redis_password(a)]
    prefix, other = shared.redis_prefix(a), shared.redis_prefix(b)
    ok = redis_cli(user, pw, "SET", f"{prefix}:k", "v")
    assert ok.stdout.strip() == "OK", ok.stdout + ok.stderr
    assert redis_cli(user, pw, "GET", f"{prefix}:k").stdout.strip() == "v"
    assert redis_cli(user, pw, "PUBLISH", f"{prefix}:events", "x").stdout.strip().isdigit()
    for args in (("SET", f"{other}:k", "v"), ("GET", "nokey"), ("CONFIG", "GET", "maxmemory"),
                 ("FLUSHALL",), ("PUBLISH", f"{other}:events", "x"), ("KEYS", "*")):
        out = redis_cli(user, pw, *args).stdout
        assert "NOPERM" in out, (args, out)
    redis_cli(user, pw, "DEL", f"{prefix}:k")


def test_redis_default_user_is_off():
    proc = ssh_run(app_host(), f"redis-cli -h {db_ip()} PING", timeout=30)
    assert "NOAUTH" in proc.stdout + proc.stderr


def test_redis_centrifugo_user_has_its_own_prefix():
    pw = lab_secrets()["redis_centrifugo_password"]
    user = shared.CENTRIFUGO_REDIS_USER
    assert redis_cli(user, pw, "XRANGE", "_", "0-0", "0-0").returncode == 0  # Centrifuge's startup probe
    assert "NOPERM" not in redis_cli(user, pw, "XRANGE", "_", "0-0", "0-0").stdout
    assert redis_cli(user, pw, "SET", "centrifugo.test", "1").stdout.strip() == "OK"
    redis_cli(user, pw, "DEL", "centrifugo.test")
    inst = with_need("redis")[0]
    assert "NOPERM" in redis_cli(user, pw, "SET", f"{shared.redis_prefix(inst)}:k", "v").stdout
    assert "NOPERM" in redis_cli(user, pw, "CONFIG", "GET", "maxmemory").stdout


def s3(method: str, inst, path: str, data: str | None = None, secret: str | None = None):
    key = lab_secrets()[shared.secret_s3_key_id(inst)]
    secret = secret or lab_secrets()[shared.secret_s3_key_secret(inst)]
    body = f"--data-binary {shlex.quote(data)}" if data is not None else ""
    return run_with_secret(
        app_host(), f'user = "{key}:{secret}"\n',
        f"curl -sS -o /dev/stderr -w '%{{http_code}}' -K $SECRET_FILE --aws-sigv4 'aws:amz:{DATA['s3_region']}:s3' "
        f"-X {method} {body} http://{db_ip()}:{DATA['s3_port']}/{path}")


def test_s3_client_writes_and_reads_own_bucket_and_is_denied_another():
    a, b = with_need("bucket")[:2]
    own, other = shared.bucket_name(a), shared.bucket_name(b)
    put = s3("PUT", a, f"{own}/topology-test.txt", "hello from n1")
    assert put.stdout == "200", put.stderr
    get = s3("GET", a, f"{own}/topology-test.txt")
    assert get.stdout == "200" and get.stderr == "hello from n1"
    assert s3("PUT", a, f"{other}/topology-test.txt", "x").stdout == "403"
    assert s3("GET", a, f"{other}/").stdout == "403"
    listing = s3("GET", a, "")  # Garage lists only the buckets the key may use
    assert listing.stdout == "200" and f"<Name>{own}</Name>" in listing.stderr
    assert f"<Name>{other}</Name>" not in listing.stderr and listing.stderr.count("<Name>") == 1
    assert s3("GET", a, f"{own}/topology-test.txt", secret="0" * 64).stdout == "403"
    assert s3("DELETE", a, f"{own}/topology-test.txt").stdout == "204"


@pytest.mark.parametrize("name", sorted({d for i in REG.instances for d in i.domains}))
def test_dig_answers_every_registry_domain(name):
    proc = ssh_run(app_host(), f"dig +short +time=3 +tries=1 @{db_ip()} A {name}", timeout=30)
    assert sorted(proc.stdout.split()) == app_ips(), proc.stdout + proc.stderr


def test_dig_answers_platform_names():
    pd = DATA["platform_domain"]
    want = {f"api.{pd}": app_ips(), f"ws.{pd}": sorted(addr(n) for n in hosts_in("streaming")),
            f"db.{pd}": [db_public()], **{f"{n}.{pd}": [addr(n)] for n in ("n1", "n2", "n3", "n4")}}
    for name, ips in want.items():
        out = ssh_run(app_host(), f"dig +short +time=3 +tries=1 @{db_ip()} A {name}", timeout=30).stdout
        assert sorted(out.split()) == ips, name


def test_pdns_api_from_app_host_needs_the_key():
    url = f"http://{db_ip()}:{DATA['pdns_api_port']}/api/v1/servers/localhost/zones"
    ok = run_with_secret(app_host(), f"X-API-Key: {lab_secrets()['pdns_api_key']}\n",
                         f"curl -sS -o /dev/null -w '%{{http_code}}' -H @$SECRET_FILE {url}")
    assert ok.stdout == "200", ok.stderr
    bad = run_with_secret(app_host(), "X-API-Key: wrong\n", f"curl -sS -o /dev/null -w '%{{http_code}}' -H @$SECRET_FILE {url}")
    assert bad.stdout == "401"


# --- reachability -----------------------------------------------------------------------

PRIVATE_PORTS = {"postgresql": DATA["postgresql_port"], "redis": DATA["redis_port"], "s3": DATA["s3_port"],
                 "pdns-api": DATA["pdns_api_port"]}


@pytest.mark.parametrize("service", sorted(PRIVATE_PORTS))
def test_reachable_from_app_host(service):
    assert tcp_open(app_host(), db_ip(), PRIVATE_PORTS[service])


@pytest.mark.parametrize("service", sorted(PRIVATE_PORTS))
def test_non_app_host_reaches_only_what_the_firewall_table_allows(service):
    """From n2 (streaming, not an app host) PostgreSQL, Redis, S3 and the PowerDNS API are
    unreachable. (Redis opens to streaming hosts only when there are several: Centrifugo's engine.)"""
    clustered = len(hosts_in(OTHER_GROUP)) > 1
    sources = DATA["firewall_services"][service]["from"]
    allowed = OTHER_GROUP in sources or (clustered and f"{OTHER_GROUP}@cluster" in sources)
    assert service == "redis" or not allowed
    assert tcp_open(other_host(), db_ip(), PRIVATE_PORTS[service]) is allowed


OTHER_GROUP = "streaming"


def test_dns_port_open_to_everyone():
    assert tcp_open(other_host(), db_ip(), 53)
    assert tcp_open(app_host(), db_ip(), 53)


# --- the registry drives it: add a project, re-apply, remove it ----------------------------

EXTRA = {
    "description": "Temporary project of the storage topology test",
    "image": "ghcr.io/codeb-kr/storetest",
    "needs": {"database": True, "redis": True, "bucket": True, "realtime": False},
    "environments": {"production": {"port": 4490, "domains": ["storetest.net", "www.storetest.net"],
                                    "tag": "1.0.0"}},
}


def apply_storage(apply, env: dict | None = None) -> tuple[int, int, str]:
    """The deploy applied to the storage host only (the apply fixture); (exit code, changes, output)."""
    import re

    proc = apply("--limit", storage_host(), env=env, timeout=1200)
    out = proc.stdout + proc.stderr
    m = re.search(r"^\s*Grand total\s+(\S+)\s+(\S+)", out, re.M)
    changes = 0 if m and m.group(2) == "-" else int(m.group(2)) if m else -1
    return proc.returncode, changes, out[-5000:]


@pytest.fixture(scope="module")
def extra_project(tmp_path_factory, apply):
    """Apply a registry with one more project; afterwards re-apply the real registry."""
    import os

    import yaml

    doc = yaml.safe_load((REPO / "group_data" / "projects.yml").read_text())
    doc["projects"]["storetest"] = EXTRA
    path = tmp_path_factory.mktemp("registry") / "projects.yml"
    path.write_text(yaml.safe_dump(doc))
    env = dict(os.environ, CODEB_REGISTRY_FILE=str(path))
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "tools.cli", "secrets", "local"], cwd=REPO,
                   env=env, check=True, capture_output=True)
    lab_secrets.cache_clear()
    reg = registry.load(path)
    inst = next(i for i in reg.instances if i.project == "storetest")
    state = {"inst": inst, "first": apply_storage(apply, env), "second": apply_storage(apply, env), "removed": None}
    try:
        yield state
    finally:
        if state["removed"] is None:
            apply_storage(apply)


def check_access(inst) -> dict[str, str]:
    secrets = lab_secrets()
    pg = psql(shared.db_name(inst), shared.db_role(inst), secrets[shared.secret_db_password(inst)])
    rd = redis_cli(shared.redis_user(inst), secrets[shared.secret_redis_password(inst)],
                   "SET", f"{shared.redis_prefix(inst)}:k", "v")
    s = s3("PUT", inst, f"{shared.bucket_name(inst)}/probe.txt", "probe")
    dns = ssh_run(app_host(), f"dig +short +time=3 +tries=1 @{db_ip()} A {inst.domains[0]}", timeout=30).stdout
    return {"psql": pg.stdout.strip() or pg.stderr.strip(), "redis": rd.stdout.strip(), "s3": s.stdout,
            "dns": dns.strip()}


def test_added_project_gets_everything_and_second_apply_changes_nothing(extra_project):
    inst = extra_project["inst"]
    rc, changes, out = extra_project["first"]
    assert rc == 0 and changes > 0, out
    rc, changes, out = extra_project["second"]
    assert rc == 0 and changes == 0, out
    access = check_access(inst)
    assert access["psql"] == f"{shared.db_role(inst)}|{shared.db_name(inst)}|t", access
    assert access["redis"] == "OK", access
    assert access["s3"] == "200", access
    assert access["dns"].split() == app_ips(), access


def test_removed_project_loses_access_but_keeps_data(extra_project, n3, apply):
    inst = extra_project["inst"]
    rc, changes, out = apply_storage(apply)
    extra_project["removed"] = (rc, changes)
    assert rc == 0 and changes > 0, out
    access = check_access(inst)
    assert "no pg_hba.conf entry" in access["psql"], access
    assert "WRONGPASS" in access["redis"] or "NOAUTH" in access["redis"], access
    assert access["s3"] == "403", access
    assert access["dns"] == "", access
    # Data kept: the database (role without LOGIN) and the bucket remain.
    assert n3.check_output("runuser -u postgres -- psql -XAtc \"SELECT rolcanlogin FROM pg_roles "
                           f"WHERE rolname = '{shared.db_role(inst)}'\"") == "f"
    assert n3.check_output("runuser -u postgres -- psql -XAtc \"SELECT count(*) FROM pg_database "
                           f"WHERE datname = '{shared.db_name(inst)}'\"") == "1"
    info = n3.check_output(f"garage -c /etc/garage.toml bucket info {shared.bucket_name(inst)}")
    objects = [line.split()[1] for line in info.splitlines() if line.startswith("Objects:")]
    assert objects and int(objects[0]) >= 1, info  # probe.txt is kept
