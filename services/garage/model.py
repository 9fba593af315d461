"""Derivations of Garage (S3): the buckets and keys the registry wants."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.registry import Instance
from codeb.shared import bucket_name, secret_s3_key_id, secret_s3_key_secret, with_need


def s3_key_name(inst: Instance) -> str:
    """The key's name in Garage: the instance (ids are random, names are for people)."""
    return inst.name


def s3_desired(instances: Iterable[Instance], secrets: Mapping[str, str]) -> list[dict]:
    """Per instance with a bucket: its bucket (global alias) and its key, allowed read and
    write on that bucket only (no owner, no bucket creation)."""
    return [
        {"bucket": bucket_name(i), "name": s3_key_name(i), "key_id": secrets[secret_s3_key_id(i)],
         "secret": secrets[secret_s3_key_secret(i)]}
        for i in with_need(instances, "bucket")
    ]
