"""pyinfra's configuration for every run from this repository (loaded before it connects)."""

from codeb import sshtune

# Nagle off on the SSH connections: see codeb/sshtune.py.
sshtune.enable()
