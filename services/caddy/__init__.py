"""Caddy: one global Caddyfile, one file per site, validated before reload.

Debian's `caddy` package provides the user, /etc/caddy, the systemd unit and the
directories; its program is replaced by the pinned build (`artifacts['caddy']`: Caddy with
the rate-limit plugin, codeb/artifacts.py) the Debian way: a local dpkg diversion moves the
package's /usr/bin/caddy to /usr/bin/caddy.debian, so an upgrade of the package writes its
binary there and never over ours. A new binary restarts Caddy (a reload keeps the running
program); a configuration change reloads it, and open WebSockets outlive the reload for
`caddy_stream_close_delay` (the sites' reverse_proxy `stream_close_delay`).

Roles call `caddy(sites)` with {site name: site block text}. TLS is data: with
`tls_mode = "acme"` Caddy gets public certificates automatically; with
`tls_mode = "internal"` it signs with the environment's own CA, whose root the
clients trust (local topology).
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import apt, files, systemd

from codeb import artifacts
from codeb.files import put, put_secret
from codeb.ops import APPLIED, converge, record, restart_on_change
from codeb.render import templates

render = templates(__file__)

SITES_DIR = "/etc/caddy/sites"
PKI_DIR = "/etc/caddy/pki"
REPO = Path(__file__).resolve().parent.parent.parent


# The pinned program, where Debian's unit runs it; the package's own, diverted.
PIN = "caddy"
BINARY = "/usr/bin/caddy"
DEBIAN_BINARY = "/usr/bin/caddy.debian"
DIVERT = f"dpkg-divert --local --rename --divert {DEBIAN_BINARY} --add {BINARY}"

# Every check runs the pinned binary (installed before any configuration is written).
VALIDATE_CADDYFILE = f"{BINARY} validate --adapter caddyfile --config {{new}}"
CHECK = f"{BINARY} validate --config /etc/caddy/Caddyfile --adapter caddyfile"
# What Caddy's running configuration is made of (a glob: sites come and go).
WATCHED = ["/etc/caddy/Caddyfile", f"{PKI_DIR}/root.crt", f"{PKI_DIR}/root.key", f"{SITES_DIR}/*.caddy"]
MARKER = f"{APPLIED}/caddy.reload"
# `make release` switches a site itself: it checks, reloads and records the same way.
RELOAD = f"{CHECK} && systemctl reload caddy && {record(WATCHED, MARKER)}"
# A new binary restarts Caddy; the restart also loads the configuration, so it records it too
# (the reload after it then finds nothing to do).
RESTART_MARKER = f"{APPLIED}/caddy.restart"
RESTART = f"systemctl restart caddy && {record(WATCHED, MARKER)}"


def local_binary(spec: dict | None = None) -> Path:
    """The pinned Caddy in this control node's artifact cache (ArtifactError if not built):
    what the deploy uploads, and what the unit tests validate rendered configuration with."""
    return artifacts.lookup(spec or artifacts.pins()[PIN], PIN).path


def validate_site(name: str) -> str:
    """`caddy validate` of the live configuration with this one site replaced by the new file:
    a copy of the sites directory and a Caddyfile that imports the copy, removed afterwards."""
    return ('d=$(mktemp -d) && cp -a ' + SITES_DIR + '/. "$d"/ && cp {new} "$d"/' + name + '.caddy && '
            'sed "s#import ' + SITES_DIR + '/#import $d/#" /etc/caddy/Caddyfile > "$d"/Caddyfile.check && '
            + BINARY + ' validate --adapter caddyfile --config "$d"/Caddyfile.check; rc=$?; rm -rf "$d"; exit $rc')


def tls_directive(tls_mode: str) -> str:
    """The line a site block carries for the environment's TLS mode."""
    return "tls internal" if tls_mode == "internal" else ""


def caddyfile(data) -> str:
    internal = data.tls_mode == "internal"
    return render(
        "Caddyfile.j2",
        acme_email=data.get("acme_email"),
        ca_cert=f"{PKI_DIR}/root.crt" if internal else None,
        ca_key=f"{PKI_DIR}/root.key" if internal else None,
        ca_name=f"{data.platform_domain} platform CA",
    )


@deploy("Caddy")
def caddy(sites: dict[str, str]):
    data = host.data
    apt.packages(name="caddy package", packages=["caddy"], update=True, cache_time=3600)
    pinned = artifacts.lookup(data.artifacts[PIN], PIN)
    # Once: the package's binary moves aside (and every later upgrade of it lands there too).
    converge(name=f"Divert Debian's {BINARY} to {DEBIAN_BINARY}", state_command=f"dpkg-divert --truename {BINARY}",
             apply_command=DIVERT, expected=[DEBIAN_BINARY])
    artifacts.install(pinned, BINARY)

    if data.tls_mode == "internal":
        files.directory(name=f"{PKI_DIR}", path=PKI_DIR, user="root", group="caddy", mode="750")
        ca = data.internal_ca
        put(f"{PKI_DIR}/root.crt", (REPO / ca["cert"]).read_text(), mode="644")
        put_secret(f"{PKI_DIR}/root.key", (REPO / ca["key"]).read_text(), mode="640", group="caddy")
    put("/etc/caddy/Caddyfile", caddyfile(data), validate=VALIDATE_CADDYFILE)
    files.directory(name=SITES_DIR, path=SITES_DIR, user="root", group="root", mode="755")
    for name, body in sorted(sites.items()):
        put(f"{SITES_DIR}/{name}.caddy", body, validate=validate_site(name))

    existing = host.get_fact(FindFiles, path=SITES_DIR, quote_path=True) or []
    for path in existing:
        if path.endswith(".caddy") and Path(path).stem not in sites:
            files.file(name=f"Remove stale site {path}", path=path, present=False)

    systemd.service(name="caddy running", service="caddy", running=True, enabled=True)
    # A changed binary needs a restart (a reload keeps the old program running). It drops open
    # connections, WebSockets included, so it happens only when the pin changes.
    restart_on_change("Check and restart Caddy (binary changed)", [BINARY], RESTART, validate=CHECK,
                      marker=RESTART_MARKER)
    # A config Caddy rejects never reaches the running server; a removed site changes the
    # list of files, so it reloads too.
    restart_on_change("Check and reload Caddy (configuration changed)", WATCHED, "systemctl reload caddy",
                      validate=CHECK, marker=MARKER)
