"""Staging: the same shape as production on its own four hosts.

The addresses below are placeholders from the documentation range
(RFC 5737, 192.0.2.0/24): replace them with the staging servers' addresses
before the first `make bootstrap ENV=staging`.
"""

from codeb.preflight import environment_group

# Host keys are pinned in the repository (make bootstrap records a new host's keys once,
# printing their fingerprints); every connection checks them strictly.
_ssh = {"ssh_user": "deploy", "_sudo": True, "ssh_known_hosts_file": "inventory/known_hosts/staging",
        "ssh_strict_host_key_checking": "yes"}

app = [("n1", {"ssh_hostname": "192.0.2.11", "public_ip": "192.0.2.11", "private_ip": "10.78.0.11", **_ssh})]
streaming = [("n2", {"ssh_hostname": "192.0.2.12", "public_ip": "192.0.2.12", "private_ip": "10.78.0.12", **_ssh})]
storage = [("n3", {"ssh_hostname": "192.0.2.13", "public_ip": "192.0.2.13", "private_ip": "10.78.0.13", **_ssh})]
backup = [("n4", {"ssh_hostname": "192.0.2.14", "public_ip": "192.0.2.14", "private_ip": "10.78.0.14", **_ssh})]

staging = environment_group("staging", globals())
