"""The local topology: systemd-nspawn guests on the bridge made by `make up`.

The harness reads this file: adding a host here (say n1-2 in `app`) and running
`make up` creates its guest; no code changes.
"""

from codeb.preflight import environment_group

_ssh = {
    "ssh_user": "deploy",
    "ssh_key": ".lab/ssh/id_ed25519",
    "ssh_known_hosts_file": ".lab/ssh/known_hosts",
    "ssh_strict_host_key_checking": "no",
    "_sudo": True,
}

app = [("n1", {"ssh_hostname": "10.77.0.11", "private_ip": "10.77.0.11", **_ssh})]
streaming = [("n2", {"ssh_hostname": "10.77.0.12", "private_ip": "10.77.0.12", **_ssh})]
storage = [("n3", {"ssh_hostname": "10.77.0.13", "private_ip": "10.77.0.13", **_ssh})]
backup = [("n4", {"ssh_hostname": "10.77.0.14", "private_ip": "10.77.0.14", **_ssh})]

local = environment_group("local", globals())
