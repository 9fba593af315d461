from pyinfra.api import deploy


@deploy("minio")
def minio():
    pass
