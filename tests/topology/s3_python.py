"""The topology tests' Python S3 client (tests/topology/test_s3.py): boto3, plus raw HTTP for
the advisories' requests. Run in an app host's network namespace; reads
{endpoint, region, bucket, other_bucket, key_id, secret} as JSON on stdin and prints one JSON
object of results. Secrets never reach a command line."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import sys
import time
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(cfg: dict, secret: str | None = None):
    return boto3.client("s3", endpoint_url=cfg["endpoint"], region_name=cfg["region"],
                        aws_access_key_id=cfg["key_id"], aws_secret_access_key=secret or cfg["secret"],
                        # SigV4 for presigned URLs too (boto3 presigns us-east-1 with SigV2 otherwise,
                        # which Garage does not take: such a URL is refused as anonymous).
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


def code(call) -> str:
    try:
        call()
        return "ok"
    except ClientError as exc:
        return exc.response["Error"]["Code"]


def raw(cfg: dict, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, str]:
    url = urllib.parse.urlsplit(cfg["endpoint"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read().decode(errors="replace")[:300]


def boto(cfg: dict) -> dict:
    s3 = client(cfg)
    bucket, other = cfg["bucket"], cfg["other_bucket"]
    key = f"boto-{time.time_ns()}.txt"
    data = b"hello from the app host\n" * 100
    out = {}
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    out["own_roundtrip"] = hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    out["own_list"] = key in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    out["buckets_listed"] = sorted(b["Name"] for b in s3.list_buckets().get("Buckets", []))
    out["other_put"] = code(lambda: s3.put_object(Bucket=other, Key=key, Body=b"x"))
    out["other_get"] = code(lambda: s3.list_objects_v2(Bucket=other))
    out["create_bucket"] = code(lambda: s3.create_bucket(Bucket=f"{bucket}-new"))
    out["delete_bucket"] = code(lambda: s3.delete_bucket(Bucket=other))
    out["wrong_secret"] = code(lambda: client(cfg, secret="0" * 64).get_object(Bucket=bucket, Key=key))
    s3.delete_object(Bucket=bucket, Key=key)
    out["deleted"] = code(lambda: s3.head_object(Bucket=bucket, Key=key))
    return out


def advisories(cfg: dict) -> dict:
    """The requests of CVE-2026-97731 and CVE-2026-40344/41145, replayed against the server."""
    s3 = client(cfg)
    bucket = cfg["bucket"]
    out = {}
    stamp = time.time_ns()
    # A wrong signature with the right access key (any header-signed request).
    now = dt.datetime.now(dt.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now:%Y%m%d}/{cfg['region']}/s3/aws4_request"
    forged = (f"AWS4-HMAC-SHA256 Credential={cfg['key_id']}/{scope}, "
              f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={'0' * 64}")
    host = urllib.parse.urlsplit(cfg["endpoint"]).netloc
    out["forged_signature"] = raw(cfg, "PUT", f"/{bucket}/forged-{stamp}", {
        "Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "Authorization": forged}, b"forged")[0]
    # The unsigned-trailer path, with the access key and no valid signature: the advisory's
    # write without the secret.
    chunk = b"written without the secret"
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    trailer = {"Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
               "x-amz-trailer": "x-amz-checksum-crc32", "Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(chunk)), "Content-Length": str(len(body))}
    out["unsigned_trailer_forged"] = raw(cfg, "PUT", f"/{bucket}/trailer-{stamp}",
                                         dict(trailer, Authorization=forged.replace(
                                             "x-amz-date", "x-amz-decoded-content-length;x-amz-date;x-amz-trailer")),
                                         body)[0]
    out["unsigned_trailer_anonymous"] = raw(cfg, "PUT", f"/{bucket}/trailer-anon-{stamp}", trailer, body)[0]
    out["trailer_objects_written"] = sum(
        1 for o in s3.list_objects_v2(Bucket=bucket, Prefix="trailer").get("Contents", []) if str(stamp) in o["Key"])
    # A presigned PUT for one object, with an added x-amz-copy-source naming another.
    secret_key = f"secret-{stamp}.txt"
    s3.put_object(Bucket=bucket, Key=secret_key, Body=b"not for the URL holder")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": f"upload-{stamp}.txt"},
                                    ExpiresIn=300)
    parts = urllib.parse.urlsplit(url)
    status, text = raw(cfg, "PUT", f"{parts.path}?{parts.query}",
                       {"Host": host, "x-amz-copy-source": f"/{bucket}/{secret_key}"})
    out["presigned_copy_source"] = status
    out["presigned_copy_source_text"] = text
    out["copy_happened"] = code(lambda: s3.head_object(Bucket=bucket, Key=f"upload-{stamp}.txt")) == "ok"
    s3.delete_object(Bucket=bucket, Key=secret_key)
    s3.delete_object(Bucket=bucket, Key=f"upload-{stamp}.txt")
    return out


def access(cfg: dict) -> dict:
    """Whether the key may list and write its bucket now (the write is kept: data to keep)."""
    s3 = client(cfg)
    return {"list": code(lambda: s3.list_objects_v2(Bucket=cfg["bucket"])),
            "put": code(lambda: s3.put_object(Bucket=cfg["bucket"], Key="access-check.txt", Body=b"kept"))}


def put_block(cfg: dict) -> dict:
    """A 256 KiB object: large enough to be a data block (Garage keeps small ones inline)."""
    import os

    data = os.urandom(256 * 1024)
    key = f"block-{time.time_ns()}.bin"
    client(cfg).put_object(Bucket=cfg["bucket"], Key=key, Body=data)
    return {"key": key, "sha256": hashlib.sha256(data).hexdigest()}


def put_bulk(cfg: dict) -> dict:
    """`mb` MiB in 8 MiB objects (the migration's per-GB measurement): {key: sha256}."""
    import os

    s3, out = client(cfg), {}
    for n in range(max(1, cfg["mb"] // 8)):
        data = os.urandom(8 * 1024 * 1024)
        key = f"bulk/{n:05d}.bin"
        s3.put_object(Bucket=cfg["bucket"], Key=key, Body=data)
        out[key] = hashlib.sha256(data).hexdigest()
    return out


def objects(cfg: dict) -> dict:
    """{key: sha256} of every object in the bucket."""
    s3 = client(cfg)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg["bucket"]):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=cfg["bucket"], Key=o["Key"])["Body"].read()
            out[o["Key"]] = hashlib.sha256(body).hexdigest()
    return out


if __name__ == "__main__":
    cfg = json.load(sys.stdin)
    print(json.dumps({"boto": boto, "advisories": advisories, "access": access, "put_block": put_block, "put_bulk": put_bulk,
           "objects": objects}[sys.argv[1]](cfg)))
