"""Free TCP ports for test servers."""

from __future__ import annotations

import socket

__all__ = ["free_port", "port_open"]


def free_port(address: str = "127.0.0.1") -> int:
    """Return a TCP port on which nothing listens on ``address`` right now.

    The kernel picks it (bind to port 0). There is an unavoidable window
    between this call and the server binding it; the rig's servers are
    started right after, and callers retry on a bind failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``address:port`` is accepted."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
