"""Derivations of the baseline every host gets: /etc/hosts and the WireGuard mesh."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping

from codeb.shared import fqdn


def etc_hosts_entries(hosts: Iterable[tuple[str, str]], platform_domain: str) -> list[tuple[str, str, str]]:
    """(address, fqdn, short name) for every platform host, sorted by name."""
    return [(addr, fqdn(name, platform_domain), name) for name, addr in sorted(hosts)]


def wireguard_private_key(seed: str, host_name: str) -> str:
    digest = hmac.new(seed.encode(), f"wireguard:{host_name}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def wireguard_public_key(private_key: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key))  # clamped like `wg pubkey`
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def wireguard_config(host_name: str, peers: Iterable[Mapping], seed: str, port: int, network: str) -> dict:
    """wg0.conf values for one host: its address and key, and every other platform host as a
    peer reached on its public address, allowed only its own private address."""
    peers = list(peers)
    me = next(p for p in peers if p["name"] == host_name)
    prefix = ipaddress.ip_network(network).prefixlen
    return {
        "address": f"{me['private_ip']}/{prefix}",
        "port": port,
        "private_key": wireguard_private_key(seed, host_name),
        "peers": [
            {"name": p["name"], "endpoint": p["public_ip"], "allowed_ip": p["private_ip"],
             "public_key": wireguard_public_key(wireguard_private_key(seed, p["name"]))}
            for p in peers if p["name"] != host_name
        ],
    }
