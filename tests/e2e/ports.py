"""Loopback ports for the servers a test starts.

A port taken from bind(0) is in the kernel's ephemeral range, and the kernel may hand it to
another process (an mpirun daemon's listener, say) between the test's pick and the server's own
bind: the server then cannot listen there, nor can a restarted one. So ports are drawn at random
from below that range, where only an explicit bind takes them, and each is checked free by
binding it. The sockets of one call stay open until all are picked, so its ports are distinct.
"""

import random
import socket


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n):
    low, high = 10000, _ephemeral_low()
    held = []
    try:
        for _ in range(100 * n):
            if len(held) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", random.randrange(low, high) if high - low > 1000 else 0))
                held.append(s)
            except OSError:
                s.close()
        if len(held) < n:
            raise RuntimeError(f"no {n} free loopback ports in [{low}, {high})")
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port():
    return free_ports(1)[0]
