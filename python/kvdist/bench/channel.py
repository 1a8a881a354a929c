"""The bench's control channel between the PROMPT and one DECODER.

Two carriers, one interface (``send(msg)``, ``recv(timeout_s)``; a message is
a tuple of plain values: str, int, float, None, lists of them):

- :class:`PipeChannel`: a multiprocessing Pipe to a DECODER this process
  spawned (the local mode).
- :class:`MessageChannel`: kvdist's own peer messages (``DataDist.send`` /
  ``receive``) over the link the DECODER made, so a DECODER on another host
  needs no port beyond the PROMPT's listen port. Messages are JSON, cut into
  fragments of at most ``FRAGMENT`` bytes (kvdist carries 60 KiB); one
  :class:`Mailbox` per DataDist sorts what arrives by sender.
"""

from __future__ import annotations

import json
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["FRAGMENT", "Mailbox", "MessageChannel", "PipeChannel"]

FRAGMENT = 60000  # payload bytes per kvdist message (its limit: 60 KiB)
_MORE, _END = b"M", b"E"


class PipeChannel:
    """A multiprocessing Pipe end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, msg: tuple) -> None:
        self.conn.send(msg)

    def recv(self, timeout_s: float | None) -> tuple:
        """The next message; waits up to ``timeout_s`` (None: for ever)."""
        if not self.conn.poll(timeout_s):
            raise TimeoutError(f"no message within {timeout_s} s")
        return tuple(self.conn.recv())

    def close(self) -> None:
        self.conn.close()


def _deadline(timeout_s: float | None) -> float:
    return float("inf") if timeout_s is None else time.monotonic() + timeout_s


class Mailbox:
    """What one DataDist receives, reassembled and queued per sending cluster."""

    def __init__(self, dd: Any) -> None:
        self.dd = dd
        self._parts: dict[int, list[bytes]] = {}
        self._ready: dict[int, deque[tuple]] = {}
        self._order: deque[int] = deque()  # senders of complete messages, oldest first

    def send(self, cluster_id: int, msg: tuple) -> None:
        data = json.dumps(list(msg), separators=(",", ":")).encode()
        chunks = [data[i : i + FRAGMENT] for i in range(0, len(data), FRAGMENT)] or [b""]
        for i, chunk in enumerate(chunks):
            self.dd.send(cluster_id, (_END if i == len(chunks) - 1 else _MORE) + chunk)

    def _pump(self, timeout_s: float) -> None:
        for sender, payload in self.dd.receive(64, max(0, int(timeout_s * 1000))):
            parts = self._parts.setdefault(sender, [])
            parts.append(payload[1:])
            if payload[:1] == _END:
                msg = tuple(json.loads(b"".join(parts)))
                del self._parts[sender]
                self._ready.setdefault(sender, deque()).append(msg)
                self._order.append(sender)

    def _take(self, sender: int) -> tuple:
        self._order.remove(sender)
        return self._ready[sender].popleft()

    def recv_from(self, sender: int, timeout_s: float | None) -> tuple:
        """The next message of ``sender``; TimeoutError after ``timeout_s`` (None: never)."""
        deadline = _deadline(timeout_s)
        while not self._ready.get(sender):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message from cluster {sender} within {timeout_s} s")
            self._pump(min(left, 0.5))
        return self._take(sender)

    def recv_any(self, timeout_s: float | None) -> tuple[int, tuple]:
        """The oldest complete message of any sender: (sender, message)."""
        deadline = _deadline(timeout_s)
        while not self._order:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message within {timeout_s} s")
            self._pump(min(left, 0.5))
        sender = self._order[0]
        return sender, self._take(sender)


class MessageChannel:
    """kvdist peer messages to and from one linked cluster."""

    def __init__(self, mailbox: Mailbox, cluster_id: int) -> None:
        self.mailbox = mailbox
        self.cluster_id = cluster_id

    def send(self, msg: tuple) -> None:
        self.mailbox.send(self.cluster_id, msg)

    def recv(self, timeout_s: float | None) -> tuple:
        return self.mailbox.recv_from(self.cluster_id, timeout_s)

    def close(self) -> None:
        pass
