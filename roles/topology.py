"""Read the inventory's shape (hosts per group, their private addresses)."""

from pyinfra import inventory

from codeb.registry import HOST_GROUPS


def group_hosts(group: str) -> list:
    return list(inventory.get_group(group, default=[]))


def group_addrs() -> dict[str, list[str]]:
    return {g: sorted(h.data.private_ip for h in group_hosts(g)) for g in HOST_GROUPS}


def platform_hosts() -> list[tuple[str, str]]:
    """(name, private address) of every host of the inventory."""
    seen = {}
    for g in HOST_GROUPS:
        for h in group_hosts(g):
            seen[h.name] = h.data.private_ip
    return sorted(seen.items())
