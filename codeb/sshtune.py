"""TCP_NODELAY on pyinfra's SSH connections.

paramiko leaves Nagle's algorithm on. Every command pyinfra runs opens a channel and
exchanges a few small packets; with Nagle on, the second of them waits for the
server's delayed ACK (about 40 ms on Linux). A no-op apply runs hundreds of such
commands one operation after another, so that wait dominated it: on the local
topology a bare command took 45 ms per round trip with Nagle and 3.4 ms without.
OpenSSH's own client sets TCP_NODELAY on interactive sessions for the same reason.

`config.py` (which pyinfra loads before it connects) calls `enable()`.
"""

from __future__ import annotations

import socket

import paramiko

_MARK = "_codeb_tcp_nodelay"


def set_nodelay(sock) -> bool:
    """Turn Nagle off on a TCP socket; anything else (a proxy command's pipe) is left alone."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
    except (AttributeError, OSError):
        pass
    return False


def enable() -> None:
    """Make every paramiko Transport turn Nagle off on its socket (idempotent)."""
    original = paramiko.Transport.__init__
    if getattr(original, _MARK, False):
        return

    def __init__(self, sock, *args, **kwargs):
        original(self, sock, *args, **kwargs)
        set_nodelay(self.sock)

    setattr(__init__, _MARK, True)
    paramiko.Transport.__init__ = __init__
