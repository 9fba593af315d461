"""Production: the four servers of the operations manual.

    pyinfra inventory/production.py deploy.py
"""

from codeb.preflight import environment_group

_ssh = {"ssh_user": "deploy", "_sudo": True}

app = [("n1", {"ssh_hostname": "158.247.203.55", "private_ip": "158.247.203.55", **_ssh})]
streaming = [("n2", {"ssh_hostname": "141.164.42.213", "private_ip": "141.164.42.213", **_ssh})]
storage = [("n3", {"ssh_hostname": "64.176.226.119", "private_ip": "64.176.226.119", **_ssh})]
backup = [("n4", {"ssh_hostname": "141.164.37.63", "private_ip": "141.164.37.63", **_ssh})]

# Validates the registry, this inventory and the secrets before any connection.
production = environment_group("production", globals())
