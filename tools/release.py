#!/usr/bin/env python3
"""Zero-downtime releases and rollbacks of one app instance, from the control node.

    python -m tools.release [--inventory inventory/local.py] release PROJECT ENV IMAGE
    python -m tools.release [--inventory inventory/local.py] rollback PROJECT ENV
    (make release APP=... ENV=... IMAGE=... / make rollback APP=... ENV=...; ON= picks the inventory)

On every app host of the inventory, over SSH as the deploy account:
  1. pull the image and pin it by digest; write the idle slot's unit (checked by
     `quadlet -dryrun`), daemon-reload, start it: Notify=healthy makes the start wait
     for the container's health check; then /api/health must answer 200;
  2. switch the instance's Caddy site to the new slot (caddy validate, reload) and
     check that Caddy now answers from it;
  3. drain (app_drain_seconds), record the new state, stop the old slot.
If the new slot does not become healthy, or Caddy refuses the site, every host is put
back as it was and traffic never leaves the old slot. Rollback is the same switch,
back to the previous slot and the image it still has.

Units and sites are rendered by services/app/render.py from the state written here,
exactly as the next apply renders them, so that apply changes nothing.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from codeb import ssh
from codeb.inventory import load_pyinfra_inventory
from services import caddy
from services.app import model as app_model
from services.app import render as r

REPO = Path(__file__).resolve().parents[1]


class ReleaseError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[release] {msg}", flush=True)


@dataclass
class Remote:
    """One app host, reached with the inventory's SSH settings; commands run under sudo."""

    name: str
    data: object
    old_state: dict = field(default_factory=dict)
    new_state: dict = field(default_factory=dict)
    started: bool = False
    switched: bool = False

    def ssh_cmd(self, remote: str) -> list[str]:
        d = {k: self.data.get(k) for k in ("ssh_key", "ssh_port", "ssh_known_hosts_file", "ssh_user")}
        d["ssh_hostname"] = self.data.get("ssh_hostname") or self.name
        return ssh.command(d, remote)

    def run(self, script: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.ssh_cmd("sudo -n sh -c " + shlex.quote(script)), input=input_text,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise ReleaseError(f"{self.name}: `{script.splitlines()[0][:80]}` failed: "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        return proc

    def write(self, path: str, text: str) -> None:
        q = shlex.quote(path)
        self.run(f"umask 022; cat > {q}.new && mv {q}.new {q}", input_text=text)


def split_repo(image: str) -> str:
    if "@" in image:
        return image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image.rsplit(":", 1)[0] if ":" in last else image


class Release:
    def __init__(self, inventory_path: str, project: str, env: str):
        # Releases read no secrets: the env files on the hosts stay as the apply wrote them.
        self.inv = load_pyinfra_inventory(inventory_path)
        hosts = list(self.inv.get_group("app", default=[]))
        if not hosts:
            raise ReleaseError(f"{inventory_path}: no app hosts")
        data = hosts[0].data
        matches = [i for i in data.projects.instances if i.project == project and i.env == env]
        if not matches:
            known = ", ".join(sorted({f"{i.project}/{i.env}" for i in data.projects.instances}))
            raise ReleaseError(f"no instance {project}/{env} in the registry (known: {known})")
        self.inst = matches[0]
        self.hosts = [Remote(h.name, h.data) for h in hosts if self.inst.group in h.groups]
        self.app_addrs = sorted(h.data.private_ip for h in self.inv.get_group(self.inst.group, default=[]))

    # --- rendering (the same functions the apply uses) ----------------------------------

    def units(self, h: Remote, state: dict) -> dict[str, str]:
        return r.units_for_state(self.inst, state, h.data, self.app_addrs, h.data.private_ip)

    def site(self, h: Remote, slot: str) -> str:
        return r.site(self.inst, slot, h.data, self.app_addrs, h.data.private_ip)

    def site_path(self) -> str:
        from services.caddy import SITES_DIR

        return f"{SITES_DIR}/{r.site_name(self.inst)}.caddy"

    def auth_env(self, h: Remote) -> str:
        return f"REGISTRY_AUTH_FILE={r.AUTH_FILE} " if h.data.get("container_registry_auth") else ""

    # --- steps ---------------------------------------------------------------------------

    def read_state(self, h: Remote) -> dict:
        proc = h.run(f"cat {shlex.quote(app_model.release_state_path(self.inst))} 2>/dev/null || true")
        if not proc.stdout.strip():
            raise ReleaseError(f"{h.name}: {self.inst.name} has no release state yet: apply the deploy first")
        return r.parse_state(proc.stdout, self.inst, h.data)

    def install_units(self, h: Remote, state: dict, only: str | None = None) -> None:
        units = self.units(h, state)
        if only:
            units = {p: t for p, t in units.items() if p == r.unit_file(self.inst, only)}
        # Quadlet checks the candidate units before systemd sees them.
        for path, text in units.items():
            name = shlex.quote(path.rsplit("/", 1)[1])
            check = h.run(f"d=$(mktemp -d); cat > \"$d\"/{name}; QUADLET_UNIT_DIRS=\"$d\" {r.QUADLET} -dryrun "
                          ">/dev/null; rc=$?; rm -rf \"$d\"; exit $rc", input_text=text, check=False)
            if check.returncode != 0:
                raise ReleaseError(f"{h.name}: quadlet -dryrun rejects {path}: {check.stderr.strip()[-400:]}")
        for path, text in units.items():
            h.write(path, text)
        h.run("systemctl daemon-reload")

    def pull(self, h: Remote, image: str) -> str:
        log(f"{h.name}: pull {image}")
        h.run(f"{self.auth_env(h)}podman pull -q {shlex.quote(image)} >/dev/null")
        if "@sha256:" in image:
            return image
        repo = split_repo(image)
        digests = h.run(f"podman image inspect --format '{{{{range .RepoDigests}}}}{{{{println .}}}}{{{{end}}}}' "
                        f"{shlex.quote(image)}").stdout.split()
        pinned = [d for d in digests if d.startswith(repo + "@")]
        return pinned[0] if pinned else image

    def health(self, h: Remote, port: int) -> tuple[bool, str]:
        proc = h.run(f"curl -sS --max-time 5 -w '\\n%{{http_code}}' http://127.0.0.1:{port}/api/health", check=False)
        body, _, code = proc.stdout.rpartition("\n")
        return code.strip() == "200", (body.strip() or proc.stderr.strip())[-300:]

    def start_slot(self, h: Remote, target: str, image: str) -> None:
        staged = dict(h.old_state, slots=dict(h.old_state["slots"], **{target: image}))
        self.install_units(h, staged, only=target)
        svc = r.service(self.inst, target)
        log(f"{h.name}: start {svc} ({image}); it is up when its health check passes")
        h.started = True
        proc = h.run(f"systemctl start {svc}", check=False)
        port = self.inst.slot_ports[target]
        if proc.returncode != 0:
            journal = h.run(f"journalctl -u {svc} -n 4 --no-pager -o cat", check=False).stdout.strip()
            raise ReleaseError(f"{h.name}: {svc} did not become healthy (its health check on /api/health failed "
                               f"or timed out); last log lines:\n{journal[-600:]}")
        ok, detail = self.health(h, port)
        if not ok:
            raise ReleaseError(f"{h.name}: {svc} is running but /api/health on port {port} says: {detail}")
        h.new_state = staged

    def switch_site(self, h: Remote, target: str) -> None:
        h.write(self.site_path(), self.site(h, target))
        h.switched = True
        check = h.run(caddy.CHECK, check=False)
        if check.returncode != 0:
            raise ReleaseError(f"{h.name}: caddy validate rejects the site: {check.stderr.strip()[-400:]}")
        # Reloaded and recorded as the deploy does (codeb/ops.restart_on_change), so the next
        # apply finds Caddy's configuration applied and reloads nothing.
        h.run(caddy.RELOAD)
        want = f"127.0.0.1:{self.inst.slot_ports[target]}" if len(self.app_addrs) <= 1 else None
        domain = self.inst.domains[0]
        for _ in range(20):
            proc = h.run(f"curl -sk --max-time 5 -o /dev/null -D - --resolve {domain}:443:127.0.0.1 "
                         f"https://{domain}/api/health", check=False)
            upstream = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
                        if line.lower().startswith("x-upstream:")]
            if upstream and (want is None or upstream[0] == want):
                log(f"{h.name}: Caddy serves {domain} from {upstream[0]}")
                return
            time.sleep(0.5)
        raise ReleaseError(f"{h.name}: Caddy does not answer {domain} from the new slot")

    def finish(self, h: Remote, target: str, old: str) -> None:
        final = {"active": target, "previous": old, "slots": h.new_state["slots"]}
        h.write(app_model.release_state_path(self.inst), r.state_text(final))
        self.install_units(h, final)
        log(f"{h.name}: stop {r.service(self.inst, old)}")
        h.run(f"systemctl stop {r.service(self.inst, old)}")

    def undo(self, h: Remote, target: str) -> None:
        """Put a host back as it was before this release: old site, old units, new slot stopped."""
        try:
            if h.switched:
                h.write(self.site_path(), self.site(h, h.old_state["active"]))
                h.run(caddy.RELOAD, check=False)
            if h.started:
                h.run(f"systemctl stop {r.service(self.inst, target)}", check=False)
            self.install_units(h, h.old_state)
        except ReleaseError as exc:
            log(f"{h.name}: while undoing: {exc}")

    def switch_to(self, target_of, image_of, pull: bool) -> int:
        for h in self.hosts:
            h.old_state = self.read_state(h)
        target = target_of(self.hosts[0].old_state)
        old = self.hosts[0].old_state["active"]
        if any(h.old_state["active"] != old for h in self.hosts):
            raise ReleaseError(f"{self.inst.name}: app hosts disagree on the active slot; apply the deploy first")
        image = image_of(self.hosts[0].old_state)
        log(f"{self.inst.name}: {old} -> {target} ({image}) on {', '.join(h.name for h in self.hosts)}")
        try:
            for h in self.hosts:
                pinned = self.pull(h, image) if pull else image
                self.start_slot(h, target, pinned)
            for h in self.hosts:
                self.switch_site(h, target)
        except ReleaseError as exc:
            log(f"ABORTED: {exc}")
            for h in self.hosts:
                self.undo(h, target)
            log(f"traffic stays on the {old} slot ({self.hosts[0].old_state['slots'][old]}); nothing else changed")
            return 1
        drain = int(self.hosts[0].data.get("app_drain_seconds", 5))
        log(f"drain {drain}s before stopping the {old} slot")
        time.sleep(drain)
        for h in self.hosts:
            self.finish(h, target, old)
        log(f"{self.inst.name}: {target} slot active with {self.hosts[0].new_state['slots'][target]}")
        return 0

    def release(self, image: str) -> int:
        return self.switch_to(lambda s: app_model.other_slot(s["active"]), lambda s: image, pull=True)

    def rollback(self) -> int:
        state = self.hosts[0].old_state or self.read_state(self.hosts[0])
        if not state.get("previous"):
            raise ReleaseError(f"{self.inst.name}: no previous release to roll back to")
        return self.switch_to(lambda s: s["previous"], lambda s: s["slots"][s["previous"]], pull=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", default="inventory/local.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rel = sub.add_parser("release")
    rel.add_argument("project")
    rel.add_argument("env")
    rel.add_argument("image")
    rb = sub.add_parser("rollback")
    rb.add_argument("project")
    rb.add_argument("env")
    args = parser.parse_args(argv)
    try:
        job = Release(args.inventory, args.project, args.env)
        return job.release(args.image) if args.cmd == "release" else job.rollback()
    except ReleaseError as exc:
        log(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
