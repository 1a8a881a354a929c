"""``LLMDataDist.link`` / ``unlink`` / ``query_register_mem_status``: the
original's comm-domain links (CacheManager mode), on kvdist links.

In the original, every member of a domain calls ``link(comm_name,
cluster_rank_info, rank_table)`` at once and HCCL builds a communicator from
the rank table. Here each member links to every member of a lower rank at
the address the rank table gives for it (``device_ip`` and ``device_port``
of the device whose ``rank_id`` is that rank: where that member's
``llm.listenIpInfo`` listens), in the background; the domain is
``RegisterMemStatus.OK`` once every other member is linked, ``FAILED`` if
that does not happen within the deadline.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from llm_datadist.llm_types import RegisterMemStatus
from llm_datadist.status import LLMException, LLMStatusCode, raise_if_false

__all__ = ["CommDomains", "rank_addresses"]

_LINK_DEADLINE_S = 30.0
_RETRY_S = 0.05


def rank_addresses(rank_table: str | None, ranks: list[int]) -> dict[int, tuple[str, int]]:
    """The (ip, port) of each rank in ``ranks`` from an HCCL-style rank table."""
    try:
        table = json.loads(rank_table or "")
    except ValueError:
        table = None
    raise_if_false(isinstance(table, dict), "rank_table is not a JSON object")
    found: dict[int, tuple[str, int]] = {}
    for server in table.get("server_list", []) or []:
        for device in server.get("device", []) or []:
            try:
                rank = int(device["rank_id"])
                address = (str(device["device_ip"]), int(device["device_port"]))
            except (KeyError, TypeError, ValueError):
                continue
            found[rank] = address
    for rank in ranks:
        raise_if_false(
            rank in found,
            "rank_table has no device_ip and device_port for rank {0}",
            rank,
            status_code=LLMStatusCode.LLM_LINK_FAILED,
        )
    return {rank: found[rank] for rank in ranks}


class _Domain:
    def __init__(self, members: dict[int, int]) -> None:
        self.members = members  # cluster id -> rank
        self.status = RegisterMemStatus.PREPARING
        self.thread: threading.Thread | None = None


class CommDomains:
    """The comm domains of one ``LLMDataDist`` (ids from 1, as the original)."""

    def __init__(self, native: Any, cluster_id: int) -> None:
        self._native = native
        self._cluster_id = cluster_id
        self._domains: dict[int, _Domain] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def link(self, cluster_rank_info: dict[int, int], rank_table: str | None) -> int:
        raise_if_false(
            self._cluster_id in cluster_rank_info,
            "cluster_rank_info does not contain this cluster's id {0}",
            self._cluster_id,
        )
        my_rank = cluster_rank_info[self._cluster_id]
        lower = {c: r for c, r in cluster_rank_info.items() if r < my_rank}
        addresses = rank_addresses(rank_table, sorted(lower.values()))
        domain = _Domain(dict(cluster_rank_info))
        with self._lock:
            comm_id = self._next_id
            self._next_id += 1
            self._domains[comm_id] = domain
        targets = [(c, *addresses[r]) for c, r in lower.items()]
        others = [c for c in cluster_rank_info if c != self._cluster_id]
        domain.thread = threading.Thread(
            target=self._prepare, args=(domain, targets, others), daemon=True
        )
        domain.thread.start()
        return comm_id

    def _prepare(
        self, domain: _Domain, targets: list[tuple[int, str, int]], others: list[int]
    ) -> None:
        deadline = time.monotonic() + _LINK_DEADLINE_S
        pending = list(targets)
        while time.monotonic() < deadline and not self._closing.is_set():
            still = []
            for cluster_id, ip, port in pending:
                if self._closing.is_set():
                    break
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                _, codes, _ = self._native.link([(cluster_id, ip, port)], min(left_ms, 3000))
                if codes and codes[0] not in (0, int(LLMStatusCode.LLM_ALREADY_LINK)):
                    still.append((cluster_id, ip, port))  # that member may not listen yet
            pending = still
            linked = set(self._native.linked())
            if not pending and all(c in linked for c in others):
                domain.status = RegisterMemStatus.OK
                return
            self._closing.wait(_RETRY_S)
        domain.status = RegisterMemStatus.FAILED

    def close(self) -> None:
        """Stops every domain's linking thread and waits for it (before the
        engine goes: a thread must not call into a finalized one)."""
        self._closing.set()
        with self._lock:
            threads = [d.thread for d in self._domains.values() if d.thread is not None]
        for thread in threads:
            thread.join()

    def _get(self, comm_id: int) -> _Domain:
        with self._lock:
            domain = self._domains.get(comm_id)
        if domain is None:
            raise LLMException(
                f"comm_id {comm_id} is not linked", status_code=LLMStatusCode.LLM_NOT_YET_LINK
            )
        return domain

    def status(self, comm_id: int) -> RegisterMemStatus:
        return self._get(comm_id).status

    def unlink(self, comm_id: int) -> None:
        domain = self._get(comm_id)
        if domain.thread is not None:
            domain.thread.join(_LINK_DEADLINE_S)
        members = [(c, "", 0) for c in domain.members if c != self._cluster_id]
        self._native.unlink(members, 3000)  # members already gone: nothing to do
        with self._lock:
            self._domains.pop(comm_id, None)
