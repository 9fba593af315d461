"""Read the inventory's shape (hosts per group, their private addresses).

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
