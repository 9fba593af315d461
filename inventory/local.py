"""The local topology: systemd-nspawn guests on the bridge made by `make up`.

The harness reads this file: adding a host here (say n1-2 in `app`) and running
`make up` creates its guest; no code changes. Each guest's public address is on the
lab's "public" bridge (SSH from the gateway, the public services); its private address
is on the WireGuard mesh the deploy builds (group_data/all.py, private network).
"""

from codeb.preflight import environment_group

_ssh = {
    "ssh_user": "deploy",
    "ssh_key": ".lab/ssh/id_ed25519",
    "ssh_known_hosts_file": ".lab/ssh/known_hosts",
    # The harness writes the guests' host keys here when it creates them: checked strictly.
    "ssh_strict_host_key_checking": "yes",
    "_sudo": True,
}

app = [("n1", {"ssh_hostname": "10.77.0.11", "public_ip": "10.77.0.11", "private_ip": "10.78.0.11", **_ssh})]
# Two streaming hosts: each one's Caddy balances over both Centrifugo nodes of every instance.
streaming = [("n2", {"ssh_hostname": "10.77.0.12", "public_ip": "10.77.0.12", "private_ip": "10.78.0.12", **_ssh}),
             ("n2-2", {"ssh_hostname": "10.77.0.22", "public_ip": "10.77.0.22", "private_ip": "10.78.0.22", **_ssh})]
storage = [("n3", {"ssh_hostname": "10.77.0.13", "public_ip": "10.77.0.13", "private_ip": "10.78.0.13", **_ssh})]
backup = [("n4", {"ssh_hostname": "10.77.0.14", "public_ip": "10.77.0.14", "private_ip": "10.78.0.14", **_ssh})]

local = environment_group("local", globals())
