"""Apply, plan and bootstrap an environment; count what changed.

    python -m tools.run plan ENV                  # --dry --diff; exit 0: no drift, 2: would change, 1: error
    python -m tools.run apply ENV [--expect-no-changes]
    python -m tools.run bootstrap ENV             # bare hosts -> deploy account -> full apply
    ... [--inventory PATH]                        # another inventory file of ENV (default inventory/ENV.py)
    ... [-- PYINFRA ARGS]                         # apply, plan: more pyinfra arguments (--limit, --data)

Output of every run is kept in .lab/logs/ (git-ignored). Secret values never
appear in it: services upload secret-bearing files without showing them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from codeb import ssh
from codeb.inventory import inventory_path, read_inventory, unique_hosts

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
LOGS = REPO / ".lab" / "logs"


def log(msg: str) -> None:
    print(f"[converge] {msg}", flush=True)


def inventory_hosts(inventory: str | Path) -> list[tuple[str, dict]]:
    """(name, data) of every host of an inventory (an environment name or a file), validated."""
    return [(h.name, h.data) for h in unique_hosts(read_inventory(inventory)).values()]


def inventory_arg(env: str, inventory: str | Path | None = None) -> str:
    """pyinfra's inventory argument: inventory/ENV.py, or the file given with --inventory."""
    return str(inventory_path(inventory)) if inventory else f"inventory/{env}.py"


def reachable_as(user: str, data: dict) -> bool:
    return subprocess.run(ssh.command(data, "sudo -n true", user=user, connect_timeout=5), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def pyinfra(args: list[str], name: str, yes: bool = True) -> tuple[int, str]:
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with open(path, "w") as fh:
        proc = subprocess.Popen([PYINFRA, *(["-y"] if yes else []), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        out = []
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
            out.append(line)
        return proc.wait(), "".join(out)


def count_changes(output: str) -> int | None:
    """Operations that changed (or would change) something: pyinfra's results table, Grand total, Success."""
    m = re.search(r"^\s*Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M)
    if not m:
        return None
    return 0 if m.group(2) == "-" else int(m.group(2))


CHANGE_ROW = re.compile(r"^\s+(?P<op>\S.*?)\s{2,}(?P<change>-|\d+ \([^)]*\))\s{2,}(?:-|\d+ \([^)]*\))\s*$")


def planned_changes(output: str) -> list[str] | None:
    """Operations pyinfra's dry run says would change, from its "Detected changes" table."""
    if "--> Detected changes:" not in output:
        return None
    table = output.split("--> Detected changes:", 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        m = CHANGE_ROW.match(line)
        if not m:
            break
        if m.group("change") != "-":
            rows.append(f"{m.group('op')}: {m.group('change')}")
    return rows


def apply(env: str, expect_no_changes: bool = False, inventory: str | Path | None = None,
          extra: list[str] | tuple[str, ...] = ()) -> int:
    start = time.monotonic()
    rc, out = pyinfra([inventory_arg(env, inventory), "deploy.py", *extra], f"apply-{env}")
    took = time.monotonic() - start
    changes = count_changes(out)
    log(f"{took:.1f}s, {changes} change(s), exit {rc}")
    if rc:
        return rc
    if changes is None:
        log("could not read pyinfra's results table")
        return 1
    if expect_no_changes and changes:
        log("FAIL: a second apply must change nothing")
        return 3
    return 0


def plan(env: str, inventory: str | Path | None = None, extra: list[str] | tuple[str, ...] = ()) -> int:
    # Without -y pyinfra prints its table of detected changes; --dry stops before executing.
    rc, out = pyinfra(["--dry", "--diff", inventory_arg(env, inventory), "deploy.py", *extra], f"plan-{env}",
                      yes=False)
    changes = planned_changes(out)
    if rc or changes is None:
        return 1
    for row in changes:
        log(f"would change: {row}")
    log(f"plan: {len(changes)} operation(s) would change something" if changes else "plan: no changes (no drift)")
    return 2 if changes else 0


def bootstrap(env: str, inventory: str | Path | None = None) -> int:
    """Fresh hosts reachable as root get the deploy account, then the whole deploy runs."""
    hosts = inventory_hosts(inventory or env)
    # Trust on first use, here only: a host the known_hosts file does not know yet gets its
    # keys recorded (fingerprints printed); a known host is always checked strictly.
    for name, data in hosts:
        if not ssh.is_known(data):
            for line in ssh.record(name, data):
                log(f"recorded host key of {name}: {line}")
    fresh = [name for name, data in hosts if not reachable_as(data.get("ssh_user", "deploy"), data)]
    if fresh:
        log(f"bootstrap as root: {', '.join(fresh)}")
        limits = [arg for name in fresh for arg in ("--limit", name)]
        rc, _ = pyinfra([inventory_arg(env, inventory), "bootstrap.py", "--user", "root", *limits],
                        f"bootstrap-{env}")
        if rc:
            return rc
    return apply(env, inventory=inventory)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("plan", "apply", "bootstrap"):
        raise SystemExit(__doc__)
    cmd, env, *flags = argv
    extra: list[str] = []
    if "--" in flags:
        at = flags.index("--")
        flags, extra = flags[:at], flags[at + 1:]
        if cmd == "bootstrap":
            raise SystemExit(__doc__)
    inventory = None
    if "--inventory" in flags:
        at = flags.index("--inventory")
        if at + 1 >= len(flags):
            raise SystemExit(__doc__)
        inventory = flags.pop(at + 1)
        flags.pop(at)
    if cmd == "plan":
        return plan(env, inventory, extra)
    if cmd == "apply":
        return apply(env, expect_no_changes="--expect-no-changes" in flags, inventory=inventory, extra=extra)
    return bootstrap(env, inventory)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
