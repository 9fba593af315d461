"""SSH from the control node, with one host-key policy: pinned keys, strict checking.

Every inventory names its known_hosts file (`ssh_known_hosts_file`: committed under
inventory/known_hosts/ for production and staging, written by the harness for the local
topology) and sets `ssh_strict_host_key_checking = "yes"`. pyinfra and every ssh command line
of the control node (health, release, restore, bootstrap, the benchmarks, the lab harness's
tunnels and its .lab/ssh/config, the topology tests) come from here and trust exactly the
keys in that file. `make bootstrap`
records the keys of hosts the file does not know yet, once, and prints their fingerprints
for the operator to compare with the provider's console; after that a changed key stops
everything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def known_hosts(data: dict) -> Path:
    path = data.get("ssh_known_hosts_file")
    if not path:
        raise SystemExit("error: the inventory sets no ssh_known_hosts_file: host keys must be pinned")
    p = Path(path)
    return p if p.is_absolute() else REPO / p


def settings(data: dict, connect_timeout: int = 10) -> list[tuple[str, str]]:
    """The ssh settings for a host of an inventory, as (keyword, value): its key, its pinned host
    keys, strict checking. Command lines (options) and the lab's ssh config (config) are both
    written from this list, so they cannot differ."""
    pairs = [("BatchMode", "yes"), ("ConnectTimeout", str(connect_timeout)), ("LogLevel", "ERROR"),
             ("StrictHostKeyChecking", "yes"), ("UserKnownHostsFile", str(known_hosts(data))),
             ("GlobalKnownHostsFile", "/dev/null")]
    if data.get("ssh_key"):
        key = Path(data["ssh_key"])
        pairs += [("IdentityFile", str(key if key.is_absolute() else REPO / key)), ("IdentitiesOnly", "yes")]
    if data.get("ssh_port"):
        pairs.append(("Port", str(data["ssh_port"])))
    return pairs


def options(data: dict, connect_timeout: int = 10) -> list[str]:
    """ssh options for a host of an inventory: its key, its pinned host keys, strict checking."""
    return [arg for key, value in settings(data, connect_timeout) for arg in ("-o", f"{key}={value}")]


def command(data: dict, remote: str | None = None, user: str | None = None, connect_timeout: int = 10,
            extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ssh command line to a host of an inventory (as its ssh_user unless `user`), running
    `remote` there; `extra` options (e.g. -N -L ... for a tunnel) come before the destination."""
    user = user or data.get("ssh_user") or "deploy"
    return ["ssh", *options(data, connect_timeout), *extra, f"{user}@{data['ssh_hostname']}",
            *([remote] if remote is not None else [])]


def _quote(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def config(hosts: dict[str, dict]) -> str:
    """An ssh_config with one `Host <name>` entry per host (name -> inventory data), with the
    same settings as command(): what `ssh -F` and testinfra use in the local topology."""
    lines = []
    for name, data in hosts.items():
        lines += [f"Host {name}", f"  HostName {data['ssh_hostname']}", f"  User {data.get('ssh_user') or 'deploy'}"]
        lines += [f"  {key} {_quote(value)}" for key, value in settings(data)]
        lines.append("")
    return "\n".join(lines)


def known_hosts_name(data: dict) -> str:
    """How a host is named in a known_hosts file: its address, with the port when not 22."""
    return _entry_host(data)


def _entry_host(data: dict) -> str:
    port = data.get("ssh_port")
    return f"[{data['ssh_hostname']}]:{port}" if port and int(port) != 22 else data["ssh_hostname"]


def is_known(data: dict) -> bool:
    path = known_hosts(data)
    if not path.exists():
        return False
    proc = subprocess.run(["ssh-keygen", "-F", _entry_host(data), "-f", str(path)], capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def record(name: str, data: dict) -> list[str]:
    """Trust on first use, at bootstrap only: scan the host's keys into the known_hosts file
    and return their fingerprints. Hosts already known are never rescanned."""
    path = known_hosts(data)
    cmd = ["ssh-keyscan", "-T", "10"]
    if data.get("ssh_port"):
        cmd += ["-p", str(data["ssh_port"])]
    scanned = subprocess.run([*cmd, data["ssh_hostname"]], capture_output=True, text=True, timeout=60).stdout
    lines = [line for line in scanned.splitlines() if line and not line.startswith("#")]
    if not lines:
        raise SystemExit(f"error: {name}: no host key could be read from {data['ssh_hostname']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))
    prints = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input="\n".join(lines) + "\n", capture_output=True,
                            text=True).stdout
    return [line for line in prints.splitlines() if line]
