#!/usr/bin/env python3
"""The local topology: systemd-nspawn guests on a private bridge.

    python -m lab.topology up        # bridge, apt proxy, guests; idempotent
    python -m lab.topology down      # removes exactly what `up` created
    python -m lab.topology status
    python -m lab.topology registry  # (re)start only the container registry
    python -m lab.topology up --inventory PATH   # (and status) another inventory file of the local
                                                 # environment, e.g. a copy with an extra host

Hosts and addresses come from inventory/local.py, so adding a host there and
running `make up` creates its guest. The bridge is the lab's public network: each
guest's public address is on it, and the deploy builds the private WireGuard mesh
between the guests over it (through the TUN device each guest is given). The gateway
(this machine, on the bridge, the lab's admin network) offers the guests two services
and nothing else: an apt caching proxy and a container registry. Guests get no
default route.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO))
from codeb import ssh  # noqa: E402
from codeb.inventory import Host, read_inventory, unique_hosts  # noqa: E402

INVENTORY = REPO / "inventory" / "local.py"
LAB = REPO / ".lab"
RUN = LAB / "run"
GUESTS = LAB / "guests"
SSH_DIR = LAB / "ssh"
KEY = SSH_DIR / "id_ed25519"
SSH_CONFIG = SSH_DIR / "config"
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


def sh(*cmd, check=True, **kw):
    """A command on the gateway (this machine)."""
    return subprocess.run([str(c) for c in cmd], check=check, **kw)


def gateway_data() -> dict:
    return runpy.run_path(str(REPO / "group_data" / "local.py"))


def inventory_hosts(inventory: str | Path = INVENTORY) -> dict[str, Host]:
    """name -> Host (public and private address, groups, data) of every host of the local
    inventory (inventory/local.py unless another file is given), in inventory order. The
    gateway (this machine) reaches a guest on its public address only; the private one lives
    on the guests' mesh."""
    return unique_hosts(read_inventory(inventory, validate=False))


# --- cached base image --------------------------------------------------------------


def ensure_base() -> None:
    if (BASE / ".complete").exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{BASE.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap {SUITE} into the cache (once per machine)")
    sh("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, tmp, MIRROR,
        stdout=subprocess.DEVNULL)
    (tmp / "etc/apt/sources.list").write_text(f"deb {MIRROR.rstrip('/')} {SUITE} main\n")
    sh("chroot", tmp, "systemctl", "enable", "systemd-networkd", "ssh")
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / ".complete").write_text("ok\n")
    tmp.rename(BASE)


# --- gateway services ------------------------------------------------------------------


def ensure_bridge(gateway: str) -> None:
    if sh("ip", "link", "show", BRIDGE, check=False, capture_output=True).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        (RUN / "bridge").write_text(BRIDGE + "\n")
    addrs = sh("ip", "-4", "-o", "addr", "show", "dev", BRIDGE, capture_output=True, text=True).stdout
    if f" {gateway}/" not in addrs:
        sh("ip", "addr", "add", f"{gateway}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


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
    sh("/usr/sbin/apt-cacher-ng", "-c", conf, "ForeGround=0")
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
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "codeb-lab", "-f", KEY)


CA_DIR = LAB / "ca"


def ensure_ca() -> None:
    """The local environment's root CA: Caddy on the guests signs with it, clients trust it."""
    if (CA_DIR / "root.crt").exists():
        return
    CA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    sh("openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
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
    sh("cp", "-a", "--reflink=auto", BASE, root)
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
    sh("chroot", root, "ssh-keygen", "-A", stdout=subprocess.DEVNULL)
    (root / ".lab-ready").write_text("ok\n")
    return root


def veth(name: str) -> str:
    """The host side of a guest's veth (systemd-nspawn: vb-<machine>, at most 15 characters)."""
    return f"vb-{name}"[:15]


def wait_veth_gone(name: str, timeout: float = 30) -> None:
    """A guest stopped with SIGKILL leaves its veth until the kernel tears its namespace down;
    a new guest of the same name cannot start before."""
    deadline = time.monotonic() + timeout
    while sh("ip", "link", "show", veth(name), check=False, capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            log(f"{name}: removing stale {veth(name)}")
            sh("ip", "link", "del", veth(name), check=False, capture_output=True)
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


def write_known_hosts(hosts: dict[str, Host]) -> None:
    """Every guest's host keys, pinned in the known_hosts file the inventory names: pyinfra and
    ssh check them strictly."""
    files: dict[Path, list[str]] = {}
    for name, h in hosts.items():
        lines = guest_host_keys(name, ssh.known_hosts_name(h.data))
        files.setdefault(ssh.known_hosts(h.data), []).extend(lines)
    for path, lines in files.items():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text("".join(line + "\n" for line in lines))


def write_ssh_config(hosts: dict[str, Host]) -> None:
    """.lab/ssh/config for `ssh -F` and testinfra: the same settings as every other ssh command
    line (codeb/ssh.py)."""
    SSH_CONFIG.write_text(ssh.config({name: h.data for name, h in hosts.items()}))


def up(inventory: str | Path = INVENTORY) -> None:
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
    hosts = inventory_hosts(inventory)
    write_ssh_config(hosts)
    # The inventory is the source of truth: a guest whose host left it goes.
    if GUESTS.exists():
        for root in sorted(GUESTS.iterdir()):
            if root.is_dir() and not root.name.startswith(".") and root.name not in hosts:
                log(f"{root.name}: no longer in the inventory, removing its guest")
                stop_pid(RUN / f"{root.name}.pid")
                shutil.rmtree(root)
    for name, h in hosts.items():
        start_guest(name, prepare_guest(name, h.public_ip, gateway))
    write_known_hosts(hosts)
    for name, h in hosts.items():
        wait_port(h.public_ip, 22, name=name)
        log(f"{name}: ssh up on {h.public_ip}")


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
    cmd = ssh.command(inventory_hosts()[name].data, extra=["-N", "-o", "ExitOnForwardFailure=yes",
                                                         "-L", f"127.0.0.1:{local}:{target}:{port}"])
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    if sh("ip", "netns", "exec", ns, "true", check=False, capture_output=True).returncode == 0:
        return ns
    veth = f"cbv-{name}"[:15]
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", veth, "master", BRIDGE, "up")
    sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    (RUN / f"vantage-{name}").write_text(ns + "\n")
    return ns


def remove_vantages() -> None:
    for marker in sorted(RUN.glob("vantage-*")) if RUN.exists() else []:
        ns = marker.read_text().strip()
        sh("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)
        sh("ip", "link", "del", f"cbv-{marker.name[len('vantage-'):]}"[:15], check=False, stderr=subprocess.DEVNULL)
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
            sh("ip", "link", "del", bridge.read_text().strip(), check=False)
    shutil.rmtree(GUESTS, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)
    log("down")


def status(inventory: str | Path = INVENTORY) -> None:
    for name, h in inventory_hosts(inventory).items():
        state = "running" if alive(RUN / f"{name}.pid") else "stopped"
        print(f"{name:8} {h.public_ip:15} {h.private_ip:15} {state}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="lab.topology", description=__doc__.split("\n\n")[0])
    parser.add_argument("cmd", nargs="?", default="status", choices=("up", "down", "status", "registry"))
    parser.add_argument("--inventory", default=str(INVENTORY),
                        help="the local environment's inventory file (default inventory/local.py)")
    args = parser.parse_args(argv)
    if args.cmd == "registry":  # just the registry, for a topology that is already up
        data = gateway_data()
        host_, port_ = data["container_registry"].rsplit(":", 1)
        ensure_registry(host_, int(port_))
    elif args.cmd == "down":
        down()
    else:
        {"up": up, "status": status}[args.cmd](args.inventory)


if __name__ == "__main__":
    main(sys.argv[1:])
