"""Many subscribers of one channel in one process, for the realtime continuity test.

Run by tests/topology/test_realtime_continuity.py, several at once. Each holds connections of
the official client (centrifuge-python), each subscribed with recovery to one `project:`
channel, and records, per client, every publication's `seq` in the order it arrived. The
platform's name resolves to every streaming host (in the order given, so the processes spread
over them): a client whose host goes away reconnects through another one's Caddy, and the
SDK resumes its subscription from the last offset it saw (recovery).

Protocol: argv gives the URL and options; the first stdin line is JSON
{"tokens": [[connection token, subscription token], ...]} (tokens never travel on the
command line); a later "stop" line ends the run. Stdout: JSON lines, "ready", then "result"
with, per client, its state and a summary of what it received (checked by `summarise`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import ssl
import sys
import time

import centrifuge


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def summarise(seqs: list[int]) -> dict:
    """What one client received: the sequence numbers in arrival order, as first, last,
    count, duplicates, out-of-order arrivals and missing numbers between first and last."""
    if not seqs:
        return {"count": 0}
    seen, dupes, disorder = set(), 0, 0
    for prev, cur in zip([None, *seqs[:-1]], seqs, strict=True):
        if cur in seen:
            dupes += 1
        elif prev is not None and cur < prev:
            disorder += 1
        seen.add(cur)
    missing = [s for s in range(min(seen), max(seen) + 1) if s not in seen]
    return {"count": len(seqs), "first": seqs[0], "last": seqs[-1], "duplicates": dupes,
            "out_of_order": disorder, "missing": missing[:20], "missing_count": len(missing)}


class Subscriber(centrifuge.SubscriptionEventHandler):
    def __init__(self):
        self.seqs: list[int] = []
        self.unrecovered = 0

    async def on_publication(self, ctx):
        data = ctx.pub.data
        if isinstance(data, (bytes, bytearray)):
            data = json.loads(data)
        self.seqs.append(int(data["seq"]))

    async def on_subscribed(self, ctx):
        if ctx.was_recovering and not ctx.recovered:
            self.unrecovered += 1  # the history no longer had what it missed: a gap


class Connection(centrifuge.ClientEventHandler):
    """Counts the connection's interruptions: each time it goes back to connecting after having
    been connected (the SDK then reconnects by itself), and a final disconnect."""

    def __init__(self):
        self.connected_once = False
        self.reconnects = 0
        self.disconnects = 0

    async def on_connected(self, ctx):
        self.connected_once = True

    async def on_connecting(self, ctx):
        if self.connected_once:
            self.reconnects += 1

    async def on_disconnected(self, ctx):
        self.disconnects += 1


def resolve(name: str, targets: list[str]) -> None:
    """`name` resolves to every target, in this order (the gateway has no resolver for the zone)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        return [info for t in targets for info in real(t, port, *args, **kwargs)]

    socket.getaddrinfo = getaddrinfo


async def main(args) -> None:
    resolve(args.name, args.targets.split(","))
    tokens = json.loads(sys.stdin.readline())["tokens"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, len(tokens) + 256)), hard))
    ctx = ssl.create_default_context(cafile=args.cafile)
    sem = asyncio.Semaphore(args.concurrency)
    entries: list[tuple] = []
    failed = 0

    async def one(conn_token: str, sub_token: str):
        nonlocal failed
        async with sem:
            events, sub_events = Connection(), Subscriber()
            c = centrifuge.Client(args.url, events=events, token=conn_token, headers={"Origin": args.origin},
                                  ssl_context=ctx, proxy=None, timeout=10.0, min_reconnect_delay=0.2,
                                  max_reconnect_delay=3.0)
            try:
                await c.connect()
                await c.ready(timeout=60)
                sub = c.new_subscription(args.channel, events=sub_events, token=sub_token)
                await sub.subscribe()
                await sub.ready(timeout=60)
                entries.append((c, sub, events, sub_events))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failed += 1
                if failed <= 3:
                    emit(event="error", error=repr(exc)[:300])

    started = time.monotonic()
    await asyncio.gather(*(one(a, b) for a, b in tokens))
    emit(event="ready", connected=len(entries), failed=failed, seconds=round(time.monotonic() - started, 1))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "stop"
    clients = []
    for c, sub, events, sub_events in entries:
        clients.append({
            "connected": c.state == centrifuge.ClientState.CONNECTED,
            "subscribed": sub.state == centrifuge.SubscriptionState.SUBSCRIBED,
            "reconnects": events.reconnects,
            "disconnects": events.disconnects,
            "unrecovered": sub_events.unrecovered,
            **summarise(sub_events.seqs),
        })
    for i in range(0, len(entries), 200):
        await asyncio.gather(*(e[0].disconnect() for e in entries[i:i + 200]), return_exceptions=True)
    emit(event="result", clients=clients, failed=failed)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--name", required=True, help="the ws domain")
    p.add_argument("--targets", required=True, help="addresses it resolves to, comma-separated, in order")
    p.add_argument("--concurrency", type=int, default=25)
    asyncio.run(main(p.parse_args()))
