"""PowerDNS Authoritative (Debian pdns-server + pdns-backend-pgsql): its own database on
the local PostgreSQL (schema loaded once), port 53 on the private address and localhost,
the HTTP API on the private address for app hosts with a hashed key; zones and records
derived from the inventory and the registry, converged through the API."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from codeb import shared
from codeb.files import put, put_secret
from codeb.inventory import group_addrs, platform_hosts, public_group_addrs, public_ip, public_platform_hosts
from codeb.ops import converge, restart_on_change
from codeb.render import templates

from . import model

render = templates(__file__)

CONF = "/etc/powerdns/pdns.conf"
KEY_FILE = "/etc/powerdns/api-key"
DESIRED = "/etc/powerdns/codeb-zones.json"
SYNC = "/usr/local/lib/codeb/pdns-sync"
SYNC_SOURCE = Path(__file__).with_name("pdns_sync.py")
SYNC_CONFIG = "/etc/powerdns/codeb-sync.json"
STATE = "/var/lib/codeb/powerdns"
SCHEMA = "/usr/share/pdns-backend-pgsql/schema/schema.pgsql.sql"
ACCOUNT = "codeb"


def desired_zones(data, hosts, addrs) -> dict:
    zones = model.dns_zones(data.platform_domain, hosts, addrs, data.projects.instances, ttl=data.dns_ttl)
    return {"zones": [
        {"name": name + ".", "ttl": z["ttl"], "nameservers": z["nameservers"],
         "rrsets": [[n, t, c] for (n, t), c in sorted(z["rrsets"].items())]}
        for name, z in sorted(zones.items())
    ]}


def sync_config(api_url: str) -> str:
    """The configuration of pdns-sync (pdns_sync.py): where the API and its key are, the
    wanted zones, the account of the zones it manages. No secret: the key stays in its file."""
    return json.dumps({"api_url": api_url, "key_file": KEY_FILE, "desired": DESIRED, "account": ACCOUNT},
                      indent=2, sort_keys=True) + "\n"


def rendered(data, private_ip: str, hosts, addrs, public_ip: str | None = None, public_hosts=None,
             public_addrs=None) -> dict:
    """DNS answers on the public address (and the private one, for the platform's hosts);
    the API stays on the private address. Published records carry the public addresses."""
    api_url = f"http://{private_ip}:{data.pdns_api_port}"
    storage_names = [n for n, a in hosts if a in set(addrs.get("storage", []))]
    listen = list(dict.fromkeys(["127.0.0.1", private_ip, public_ip or private_ip]))
    return {
        "conf": render(
            "pdns.conf.j2", pg_port=data.postgresql_port, db=shared.PDNS_DB,
            db_password=data.secrets["pdns_db_password"], listen=listen, ttl=data.dns_ttl,
            soa_ns=shared.fqdn(storage_names[0], data.platform_domain) + ".",
            api_key_hash=model.pdns_api_key_hash(data.secrets["pdns_api_key"]), api_address=private_ip,
            api_port=data.pdns_api_port,
            # App hosts use the API; the storage host itself runs pdns-sync against it.
            api_allow=[f"{a}/32" for a in sorted(set(addrs.get("app", [])) | {private_ip})],
        ),
        "key": data.secrets["pdns_api_key"] + "\n",
        "desired": json.dumps(desired_zones(data, public_hosts or hosts, public_addrs or addrs), indent=2,
                              sort_keys=True) + "\n",
        "sync_config": sync_config(api_url),
        "api_url": api_url,
    }


@deploy("PowerDNS")
def powerdns():
    data = host.data
    r = rendered(data, data.private_ip, platform_hosts(), group_addrs(), public_ip(host),
                 public_platform_hosts(), public_group_addrs())

    apt.packages(name="PowerDNS with the PostgreSQL backend", packages=["pdns-server", "pdns-backend-pgsql"],
                 update=True, cache_time=3600, no_recommends=True)
    files.directory(name=f"{STATE} (applied markers)", path=STATE, user="root", group="root", mode="700")
    # Only our pdns.conf: no bind backend or other drop-ins.
    files.file(name="No Debian bind backend drop-in", path="/etc/powerdns/pdns.d/bind.conf", present=False)

    converge(
        name="PowerDNS schema (loaded once, owned by the pdns role)",
        state_command=(f"runuser -u postgres -- psql -XAtq -d {shared.PDNS_DB} "
                       "-c \"SELECT to_regclass('public.domains') IS NOT NULL\""),
        expected=["t"],
        apply_command=(f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {shared.PDNS_DB} "
                       f"-c 'SET ROLE {shared.PDNS_DB}' -f {SCHEMA}"),
    )
    put_secret(CONF, r["conf"], "640", group="pdns")
    put_secret(KEY_FILE, r["key"], "600")
    put(SYNC, SYNC_SOURCE.read_text(), "755")
    put(SYNC_CONFIG, r["sync_config"], "644")
    put(DESIRED, r["desired"], "644")
    # pdns_server --config=check parses the configuration (and loads the backend's
    # settings) without serving; pdns has no reload, so a checked change restarts it.
    restart_on_change(
        "Check pdns.conf, restart PowerDNS, wait for the API",
        [CONF],
        "systemctl restart pdns.service && "
        # any HTTP answer (401 without the key) means the webserver is up
        f"for i in $(seq 1 30); do curl -s -o /dev/null {r['api_url']}/ && break; sleep 1; done "
        f"&& curl -s -o /dev/null {r['api_url']}/",
        validate="pdns_server --config=check", marker=f"{STATE}/conf.applied",
    )
    systemd.service(name="PowerDNS running", service="pdns.service", running=True, enabled=True)
    converge(
        name="Zones and records from the inventory and the registry",
        state_command=f"{SYNC} --config {SYNC_CONFIG} plan",
        apply_command=f"{SYNC} --config {SYNC_CONFIG} apply",
    )
