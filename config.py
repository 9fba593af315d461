"""pyinfra's configuration for every run from this repository (loaded before it connects)."""

from pyinfra import config

from codeb import sshtune

# Fail fast across hosts: one failed host stops every later operation on every host (pyinfra
# raises as soon as more than 0 % of the hosts have failed). Without it, a storage host that
# failed to converge would not stop the app hosts from restarting against it. (pyinfra reads
# settings from this file only through `config`, not from module globals.)
config.FAIL_PERCENT = 0

# Nagle off on the SSH connections: see codeb/sshtune.py.
sshtune.enable()
