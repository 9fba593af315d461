#!/usr/bin/env python3
"""The local topology: systemd-nspawn guests on a private bridge.

    python -m lab.topology up        # bridge, apt proxy, guests; idempotent
    python -m lab.topology down      # removes exactly what `up` created
    python -m lab.topology status
    python -m lab.topology registry  # (re)start only the container registry
    python -m lab.topology wait-ssh USER

Hosts and addresses come from inventory/local.py, so adding a host there and
running `make up` creates its guest. The bridge is the lab's public network: each
guest's public address is on it, and the deploy builds the private WireGuard mesh
between the guests over it (through the TUN device each guest is given). The gateway
(this machine, on the bridge, the lab's admin network) offers the guests two services
and nothing else: an apt caching proxy and a container registry. Guests get no
default route.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
RUN = LAB / "run"
GUESTS = LAB / "guests"
SSH_DIR = LAB / "ssh"
KEY = SSH_DIR / "id_ed25519"
CACHE = Path(os.environ.get("CODEB_LAB_CACHE", "/var/cache/codeb-lab"))
BRIDGE = os.environ.get("CODEB_LAB_BRIDGE", "codeb0")
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian/"
# Packages baked into the base image: enough for systemd, SSH and pyinfra.
BASE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2",
    "ca-certificates", "sudo", "nftables", "procps", "iputils-ping", "curl", "gnupg", "less",
]
BASE = CACHE / f"{SUITE}-base-v1"


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def run(*cmd, check=True, **kw):
    return subprocess.run([str(c) for c in cmd], check=check, **kw)


def gateway_data() -> dict:
    return runpy.run_path(str(REPO / "group_data" / "local.py"))


def inventory_groups() -> dict[str, dict]:
    """name -> {"addr": public address, "private": private address, "groups": [...]} for every
    host of inventory/local.py, in inventory order. The harness, the topology tests and the
    benchmarks all read it here. The gateway (this machine) reaches a guest on its public
    address only; the private one lives on the guests' mesh."""
    sys.path.insert(0, str(REPO))
    groups = runpy.run_path(str(REPO / "inventory" / "local.py"))
    hosts: dict[str, dict] = {}
    for group in ("app", "streaming", "storage", "backup"):
        for name, data in groups.get(group, []):
            entry = {"addr": data.get("public_ip") or data["ssh_hostname"], "private": data["private_ip"],
                     "groups": []}
            hosts.setdefault(name, entry)["groups"].append(group)
    return hosts


def inventory_hosts() -> list[tuple[str, str]]:
    """(name, public address) of every host in inventory/local.py, in inventory order."""
    return [(name, h["addr"]) for name, h in inventory_groups().items()]


# --- cached base image --------------------------------------------------------------


def ensure_base() -> None:
    if (BASE / ".complete").exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{BASE.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap {SUITE} into the cache (once per machine)")
    run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, tmp, MIRROR,
        stdout=subprocess.DEVNULL)
    (tmp / "etc/apt/sources.list").write_text(f"deb {MIRROR.rstrip('/')} {SUITE} main\n")
    run("chroot", tmp, "systemctl", "enable", "systemd-networkd", "ssh")
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / ".complete").write_text("ok\n")
    tmp.rename(BASE)


# --- gateway services ------------------------------------------------------------------


def ensure_bridge(gateway: str) -> None:
    if run("ip", "link", "show", BRIDGE, check=False, capture_output=True).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        (RUN / "bridge").write_text(BRIDGE + "\n")
    addrs = run("ip", "-4", "-o", "addr", "show", "dev", BRIDGE, capture_output=True, text=True).stdout
    if f" {gateway}/" not in addrs:
        run("ip", "addr", "add", f"{gateway}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def ensure_apt_proxy(gateway: str, port: int) -> None:
    pidfile = RUN / "apt-cacher-ng.pid"
    if alive(pidfile):
        return
    conf = RUN / "acng"
    conf.mkdir(parents=True, exist_ok=True)
    cache = CACHE / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    (conf / "acng.conf").write_text(
        f"""CacheDir: {cache}
LogDir: {RUN}
Port: {port}
BindAddress: {gateway}
PidFile: {pidfile}
Remap-debrep: file:deb_mirror*.gz /debian ; {MIRROR}
PassThroughPattern: ^$
ExThreshold: 30
"""
    )
    run("/usr/sbin/apt-cacher-ng", "-c", conf, "ForeGround=0")
    for _ in range(50):
        if alive(pidfile):
            return
        time.sleep(0.1)
    raise SystemExit("apt-cacher-ng did not start")


def ensure_registry(gateway: str, port: int) -> None:
    """The topology's container registry (Debian's docker-registry) on the gateway, plain HTTP.

    App hosts pull from it (group_data/local.py: container_registry); tests push the
    demo image to it. Its storage lives in the machine cache, so images survive `down`.
    """
    pidfile = RUN / "registry.pid"
    if alive(pidfile):
        return
    storage = CACHE / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    conf = RUN / "registry.yml"
    conf.write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {gateway}:{port}
"""
    )
    logf = open(RUN / "registry.log", "ab")
    proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection((gateway, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"container registry did not start on {gateway}:{port} (see {RUN / 'registry.log'})")


# --- guests ------------------------------------------------------------------------------


def ensure_key() -> None:
    SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not KEY.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "codeb-lab", "-f", KEY)


CA_DIR = LAB / "ca"


def ensure_ca() -> None:
    """The local environment's root CA: Caddy on the guests signs with it, clients trust it."""
    if (CA_DIR / "root.crt").exists():
        return
    CA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    run("openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-keyout", CA_DIR / "root.key", "-out", CA_DIR / "root.crt", "-days", "3650",
        "-subj", "/CN=codeb.test local platform root CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        stderr=subprocess.DEVNULL)
    os.chmod(CA_DIR / "root.key", 0o600)


def prepare_guest(name: str, addr: str, gateway: str) -> Path:
    root = GUESTS / name
    if (root / ".lab-ready").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    GUESTS.mkdir(parents=True, exist_ok=True)
    log(f"{name}: new guest from the base image")
    run("cp", "-a", "--reflink=auto", BASE, root)
    (root / "etc/hostname").write_text(name + "\n")
    (root / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
    # No Gateway=: the guests have no route beyond the bridge.
    (root / "etc/systemd/network/10-host0.network").write_text(
        f"[Match]\nName=host0\n\n[Network]\nAddress={addr}/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("# no resolver until the platform provides one\n")
    # What a provider gives a fresh server: root reachable with the bootstrap key.
    ssh = root / "root/.ssh"
    ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy(f"{KEY}.pub", ssh / "authorized_keys")
    run("chroot", root, "ssh-keygen", "-A", stdout=subprocess.DEVNULL)
    (root / ".lab-ready").write_text("ok\n")
    return root


def veth(name: str) -> str:
    """The host side of a guest's veth (systemd-nspawn: vb-<machine>, at most 15 characters)."""
    return f"vb-{name}"[:15]


def wait_veth_gone(name: str, timeout: float = 30) -> None:
    """A guest stopped with SIGKILL leaves its veth until the kernel tears its namespace down;
    a new guest of the same name cannot start before."""
    deadline = time.monotonic() + timeout
    while run("ip", "link", "show", veth(name), check=False, capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            log(f"{name}: removing stale {veth(name)}")
            run("ip", "link", "del", veth(name), check=False, capture_output=True)
            return
        time.sleep(0.5)


def start_guest(name: str, root: Path) -> None:
    pidfile = RUN / f"{name}.pid"
    if alive(pidfile):
        return
    wait_veth_gone(name)
    log(f"{name}: boot")
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    logf = open(RUN / f"{name}.console", "ab")
    proc = subprocess.Popen(
        # The TUN device: the lab's kernel has no WireGuard module, so the mesh runs through
        # the userspace implementation (group_data/local.py, wireguard_userspace).
        ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", f"--machine={name}",
         f"--directory={root}", f"--network-bridge={BRIDGE}", "--resolv-conf=off", "--timezone=off",
         "--bind=/dev/net/tun"],
        env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    pidfile.write_text(f"{proc.pid}\n")


def wait_port(addr: str, port: int, timeout: float = 150, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name and not alive(RUN / f"{name}.pid"):
            console = RUN / f"{name}.console"
            tail = console.read_text(errors="replace").splitlines()[-15:] if console.exists() else []
            raise SystemExit(f"{name}: systemd-nspawn exited before SSH answered:\n" + "\n".join(tail))
        try:
            with socket.create_connection((addr, port), timeout=2) as s:
                if s.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{addr}:{port} did not answer within {timeout:.0f}s")


def guest_host_keys(name: str, addr: str) -> list[str]:
    """known_hosts lines for a guest, read from its root filesystem (the harness made the keys)."""
    return [f"{addr} {' '.join(pub.read_text().split()[:2])}"
            for pub in sorted((GUESTS / name / "etc" / "ssh").glob("ssh_host_*_key.pub"))]


def write_known_hosts(hosts) -> None:
    """Every guest's host keys, pinned: pyinfra and ssh check them strictly."""
    lines = [line for name, addr in hosts for line in guest_host_keys(name, addr)]
    (SSH_DIR / "known_hosts").write_text("".join(line + "\n" for line in lines))


def write_ssh_config(hosts, user="deploy") -> None:
    lines = []
    for name, addr in hosts:
        lines += [
            f"Host {name}",
            f"  HostName {addr}",
            f"  User {user}",
            f"  IdentityFile {KEY}",
            "  IdentitiesOnly yes",
            "  StrictHostKeyChecking yes",
            f"  UserKnownHostsFile {SSH_DIR / 'known_hosts'}",
            "  GlobalKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "",
        ]
    (SSH_DIR / "config").write_text("\n".join(lines))


def up() -> None:
    data = gateway_data()
    gateway = data["gateway"]
    proxy_port = int(data["apt_proxy"].rsplit(":", 1)[1])
    RUN.mkdir(parents=True, exist_ok=True)
    ensure_key()
    ensure_ca()
    ensure_base()
    ensure_bridge(gateway)
    ensure_apt_proxy(gateway, proxy_port)
    registry_host, registry_port = data["container_registry"].rsplit(":", 1)
    ensure_registry(registry_host, int(registry_port))
    hosts = inventory_hosts()
    write_ssh_config(hosts)
    # The inventory is the source of truth: a guest whose host left it goes.
    if GUESTS.exists():
        for root in sorted(GUESTS.iterdir()):
            if root.is_dir() and not root.name.startswith(".") and root.name not in {n for n, _ in hosts}:
                log(f"{root.name}: no longer in inventory/local.py, removing its guest")
                stop_pid(RUN / f"{root.name}.pid")
                shutil.rmtree(root)
    for name, addr in hosts:
        start_guest(name, prepare_guest(name, addr, gateway))
    write_known_hosts(hosts)
    for name, addr in hosts:
        wait_port(addr, 22, name=name)
        log(f"{name}: ssh up on {addr}")


def guest_init(name: str) -> str:
    """The PID of a guest's init (systemd-nspawn's child)."""
    nspawn = int((RUN / f"{name}.pid").read_text())
    children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
    inits = [c for c in children if Path(f"/proc/{c}/comm").read_text().strip() in ("systemd", "init")]
    if not inits:
        raise RuntimeError(f"{name}: systemd-nspawn {nspawn} has no init child ({children})")
    return inits[0]


def guest_exec(name: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    """Run a command inside a guest from the gateway (all its namespaces), without SSH: for
    the tests that break SSH on purpose."""
    return subprocess.run(["nsenter", "-t", guest_init(name), "-a", *cmd], capture_output=True, text=True, **kw)


def netns_prefix(name: str) -> list[str]:
    """Run a gateway program in a guest's network namespace only: a client that the network
    sees as that guest (its addresses, its mesh interface), with the gateway's files."""
    return ["nsenter", f"--net=/proc/{guest_init(name)}/ns/net", "--"]


# --- tunnels -----------------------------------------------------------------------------------


@contextlib.contextmanager
def ssh_tunnel(name: str, target: str, port: int, timeout: float = 20):
    """An admin's way to an internal UI: `ssh -L` through guest `name` (as the deploy account)
    to target:port, which sshd permits (group_data/all.py admin_uis). Yields the local URL base."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    proc = subprocess.Popen(["ssh", "-F", str(SSH_DIR / "config"), "-N", "-o", "BatchMode=yes",
                             "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:{target}:{port}", name],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ssh tunnel to {target}:{port} via {name} failed: {proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", local), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ssh tunnel to {target}:{port} via {name} did not open") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- vantage points -----------------------------------------------------------------------
# A network namespace plugged into the public bridge with an address of its own: where the
# topology tests look at the guests from, e.g. "the internet" (an address outside
# admin_networks). Only guests and these namespaces are ever addressed.

VANTAGE_PREFIX = "codeb-"


def ensure_vantage(name: str, address: str) -> str:
    """Create (idempotently) the namespace `codeb-<name>` on the bridge at `address`/24."""
    ns = f"{VANTAGE_PREFIX}{name}"
    if run("ip", "netns", "exec", ns, "true", check=False, capture_output=True).returncode == 0:
        return ns
    veth = f"cbv-{name}"[:15]
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "link", "set", veth, "master", BRIDGE, "up")
    run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    (RUN / f"vantage-{name}").write_text(ns + "\n")
    return ns


def remove_vantages() -> None:
    for marker in sorted(RUN.glob("vantage-*")) if RUN.exists() else []:
        ns = marker.read_text().strip()
        run("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)
        run("ip", "link", "del", f"cbv-{marker.name[len('vantage-'):]}"[:15], check=False, stderr=subprocess.DEVNULL)
        marker.unlink()


def stop_pid(pidfile: Path, timeout: float = 30) -> None:
    pid = alive(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pidfile):
            time.sleep(0.2)
        if alive(pidfile):
            os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def down() -> None:
    remove_vantages()
    if RUN.exists():
        for pidfile in sorted(RUN.glob("*.pid")):
            if pidfile.name not in ("apt-cacher-ng.pid", "registry.pid"):
                log(f"{pidfile.stem}: stop")
                stop_pid(pidfile)
                wait_veth_gone(pidfile.stem)
        stop_pid(RUN / "apt-cacher-ng.pid")
        registry = RUN / "registry.pid"
        stop_pid(registry)
        bridge = RUN / "bridge"
        if bridge.exists():
            run("ip", "link", "del", bridge.read_text().strip(), check=False)
    shutil.rmtree(GUESTS, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)
    log("down")


def status() -> None:
    for name, h in inventory_groups().items():
        state = "running" if alive(RUN / f"{name}.pid") else "stopped"
        print(f"{name:8} {h['addr']:15} {h['private']:15} {state}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "status"
    if cmd == "registry":  # just the registry, for a topology that is already up
        data = gateway_data()
        host_, port_ = data["container_registry"].rsplit(":", 1)
        ensure_registry(host_, int(port_))
    else:
        {"up": up, "down": down, "status": status}[cmd]()
