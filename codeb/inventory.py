"""Read the inventory's shape (hosts per group, their private and public addresses).

Every host has a private address (`private_ip`, on the private network: the WireGuard
mesh, or a provider VPC) and a public one (`public_ip`, where SSH and the public
services answer). Internal services bind to and talk over the private address only.

Each function takes an Inventory; by default pyinfra's current one, so unit
tests can pass an inventory they loaded without connecting.
"""

from pyinfra import inventory as _current

from codeb.registry import HOST_GROUPS


def group_hosts(group: str, inv=None) -> list:
    return list((_current if inv is None else inv).get_group(group, default=[]))


def group_addrs(inv=None) -> dict[str, list[str]]:
    return {g: sorted(h.data.private_ip for h in group_hosts(g, inv)) for g in HOST_GROUPS}


def platform_hosts(inv=None) -> list[tuple[str, str]]:
    """(name, private address) of every host of the inventory."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g, inv):
            seen[h.name] = h.data.private_ip
    return sorted(seen.items())


def public_ip(h) -> str:
    return h.data.get("public_ip") or h.data.get("ssh_hostname") or h.name


def public_group_addrs(inv=None) -> dict[str, list[str]]:
    return {g: sorted(public_ip(h) for h in group_hosts(g, inv)) for g in HOST_GROUPS}


def public_platform_hosts(inv=None) -> list[tuple[str, str]]:
    """(name, public address) of every host of the inventory."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g, inv):
            seen[h.name] = public_ip(h)
    return sorted(seen.items())


def mesh_peers(inv=None) -> list[dict]:
    """Every host of the inventory as a private-network peer: name, private and public address."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g, inv):
            seen[h.name] = {"name": h.name, "private_ip": h.data.private_ip, "public_ip": public_ip(h)}
    return [seen[n] for n in sorted(seen)]
