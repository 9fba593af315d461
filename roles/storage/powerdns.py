from pyinfra.api import deploy


@deploy("powerdns")
def powerdns():
    pass
