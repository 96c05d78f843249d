"""Which sockets a process tree listens on: the loopback check of tests/e2e/test_stack_up.py."""

from __future__ import annotations

import ipaddress
import socket

import psutil


def listening_sockets(pids: set[int]) -> list[tuple[int, str, str]]:
    """(pid, process name, local address) of every TCP socket listening and every UDP socket bound by ``pids``."""
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid in pids and conn.laddr and (conn.status == psutil.CONN_LISTEN or conn.type == socket.SOCK_DGRAM):
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            out.append((conn.pid, name, f"{conn.laddr.ip}:{conn.laddr.port}"))
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]"))
    return ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)
