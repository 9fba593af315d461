"""The storage host (issue 3): PostgreSQL 17, Redis 8, Garage (S3) and PowerDNS.

Everything follows from the registry (host.data.projects) through codeb/derive.py;
adding a project and re-applying gives it a database, a Redis user, a bucket and DNS
records, and removing it removes its access (its data is kept).
"""

from __future__ import annotations

from pyinfra.api import deploy

from .garage import garage
from .postgresql import postgresql
from .powerdns import powerdns
from .redis import redis


@deploy("Storage host")
def storage():
    postgresql()
    redis()
    garage()
    powerdns()  # after PostgreSQL: its backend database lives there
