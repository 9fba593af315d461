"""The baseline's derivations: /etc/hosts entries and the WireGuard mesh's keys and peers."""

import base64

from services.baseline import model as baseline_model


def test_etc_hosts_entries():
    assert baseline_model.etc_hosts_entries([("n2", "10.0.0.12"), ("n1", "10.0.0.11")], "codeb.test") == [
        ("10.0.0.11", "n1.codeb.test", "n1"), ("10.0.0.12", "n2.codeb.test", "n2")]


PEERS = [{"name": "n1", "private_ip": "10.78.0.11", "public_ip": "198.51.100.11"},
         {"name": "n2", "private_ip": "10.78.0.12", "public_ip": "198.51.100.12"},
         {"name": "n3", "private_ip": "10.78.0.13", "public_ip": "198.51.100.13"}]


def test_each_host_gets_its_own_key_and_every_other_host_as_a_peer():
    seed = "s" * 40
    n1 = baseline_model.wireguard_config("n1", PEERS, seed, 51820, "10.78.0.0/24")
    n2 = baseline_model.wireguard_config("n2", PEERS, seed, 51820, "10.78.0.0/24")
    assert n1["address"] == "10.78.0.11/24" and n1["port"] == 51820
    assert [p["name"] for p in n1["peers"]] == ["n2", "n3"]
    assert n1["peers"][0] == {"name": "n2", "endpoint": "198.51.100.12", "allowed_ip": "10.78.0.12",
                              "public_key": baseline_model.wireguard_public_key(n2["private_key"])}
    # n1 knows n2 by the public half of n2's key, and the reverse; no private key is shared.
    assert next(p for p in n2["peers"] if p["name"] == "n1")["public_key"] == \
        baseline_model.wireguard_public_key(n1["private_key"])
    assert n1["private_key"] != n2["private_key"]
    assert n1["private_key"] not in str(n2) and n2["private_key"] not in str(n1)
    assert len(base64.b64decode(n1["private_key"])) == 32 and len(base64.b64decode(n1["peers"][0]["public_key"])) == 32


def test_wireguard_keys_are_per_environment():
    assert baseline_model.wireguard_private_key("a" * 40, "n1") != baseline_model.wireguard_private_key("b" * 40, "n1")
    assert baseline_model.wireguard_private_key("a" * 40, "n1") == baseline_model.wireguard_private_key("a" * 40, "n1")


def test_wireguard_public_key_matches_rfc7748_x25519():
    # RFC 7748 section 6.1: Alice's private key and public key.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert baseline_model.wireguard_public_key(base64.b64encode(private).decode()) == base64.b64encode(public).decode()
