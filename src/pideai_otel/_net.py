"""Loopback listening sockets for the kit's own servers (stand-ins, demo services, bridges)."""

from __future__ import annotations

import socket

__all__ = ["listening_socket", "url_of"]


def listening_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Bind before serving, so a busy port is a clear error and port 0 picks a free one race-free.

    IPPROTO_TCP is passed explicitly because asyncio enables TCP_NODELAY only on sockets that say
    so; without it every small reply waits out the peer's delayed ACK (~40 ms).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
