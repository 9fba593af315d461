"""Bad input stops `pyinfra` while it loads the inventory: clear lines, exit 2, no SSH attempt."""

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from codeb import artifacts, registry, secrets, shared

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")


class Listener:
    """A TCP port standing in for the hosts' SSH: records whether anything connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def apply(tmp_path):
    """Run the real pyinfra CLI on deploy.py against a local-shaped inventory whose SSH is our listener."""
    listener = Listener()

    def run(registry_doc=None, secrets_doc=None, groups=None, artifact_cache=None, env_name="local", host=None):
        secrets_file = tmp_path / "secrets.yml"
        if secrets_doc is None:
            reg = registry.load()  # a bad registry stops before secrets are read
            secrets_doc = valid_secrets(reg)
        secrets_file.write_text(yaml.safe_dump(secrets_doc))
        # A throwaway deploy key: the run must not depend on the harness having run (`make up`).
        key_file = tmp_path / "deploy.pub"
        key_file.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx7Zk4P0y1bq3ZPpYQxWm2u8u0F3yYk1e7m1s2d3f4g unit-test\n")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CODEB_SECRETS_FILE": str(secrets_file),
               "CODEB_DEPLOY_PUBLIC_KEY_FILE": str(key_file),
               # The binaries `make artifacts` built (a prerequisite of `make test-unit`).
               "CODEB_ARTIFACT_CACHE": str(artifact_cache or artifacts.CACHE)}
        if registry_doc is not None:
            reg_file = tmp_path / "projects.yml"
            reg_file.write_text(yaml.safe_dump(registry_doc))
            env["CODEB_REGISTRY_FILE"] = str(reg_file)
        host = host or (f'{{"ssh_hostname": "127.0.0.1", "ssh_port": {listener.port}, "public_ip": "192.0.2.%d", '
                        '"private_ip": "10.78.0.%d"}')
        groups = groups or {"app": 1, "streaming": 2, "storage": 3, "backup": 4}
        body = ["from codeb.preflight import environment_group"]
        for group, n in groups.items():
            body.append(f'{group} = [("h{n}", {host % (n, n)})]')
        body.append(f'{env_name} = environment_group("{env_name}", globals())')
        inv = tmp_path / "inventory.py"
        inv.write_text("\n".join(body) + "\n")
        return subprocess.run([PYINFRA, "-y", str(inv), "deploy.py"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)

    yield run, listener
    listener.close()


def errors(proc):
    return [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.startswith("error:")]


def test_duplicate_port_stops_before_any_connection(apply, raw_registry):
    run, listener = apply
    raw_registry["projects"]["videopick"]["environments"]["production"]["port"] = 4000
    proc = run(registry_doc=raw_registry)
    assert proc.returncode == 2
    assert any("'videopick'" in e and "'port' 4000" in e for e in errors(proc)), proc.stderr
    assert "no host was contacted" in proc.stderr
    assert listener.connections == 0


@pytest.mark.parametrize("field,value,expect", [
    ("port", 4600, "outside the production range"),
    ("port", 4499, "green slot on 4500"),
    ("domains", ["workb..net"], "malformed domain"),
    ("flavour", "x", "unknown key 'flavour'"),
    ("group", "web", "unknown host group 'web'"),
])
def test_each_invalid_registry_case_stops_before_any_connection(apply, raw_registry, field, value, expect):
    run, listener = apply
    raw_registry["projects"]["workb"]["environments"]["production"][field] = value
    proc = run(registry_doc=raw_registry)
    assert proc.returncode == 2
    assert any("'workb'" in e and expect in e for e in errors(proc)), proc.stderr
    assert listener.connections == 0


def valid_secrets(reg) -> dict[str, str]:
    """Every required secret, in the shape `make secrets` gives it (Garage's formats included)."""
    shaped = ("garage_rpc_secret", "s3_key_id.", "s3_key_secret.")
    return {n: secrets.generator(n)() if n.startswith(shaped) else "x" * 40
            for n in shared.required_secrets(reg.instances)}


def test_an_s3_key_in_another_format_stops_before_any_connection(apply):
    """A key Garage would refuse (the MinIO era's instance-name ids, a short secret) is named
    in one line, without its value, and no host is contacted."""
    run, listener = apply
    reg = registry.load()
    doc = valid_secrets(reg)
    name = next(n for n in doc if n.startswith("s3_key_id."))
    doc[name] = "minio-era-key-id"
    proc = run(secrets_doc=doc)
    assert proc.returncode == 2
    lines = [e for e in errors(proc) if name in e]
    assert len(lines) == 1 and "Garage's format" in lines[0] and "minio-era-key-id" not in lines[0]
    assert listener.connections == 0


def test_missing_secret_stops_before_any_connection(apply):
    run, listener = apply
    proc = run(secrets_doc={"centrifugo_api_key": "x" * 40})
    assert proc.returncode == 2
    assert any("missing for 'local'" in e and "make secrets ENV=local" in e for e in errors(proc)), proc.stderr
    assert listener.connections == 0


def test_unknown_inventory_group_stops_before_any_connection(apply):
    run, listener = apply
    proc = run(groups={"app": 1, "streaming": 2, "storage": 3, "backup": 4, "web": 5})
    assert proc.returncode == 2
    assert any("group 'web' is not a known host group" in e for e in errors(proc)), proc.stderr
    assert listener.connections == 0


def test_valid_input_does_reach_the_hosts(apply):
    """The control case: with nothing wrong, pyinfra does try to connect (so the tests above can fail)."""
    run, listener = apply
    proc = run()
    assert listener.connections > 0, proc.stdout + proc.stderr


def test_unbuilt_artifacts_stop_before_any_connection(apply, tmp_path):
    """The deploy never compiles: a pin `make artifacts` has not built is one line naming it and the command."""
    run, listener = apply
    empty = tmp_path / "no-artifacts"
    empty.mkdir()
    proc = run(artifact_cache=empty)
    assert proc.returncode == 2
    lines = [e for e in errors(proc) if "artifacts:" in e]
    assert sorted(name for name in artifacts.pins("local") if any(f"artifacts[{name!r}]" in e for e in lines)) \
        == sorted(artifacts.pins("local")), proc.stderr
    assert all("run `make artifacts`" in e for e in lines), proc.stderr
    assert "no host was contacted" in proc.stderr
    assert listener.connections == 0


def test_production_without_explicit_admin_networks_stops_before_any_connection(apply):
    run, listener = apply
    proc = run(env_name="production")
    assert proc.returncode == 2
    assert any("group_data/production.py: 'admin_networks' is empty" in e for e in errors(proc)), proc.stderr
    assert listener.connections == 0


@pytest.mark.parametrize("env", ["production", "staging"])
@pytest.mark.parametrize("net", ["0.0.0.0/0", "::/0", "0.0.0.0/0.0.0.0"])
def test_ssh_open_to_the_whole_internet_is_refused(env, net):
    from codeb.preflight import check_admin_networks
    (line,) = check_admin_networks(env, ["198.51.100.7/32", net])
    assert f"group_data/{env}.py: 'admin_networks' entry {net!r} opens SSH to the whole internet" in line


def test_explicit_admin_networks_pass():
    from codeb.preflight import check_admin_networks
    assert check_admin_networks("production", ["198.51.100.0/24", "2001:db8::/48"]) == []


# Each host entry is formatted with its number twice (see the fixture).
@pytest.mark.parametrize("host,expect", [
    ('{"ssh_hostname": "127.0.0.1", "ssh_port": 1, "n": %d, "private_ip": "10.78.0.%d"}', "has no 'public_ip'"),
    ('{"ssh_hostname": "127.0.0.1", "ssh_port": 1, "public_ip": "192.0.2.%d", "private_ip": "192.0.2.%d"}',
     "outside the private network 10.78.0.0/24"),
    ('{"ssh_hostname": "127.0.0.1", "ssh_port": 1, "public_ip": "10.78.0.%d", "private_ip": "10.78.0.%d"}',
     "'private_ip' equals 'public_ip'"),
])
def test_internal_addresses_must_be_private_and_not_public(apply, host, expect):
    """Nothing internal on a public address: the inventory's addresses are checked before any connection."""
    run, listener = apply
    proc = run(host=host)
    assert proc.returncode == 2
    assert any(expect in e for e in errors(proc)), proc.stderr
    assert listener.connections == 0
