from pyinfra.api import deploy


@deploy("redis")
def redis():
    pass
