"""Derivations of PowerDNS: zones and records from the inventory and the registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance
from codeb.shared import derived_salt, fqdn

# Second-level public suffixes under which a name is registered one label deeper
# (a short list for the registries we use; extend it before adding such a domain).
PUBLIC_SUFFIXES = frozenset({
    "co.kr", "or.kr", "ne.kr", "re.kr", "pe.kr", "go.kr", "ac.kr", "ms.kr", "hs.kr", "es.kr", "sc.kr",
    "kg.kr", "seoul.kr", "co.uk", "org.uk", "com.au", "co.jp", "ne.jp", "com.cn",
})


def registrable_domain(domain: str) -> str:
    labels = domain.lower().rstrip(".").split(".")
    keep = 3 if ".".join(labels[-2:]) in PUBLIC_SUFFIXES else 2
    return ".".join(labels[-keep:])


def pdns_api_key_hash(key: str, salt: bytes | None = None) -> str:
    """PowerDNS (4.6+) hashed api-key: `$scrypt$ln=10,p=1,r=8$<salt b64>$<key b64>`, the salt
    derived from the key so the rendered config does not change between applies."""
    import base64
    import hashlib

    salt = derived_salt(key, "pdns-api-key") if salt is None else salt
    digest = hashlib.scrypt(key.encode(), salt=salt, n=1 << 10, r=8, p=1, dklen=32)
    return f"$scrypt$ln=10,p=1,r=8${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _zone_for(name: str, zones: Iterable[str]) -> str | None:
    best = None
    for zone in zones:
        if (name == zone or name.endswith("." + zone)) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def dns_zones(
    platform_domain: str,
    hosts: Iterable[tuple[str, str]],
    group_addrs: Mapping[str, list[str]],
    instances: Iterable[Instance],
    ttl: int = 300,
) -> dict[str, dict]:
    """Zones served by PowerDNS: {zone: {"nameservers": [...], "rrsets": {(fqdn, type): [content]}}}.

    - the platform zone: every host by name, ws (streaming), api (app), db (storage);
    - every registry domain, in the zone of its registrable domain (or the platform zone
      when it lies inside it), pointing at the hosts of its instance's group.
    Names are absolute (trailing dot); nameservers are the storage hosts' names.
    """
    instances = list(instances)
    hosts = sorted(hosts)
    wanted: dict[str, set[str]] = {}

    def add(name: str, addrs: Iterable[str]):
        wanted.setdefault(name.lower(), set()).update(addrs)

    for name, addr in hosts:
        add(fqdn(name, platform_domain), [addr])
    for short, group in (("ws", "streaming"), ("api", "app"), ("db", "storage")):
        add(fqdn(short, platform_domain), group_addrs.get(group, []))
    for inst in instances:
        for domain in inst.domains:
            add(domain, group_addrs.get(inst.group, []))

    zone_names = {platform_domain} | {registrable_domain(d) for i in instances for d in i.domains}
    # A registrable domain inside the platform zone (platform_domain codeb.kr) is that zone.
    zone_names = {z for z in zone_names if z == platform_domain or _zone_for(z, {platform_domain}) is None}
    storage = set(group_addrs.get("storage", []))
    nameservers = [fqdn(n, platform_domain) + "." for n, a in hosts if a in storage]

    zones: dict[str, dict] = {z: {"nameservers": nameservers, "rrsets": {}} for z in sorted(zone_names)}
    for name, addrs in sorted(wanted.items()):
        zone = _zone_for(name, zone_names)
        if zone is None or not addrs:
            continue
        v4 = sorted(a for a in addrs if ":" not in a)
        v6 = sorted(a for a in addrs if ":" in a)
        if v4:
            zones[zone]["rrsets"][(name + ".", "A")] = v4
        if v6:
            zones[zone]["rrsets"][(name + ".", "AAAA")] = v6
    for z in zones.values():
        z["ttl"] = ttl
    return zones
