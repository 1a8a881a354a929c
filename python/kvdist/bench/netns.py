"""Two hosts on one machine: network namespaces joined by veth pairs.

The Python twin of tests/cpp/support/netns.{h,cc}: a hub namespace holds a
Linux bridge at 10.213.0.1/24; spoke i is a namespace with a veth pair into
the bridge, at 10.213.0.(10 + i). Names carry this process's pid
(``kvdist_<pid>_hub``, ``kvdist_<pid>_s<i>``); namespaces of dead processes
with such names are deleted on the way in. Every interface is created inside
the new namespaces: the root namespace's interfaces and addresses are never
touched. Use as a context manager: the namespaces are deleted on exit, on
errors and on KeyboardInterrupt alike. Needs root and iproute2.
"""

from __future__ import annotations

import os
import subprocess
import time

from typing_extensions import Self

__all__ = ["HUB_IP", "NetnsStar", "netns_unavailable", "spoke_ip"]

HUB_IP = "10.213.0.1"
PREFIX = "kvdist_"


def spoke_ip(i: int) -> str:
    return f"10.213.0.{10 + i}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def netns_unavailable() -> str:
    """Why namespaces cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces)"
    try:
        if _ip("netns", "list", check=False).returncode != 0:
            return "`ip netns` does not work here"
    except (OSError, subprocess.SubprocessError) as e:
        return f"no usable `ip` (iproute2): {e}"
    return ""


def _reap_stale() -> None:
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split(" ", 1)[0]
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("_", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", name, check=False)


class NetnsStar:
    """A hub and ``spokes`` spoke namespaces; see the module's doc."""

    def __init__(self, spokes: int) -> None:
        why = netns_unavailable()
        if why:
            raise RuntimeError(f"--netns {why}")
        _reap_stale()
        pid = os.getpid()
        self.hub = f"{PREFIX}{pid}_hub"
        self.bridge = f"kvbr{pid}"
        self.spokes: list[str] = []
        self.hub_ends: list[str] = []  # veth ends on the bridge
        self.spoke_ends: list[str] = []  # veth ends in the spokes
        self._made: list[str] = []
        try:
            self._add(self.hub)
            _ip("-n", self.hub, "link", "add", self.bridge, "type", "bridge")
            _ip("-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", self.bridge)
            _ip("-n", self.hub, "link", "set", self.bridge, "up")
            for i in range(spokes):
                ns, h, s = f"{PREFIX}{pid}_s{i}", f"kvh{pid}_{i}", f"kvs{pid}_{i}"
                self._add(ns)
                # Both ends are born inside their namespaces.
                _ip(
                    "link",
                    "add",
                    h,
                    "netns",
                    self.hub,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    s,
                    "netns",
                    ns,
                )
                _ip("-n", self.hub, "link", "set", h, "master", self.bridge)
                _ip("-n", self.hub, "link", "set", h, "up")
                _ip("-n", ns, "addr", "add", f"{spoke_ip(i)}/24", "dev", s)
                _ip("-n", ns, "link", "set", s, "up")
                self.spokes.append(ns)
                self.hub_ends.append(h)
                self.spoke_ends.append(s)
            for ns, dev in zip(self.spokes, self.spoke_ends):
                self._wait_carrier(ns, dev)
        except BaseException:
            self.close()
            raise

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    @staticmethod
    def _wait_carrier(ns: str, dev: str) -> None:
        """A veth reports its carrier a moment after both ends are up; UCX
        does not list a device without it."""
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if "state UP" in _ip("-n", ns, "link", "show", "dev", dev, check=False).stdout:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{dev} in {ns} has no carrier")

    @staticmethod
    def exec_prefix(ns: str) -> list[str]:
        """The command prefix that runs a process inside ``ns``."""
        return ["ip", "netns", "exec", ns]

    def hub_env(self) -> dict[str, str]:
        """The hub's device, and the network path (no shared memory across)."""
        return {"UCX_NET_DEVICES": self.bridge, "KVDIST_NETWORK_PATH": "1"}

    def spoke_env(self, i: int) -> dict[str, str]:
        return {"UCX_NET_DEVICES": self.spoke_ends[i], "KVDIST_NETWORK_PATH": "1"}

    def close(self) -> None:
        """Deletes every namespace made (their veths and bridge go with them)."""
        while self._made:
            _ip("netns", "del", self._made.pop(), check=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
