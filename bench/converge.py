"""Converge: cold (bare guests -> healthy) and no-op (second run), and the no-op against the
same state checks run by hand over one SSH session per host.

Cold: `python -m lab.topology down`, then timed: `lab.topology up` (guests from the cached
base image, booted, SSH up), `demo.build` (skipped when the registry has the image),
`tools.run bootstrap local` (deploy account as root, then the whole deploy.py), and
`tools.health` until every row is ok.

Hand-run checks: a `pyinfra --dry --debug` run of the same deploy logs every command pyinfra
runs on each host to learn its state (its facts: dpkg-query, stat and sha1sum of managed
files, systemctl is-active/is-enabled, id/getent, ...). The same commands, each run once,
go into one shell script per host, executed over one SSH session per host (`sudo sh -s`),
all hosts in parallel, as an admin checking by hand would do.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import (
    LAB,
    PY,
    REPO,
    figure,
    health_ok,
    inventory,
    load_results,
    log,
    ratio,
    save_section,
    sh,
    ssh_command,
    stream,
    wait_for,
)
from tools.run import count_changes

RUNNING = re.compile(r"Running command on (?P<host>[\w.-]+): \(pty=\w+\) (?P<cmd>.*)$")
SUDO = re.compile(r"^sudo -H -n (?:-u root )?")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fact_commands(debug_output: str) -> dict[str, list[str]]:
    """host -> distinct state-check commands from pyinfra's debug log, in order, without sudo."""
    out: dict[str, list[str]] = {}
    for line in ANSI.sub("", debug_output).splitlines():
        m = RUNNING.search(line)
        if not m:
            continue
        cmd = SUDO.sub("", m.group("cmd").strip())
        if "***" in cmd:  # masked arguments cannot be replayed
            continue
        try:
            shlex.split(cmd)
        except ValueError:  # a command spread over several log lines: not replayed
            continue
        cmds = out.setdefault(m.group("host"), [])
        if cmd not in cmds:
            cmds.append(cmd)
    return out


def hand_script(commands: list[str]) -> str:
    """One shell script running every command once; prints how many exited non-zero."""
    lines = ["f=0"] + [f"{c} >/dev/null 2>&1 </dev/null || f=$((f+1))" for c in commands] + ['echo "nonzero=$f"']
    return "\n".join(lines) + "\n"


def last_changes(output: str) -> int | None:
    """Changes in the last pyinfra results table of an output holding several runs."""
    tables = output.split("Grand total")
    return count_changes("Grand total" + tables[-1]) if len(tables) > 1 else None


def run_by_hand(host: str, commands: list[str]) -> tuple[float, int]:
    start = time.monotonic()
    proc = subprocess.run(ssh_command(host, "sudo -n sh -s"), input=hand_script(commands),
                          capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    m = re.search(r"nonzero=(\d+)", proc.stdout)
    return took, int(m.group(1)) if m else -1


def hand_checks() -> tuple[float, dict[str, int]]:
    log("recording the state checks pyinfra runs (pyinfra --dry --debug)")
    rc, out, took = stream([str(REPO / ".venv/bin/pyinfra"), "--dry", "--debug", "inventory/local.py", "deploy.py"],
                           timeout=900, quiet=True)
    (LAB / "logs").mkdir(parents=True, exist_ok=True)
    (LAB / "logs" / "bench-pyinfra-debug.log").write_text(out)
    cmds = fact_commands(out)
    if rc != 0 or not cmds:
        raise RuntimeError(f"pyinfra --dry --debug: exit {rc}, {len(cmds)} hosts with commands")
    counts = {h: len(c) for h, c in cmds.items()}
    total_run = sum(1 for line in out.splitlines() if RUNNING.search(line))
    log(f"state-check commands per host: {counts}; running them by hand, one SSH session per host")
    times, nonzero = [], {}
    for _ in range(2):  # the better of two runs
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(cmds)) as pool:
            res = list(pool.map(lambda item: (item[0], run_by_hand(*item)), cmds.items()))
        times.append(time.monotonic() - start)
        nonzero = {h: r[1] for h, r in res}
    return min(times), {"distinct": counts, "pyinfra_total": total_run, "nonzero": nonzero}


def noop() -> tuple[float, int | None, int]:
    rc, out, took = stream([PY, "-m", "tools.run", "apply", "local", "--expect-no-changes"], timeout=1200,
                           quiet=True)
    return took, count_changes(out), rc


def measure(cold: bool = True) -> list[dict]:
    figures = []
    hosts = len(inventory())
    if not cold:  # keep the last cold-converge figure
        figures += [f for f in load_results().get("converge", {}).get("figures", []) if f["name"].startswith("Cold")]
    if cold:
        log("cold converge: removing the topology (lab.topology down)")
        sh([PY, "-m", "lab.topology", "down"], timeout=300)
        start = time.monotonic()
        rc, _, t_up = stream([PY, "-m", "lab.topology", "up"], timeout=1800)
        if rc:
            raise RuntimeError("lab.topology up failed")
        rc, _, t_img = stream([PY, "-m", "demo.build"], timeout=1800)
        if rc:
            raise RuntimeError("demo.build failed")
        log("cold converge: bootstrap + apply (output in .lab/logs/)")
        rc, out, t_conv = stream([PY, "-m", "tools.run", "bootstrap", "local"], timeout=3600, quiet=True)
        if rc:
            raise RuntimeError(f"cold converge failed (exit {rc}); see .lab/logs/")
        changes = last_changes(out)
        t_health = wait_for(lambda: health_ok()[0], 600, 5, "health")
        total = time.monotonic() - start
        figures.append(figure("Cold converge, bare guests to healthy", round(total, 1), "s",
                              f"lab.topology up {t_up:.1f} s (guests from the cached base image, booted, SSH) + "
                              f"demo image {t_img:.1f} s + bootstrap and apply {t_conv:.1f} s ({changes} operations "
                              f"changed) + health green after {t_health if t_health is None else round(t_health, 1)} s; "
                              f"{hosts} hosts, apt packages from the gateway's apt-cacher-ng (warm cache), Go "
                              "artifacts from the control node's build cache"))
    log("no-op converge (second run), twice")
    runs = [noop() for _ in range(2)]
    for took, changes, rc in runs:
        log(f"  no-op apply: {took:.1f} s, {changes} change(s), exit {rc}")
    best = min(r[0] for r in runs)
    zero = all(r[1] == 0 and r[2] == 0 for r in runs)
    figures.append(figure("No-op converge of all hosts", round(best, 1), "s",
                          f"`python -m tools.run apply local --expect-no-changes` ({hosts} hosts in parallel), "
                          f"best of 2 runs ({', '.join(f'{r[0]:.1f} s' for r in runs)}); changes reported: "
                          f"{[r[1] for r in runs]}", target="<= 20 s and 0 changes", ok=best <= 20 and zero))
    by_hand, counts = hand_checks()
    figures.append(figure("Same state checks by hand", round(by_hand, 1), "s",
                          f"the commands pyinfra ran to read state, from `pyinfra --dry --debug` "
                          f"({counts['pyinfra_total']} run by pyinfra; {sum(counts['distinct'].values())} distinct, "
                          f"per host {counts['distinct']}), each once, in one script per host over one SSH session "
                          f"(sudo sh -s), hosts in parallel, best of 2; commands exiting non-zero (absent files, "
                          f"inactive checks, as under pyinfra): {counts['nonzero']}"))
    r = ratio(best, by_hand)
    figures.append(figure("No-op converge / hand-run checks", r, "x", "the two figures above",
                          target="<= 3", ok=r is not None and r <= 3))
    save_section("converge", figures)
    return figures


if __name__ == "__main__":
    import sys

    measure(cold="--no-cold" not in sys.argv)
