"""``--role prompt``: the PROMPT of a two-host run, waiting for remote DECODERs.

One DataDist listens for the whole run; each DECODER (``--role decoder``,
bench/decoder.py) links to it and says ``hello``. Sessions then take the
first N of them (in cluster-id order) and drive them over kvdist's peer
messages (bench/channel.py): no port beyond the listen port.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from kvdist.bench.channel import Mailbox, MessageChannel
from kvdist.bench.decoder import PROMPT_CLUSTER

__all__ = ["RemoteDecoders", "split_host_port"]


def split_host_port(text: str) -> tuple[str, int]:
    """'10.0.0.1:26000' -> ('10.0.0.1', 26000)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SystemExit(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class RemoteDecoders:
    """The PROMPT's DataDist listening at ``listen`` and ``count`` linked DECODERs."""

    def __init__(
        self,
        listen: str,
        count: int,
        *,
        tls: str,
        lanes: int,
        pool_bytes: int,
        link: str = "network",
        wait_s: float = 120.0,
        port_file: str | None = None,
    ) -> None:
        import kvdist

        if tls:
            os.environ["UCX_TLS"] = tls
        self.link = link
        self.dd = kvdist.DataDist(
            "prompt",
            PROMPT_CLUSTER,
            listen=listen,
            sync_timeout_ms=60000,
            transfer_timeout_ms=60000,
            pool_bytes=pool_bytes,
            copy_lanes=lanes,
        )
        self.mailbox = Mailbox(self.dd)
        self.channels: dict[int, MessageChannel] = {}
        try:
            host = split_host_port(listen)[0]
            print(
                f"kvdist-bench prompt: listening on {host}:{self.dd.port}, "
                f"waiting for {count} decoder(s)",
                file=sys.stderr,
                flush=True,
            )
            if port_file:
                with open(port_file + ".tmp", "w") as f:
                    f.write(str(self.dd.port))
                os.replace(port_file + ".tmp", port_file)
            deadline = time.monotonic() + wait_s
            while len(self.channels) < count:
                left = deadline - time.monotonic()
                try:
                    sender, msg = self.mailbox.recv_any(max(0.0, left))
                except TimeoutError:
                    raise RuntimeError(
                        f"{len(self.channels)} of {count} decoders linked within {wait_s:.0f} s"
                    ) from None
                if msg[0] == "hello":
                    self.channels[sender] = MessageChannel(self.mailbox, sender)
        except BaseException:
            self.dd.close()
            raise

    def take(self, count: int) -> list[tuple[int, MessageChannel]]:
        """The first ``count`` DECODERs: (cluster id, channel)."""
        if count > len(self.channels):
            raise RuntimeError(f"{count} destinations asked, {len(self.channels)} decoders linked")
        return sorted(self.channels.items())[:count]

    def close(self) -> None:
        """Tells every DECODER to leave, then closes the DataDist."""
        for channel in self.channels.values():
            with contextlib.suppress(Exception):  # a DECODER already gone
                channel.send(("quit",))
        time.sleep(0.2)  # let the messages go before the links close
        self.dd.close()
