"""One subscriber process of the real-time benchmark (run by bench/realtime.py).

Holds many connections of the official client (centrifuge-python) in one event loop,
each subscribed to the benchmark channel, and records for every publication received
the latency `now - data["sent"]` (the publisher's wall clock; the guests share the
gateway's kernel clock).

Protocol: argv gives the URL and options; the first stdin line is JSON
{"tokens": [[connection token, subscription token], ...]} (tokens never travel on the
command line); a later "stop" line ends the run. Stdout: JSON lines, "progress",
"ready", then "result" with every sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time

import centrifuge


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Recorder(centrifuge.SubscriptionEventHandler):
    def __init__(self, samples: list):
        self.samples = samples

    async def on_publication(self, ctx):
        now = time.time()
        data = ctx.pub.data
        if isinstance(data, (bytes, bytearray)):  # Protobuf protocol: the JSON payload as bytes
            data = json.loads(data)
        self.samples.append((data["seq"], now - float(data["sent"])))


class Events(centrifuge.ClientEventHandler):
    def __init__(self, counters: dict):
        self.counters = counters

    async def on_disconnected(self, ctx):
        self.counters["disconnects"] += 1


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def pin_name(spec: str | None) -> None:
    """--resolve NAME=ADDR: the gateway has no resolver for the platform zone."""
    if not spec:
        return
    import socket

    name, target = spec.split("=", 1)
    real = socket.getaddrinfo

    def getaddrinfo(host, *a, **kw):
        return real(target if host == name else host, *a, **kw)

    socket.getaddrinfo = getaddrinfo


async def main(args) -> None:
    pin_name(args.resolve)
    tokens = json.loads(sys.stdin.readline())["tokens"]
    limit = raise_nofile(len(tokens) + 256)
    ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    samples: list = []
    counters = {"disconnects": 0, "failed": 0}
    rec = Recorder(samples)
    events = Events(counters)
    sem = asyncio.Semaphore(args.concurrency)
    clients = []
    connected = 0
    started = time.monotonic()

    async def one(conn_token: str, sub_token: str):
        nonlocal connected
        async with sem:
            c = centrifuge.Client(args.url, events=events, token=conn_token, headers={"Origin": args.origin},
                                  ssl_context=ctx, proxy=None, timeout=10.0, max_reconnect_delay=5.0,
                                  use_protobuf=args.protobuf)
            try:
                await c.connect()
                await c.ready(timeout=30)
                sub = c.new_subscription(args.channel, events=rec, token=sub_token)
                await sub.subscribe()
                await sub.ready(timeout=30)
                clients.append(c)
                connected += 1
                if connected % 250 == 0:
                    emit(event="progress", connected=connected, seconds=round(time.monotonic() - started, 1))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                counters["failed"] += 1
                if counters["failed"] <= 3:
                    emit(event="error", error=repr(exc)[:300])
                try:
                    await c.disconnect()
                except Exception:  # noqa: BLE001
                    pass

    await asyncio.gather(*(one(a, b) for a, b in tokens))
    emit(event="ready", connected=connected, failed=counters["failed"], nofile=limit,
         seconds=round(time.monotonic() - started, 1))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    held = sum(1 for c in clients if c.state == centrifuge.ClientState.CONNECTED)
    disconnects_before_stop = counters["disconnects"]
    for i in range(0, len(clients), 200):
        await asyncio.gather(*(c.disconnect() for c in clients[i:i + 200]), return_exceptions=True)
    emit(event="result", samples=samples, held=held, disconnects=disconnects_before_stop)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--cafile")
    p.add_argument("--resolve")
    p.add_argument("--protobuf", action="store_true", help="Protobuf protocol instead of JSON")
    p.add_argument("--concurrency", type=int, default=50)
    asyncio.run(main(p.parse_args()))
