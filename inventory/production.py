"""Production: the four servers of the operations manual.

    pyinfra inventory/production.py deploy.py
"""

from codeb.preflight import environment_group

# Host keys are pinned in the repository (make bootstrap records a new host's keys once,
# printing their fingerprints); every connection checks them strictly.
_ssh = {"ssh_user": "deploy", "_sudo": True, "ssh_known_hosts_file": "inventory/known_hosts/production",
        "ssh_strict_host_key_checking": "yes"}

app = [("n1", {"ssh_hostname": "158.247.203.55", "public_ip": "158.247.203.55", "private_ip": "10.78.0.11", **_ssh})]
streaming = [("n2", {"ssh_hostname": "141.164.42.213", "public_ip": "141.164.42.213", "private_ip": "10.78.0.12", **_ssh})]
storage = [("n3", {"ssh_hostname": "64.176.226.119", "public_ip": "64.176.226.119", "private_ip": "10.78.0.13", **_ssh})]
backup = [("n4", {"ssh_hostname": "141.164.37.63", "public_ip": "141.164.37.63", "private_ip": "10.78.0.14", **_ssh})]

# Validates the registry, this inventory and the secrets before any connection.
production = environment_group("production", globals())
