"""Two "hosts" on one machine: two network namespaces joined by a veth pair, made and removed by the test.

Each namespace has its own loopback and one address (10.200.0.1 and 10.200.0.2, /24), assigned inside the
namespace only: the machine's own interfaces, routes and ports are untouched, and the two processes reach
each other only over the veth pair, as two machines on one network would. Needs root (CAP_SYS_ADMIN and
CAP_NET_ADMIN) and iproute2's `ip`; `skip_reason()` says why not where they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SUBNET = "10.200.0"


@dataclass(frozen=True)
class Host:
    """One namespace: its name (for `ip netns exec`) and its address on the veth link."""

    namespace: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def skip_reason() -> str | None:
    """Why two namespaces cannot be made here, or None when they can (tried: made and deleted at once)."""
    if shutil.which("ip") is None:
        return "no `ip` binary (iproute2: apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN); run the tests as root or in a privileged container"
    probe = f"dlrun-probe-{os.getpid()}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip() or made.returncode}"
    _ip("netns", "delete", probe)
    return None


@contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two namespaces linked by a veth pair, deleted afterwards (their veth ends with them), even on failure."""
    tag = str(os.getpid())
    hosts = (Host(f"dlrun-{tag}-a", f"{SUBNET}.1"), Host(f"dlrun-{tag}-b", f"{SUBNET}.2"))
    made: list[str] = []
    try:
        for host in hosts:
            _check(_ip("netns", "add", host.namespace))
            made.append(host.namespace)
        ends = (f"dl{tag}a", f"dl{tag}b")  # interface names: at most 15 characters
        _check(_ip("link", "add", ends[0], "netns", hosts[0].namespace, "type", "veth",
                   "peer", "name", ends[1], "netns", hosts[1].namespace))  # fmt: skip
        for host, end in zip(hosts, ends, strict=True):
            _check(_ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", end))
            _check(_ip("-n", host.namespace, "link", "set", end, "up"))
            _check(_ip("-n", host.namespace, "link", "set", "lo", "up"))
        yield hosts
    finally:
        for namespace in made:
            _ip("netns", "delete", namespace)


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(result.args)} failed: {result.stderr.strip()}")
