"""Hosts on one machine: Linux network namespaces joined by a bridge (root only).

Each "host" is a network namespace of its own with one veth interface on a bridge,
and the bridge lives in a namespace of its own too, so that nothing (no interface,
address or route) is added to the machine's own network: every address is inside a
namespace this creates, and close() deletes them all, whatever happened before.

A partition needs no netfilter (this machine's kernel has none, nor tc's qdiscs):
cut_link() takes a host's interface down, and blackhole() points the host's ARP entry
for a peer at a MAC address nobody has, so its packets to that peer vanish in silence
(the hard case: timeouts, not refusals) while everything else still flows.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000
NOBODY_MAC = "02:00:00:00:00:01"  # locally administered, on no interface
_libc = ctypes.CDLL(None, use_errno=True)


def netns_unavailable() -> str | None:
    """Why this machine cannot run namespace tests, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    return None


def enter_namespace(name: str) -> None:
    """Move the calling thread (only) into a namespace: its new sockets live there."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Network:
    """A bridge in a namespace of its own, and hosts (namespaces) plugged into it."""

    def __init__(self, subnet: str = "10.77.0") -> None:
        self.prefix = f"pc{uuid.uuid4().hex[:6]}"
        self.subnet = subnet
        self.hub = f"{self.prefix}-hub"
        self.hosts: dict[str, str] = {}  # host name -> its address
        self.created: list[str] = []

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def start(self) -> Network:
        self._namespace(self.hub)
        self._ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.hub, "link", "set", "br0", "up")
        return self

    def add_host(self, host: str) -> str:
        """A new host on the bridge; returns its address."""
        address = f"{self.subnet}.{len(self.hosts) + 1}"
        name = self.namespace(host)
        self._namespace(name)
        port = f"v{len(self.hosts) + 1}"
        self._ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", name)  # fmt: skip
        self._ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
        self._ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        self._ip("-n", name, "link", "set", "eth0", "up")
        self._ip("-n", name, "link", "set", "lo", "up")
        self.hosts[host] = address
        return address

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """argv run inside the host (ip netns exec execs it: the PID is the command's)."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def cut_link(self, host: str) -> None:
        self._ip("-n", self.namespace(host), "link", "set", "eth0", "down")

    def restore_link(self, host: str) -> None:
        self._ip("-n", self.namespace(host), "link", "set", "eth0", "up")

    def blackhole(self, host: str, peer: str) -> None:
        """Packets from host to peer vanish silently; all other traffic flows."""
        self._ip("-n", self.namespace(host), "neigh", "replace", self.hosts[peer], "lladdr",
                 NOBODY_MAC, "nud", "permanent", "dev", "eth0")  # fmt: skip

    def heal(self, host: str, peer: str) -> None:
        self._ip("-n", self.namespace(host), "neigh", "del", self.hosts[peer], "dev", "eth0")

    def close(self) -> None:
        """Delete every namespace made here (their interfaces go with them)."""
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.created.clear()

    def leftovers(self) -> list[str]:
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        return [line.split()[0] for line in listed.splitlines() if line.startswith(self.prefix)]

    def _namespace(self, name: str) -> None:
        self._ip("netns", "add", name)
        self.created.append(name)

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)
