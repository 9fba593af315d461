"""pyinfra's SSH transport runs with Nagle off (codeb/sshtune.py)."""

import socket

import paramiko

from codeb import sshtune


def test_a_paramiko_transport_over_tcp_has_nagle_turned_off():
    sshtune.enable()
    sshtune.enable()  # idempotent: wrapping twice would still work, but must not stack
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        transport = paramiko.Transport(client)
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        transport.close()
    finally:
        client.close()
        server.close()


def test_a_pipe_is_left_alone():
    left, right = socket.socketpair()
    try:
        assert sshtune.set_nodelay(left) is False
    finally:
        left.close()
        right.close()
