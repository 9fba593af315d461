"""Shared helpers: progress, SSH to the guests, inventory, results and small statistics."""

from __future__ import annotations

import json
import math
import os
import runpy
import shlex
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from codeb import ssh as _ssh  # noqa: E402
from codeb.inventory import Host  # noqa: E402
from lab.topology import inventory_hosts  # noqa: E402

LAB = REPO / ".lab"
CA_CERT = LAB / "ca" / "root.crt"
RESULTS = LAB / "bench" / "results.json"
PY = str(REPO / ".venv" / "bin" / "python")
_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress line with the time since the run started."""
    print(f"[bench +{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


# --- inventory and data -------------------------------------------------------------------------


@cache
def inventory() -> dict[str, Host]:
    """name -> Host (addresses, groups, data) of every host of inventory/local.py."""
    return inventory_hosts()


def hosts_in(group: str) -> list[str]:
    return [n for n, h in inventory().items() if group in h.groups]


def addr(name: str) -> str:
    """The host's public address (reachable from this machine)."""
    return inventory()[name].public_ip


def private(name: str) -> str:
    """The host's private (mesh) address, for commands that run on the guests."""
    return inventory()[name].private_ip


def group_data() -> dict:
    sys.path.insert(0, str(REPO))
    data = runpy.run_path(str(REPO / "group_data" / "all.py"))
    data.update(runpy.run_path(str(REPO / "group_data" / "local.py")))
    return data


def lab_secret(name: str) -> str:
    import yaml

    return yaml.safe_load((LAB / "secrets" / "local.yml").read_text())[name]


# --- running things ----------------------------------------------------------------------------


def ssh(host: str, script: str, stdin: str = "", timeout: float = 120, sudo: bool = True,
        check: bool = False) -> subprocess.CompletedProcess:
    """A shell script on a guest over one SSH session; secrets travel on stdin only."""
    remote = f"sudo -n bash -c {shlex.quote(script)}" if sudo else f"bash -c {shlex.quote(script)}"
    proc = subprocess.run(ssh_command(host, remote), input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{host}: exit {proc.returncode}: {script[:200]}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def ssh_command(host: str, remote: str) -> list[str]:
    """The ssh command line to a guest as the deploy account (codeb/ssh.py: pinned host keys)."""
    return _ssh.command(inventory()[host].data, remote)


def sh(cmd: list[str] | str, timeout: float | None = None, **kw) -> subprocess.CompletedProcess:
    """A command on the control node, from the repository."""
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(cmd, str), **kw)


def stream(cmd: list[str], timeout: float, prefix: str = "  | ", env: dict | None = None,
           quiet: bool = False) -> tuple[int, str, float]:
    """Run a command, echoing its output with a prefix; returns (exit code, output, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    out = []
    assert proc.stdout
    for line in proc.stdout:
        out.append(line)
        if not quiet:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
        if time.monotonic() - start > timeout:
            os.killpg(proc.pid, 9)
            break
    rc = proc.wait()
    return rc, "".join(out), time.monotonic() - start


def wait_for(check, timeout: float, interval: float = 2.0, what: str = "") -> float | None:
    """Seconds until check() is truthy, or None after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 - a failing probe is a "not yet"
            pass
        time.sleep(interval)
    if what:
        log(f"timed out after {timeout:.0f}s waiting for {what}")
    return None


def health_ok() -> tuple[bool, str]:
    proc = sh([PY, "-m", "tools.health", "local"], timeout=180)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return proc.returncode == 0, last


def failing_health_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.rstrip().endswith("FAIL")]


# --- statistics --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict:
    """p50/p95/p99/max in milliseconds, and the sample count."""
    return {"n": len(seconds), **{f"p{p}": round(percentile(seconds, p) * 1000, 2) for p in (50, 95, 99)},
            "max": round(max(seconds) * 1000, 2)}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


# --- results -----------------------------------------------------------------------------------


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_section(section: str, figures: list[dict], extra: dict | None = None) -> None:
    """Store a section's figures: each {"name", "value", "unit", "how", optional "target", "ok"}."""
    results = load_results()
    results[section] = {"at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "figures": figures,
                        **(extra or {})}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))


def figure(name: str, value, unit: str, how: str, target: str | None = None, ok: bool | None = None) -> dict:
    """One measured figure, printed at once with how it was measured."""
    fig = {"name": name, "value": value, "unit": unit, "how": how}
    if target is not None:
        fig["target"] = target
        fig["ok"] = ok
    mark = "" if target is None else f"  [target {target}: {'met' if ok else 'NOT met'}]"
    log(f"FIGURE {name}: {value} {unit}{mark}\n           how: {how}")
    return fig
