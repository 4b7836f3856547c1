"""Loopback ports for the processes tests start (`serve`, the simulator, PostgreSQL)."""

from __future__ import annotations

import random
import socket

UNPICKED_PORTS = range(20_000, 32_000)
"""Below Linux's ephemeral range (32768-60999): a port the kernel hands out for `bind(0)` may be
handed to an outgoing connection (the other xdist worker's) before the process meant to bind it
does, which then fails with "Address already in use"; one drawn from here only to another test
that drew the same number and bound it first."""

_draw = random.SystemRandom()  # not the `random` a test may seed: two workers, the same draws


def free_port() -> int:
    """A loopback port nothing listens on, for a process to bind next."""
    for _ in range(20):
        port = _draw.choice(UNPICKED_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
