"""``LLMDataDist``: one cluster's endpoint (reference §5), over kvdist's engine."""

from __future__ import annotations

import atexit
import json
import logging
from typing import Any, ClassVar

from llm_datadist import _native
from llm_datadist._checks import (
    check_dict,
    check_int32,
    check_isinstance,
    check_uint32,
    check_uint64,
)
from llm_datadist.cache_manager import CacheManager, parse_mem_pool_config
from llm_datadist.comm_domain import CommDomains
from llm_datadist.configs import LLMClusterInfo, LLMRole, int_ip_to_str
from llm_datadist.kv_cache_manager import KvCacheManager
from llm_datadist.llm_types import RegisterMemStatus
from llm_datadist.status import (
    LLMStatusCode,
    code_2_status,
    handle_llm_status,
    raise_if_false,
    raise_if_true,
)

__all__ = ["LLMDataDist"]

_log = logging.getLogger("llm_datadist")

_ROLE_NAMES = {LLMRole.PROMPT: "Prompt", LLMRole.DECODER: "Decoder", LLMRole.MIX: "Mix"}
_NATIVE_MIX = 3  # kvdist::Role::kMix: pushes, pulls and serves both


def _log_failures(call: str, clusters: Any, codes: list[int], why: list[str]) -> None:
    """Codes are returned, not raised (as the original); the reasons go to the log."""
    for cluster, code, text in zip(clusters, codes, why):
        if code != 0:
            _log.warning(
                "%s: cluster %s: %s (%s)",
                call,
                cluster.remote_cluster_id,
                text,
                code_2_status(code),
            )


def _native_cluster(cluster: LLMClusterInfo) -> tuple[int, str, int]:
    check_uint64("remote_cluster_id", cluster.remote_cluster_id)
    if not cluster.remote_ip_info_list:
        # kvdist answers LLM_PARAM_INVALID for this cluster (no address to link to).
        return cluster.remote_cluster_id, "", 0  # type: ignore[return-value]
    ip, port = cluster.remote_ip_info_list[0]
    if isinstance(ip, str):
        ip_str = ip
    elif 0 <= ip < 2**32:
        ip_str = int_ip_to_str(ip)
    else:
        ip_str = ""  # not an IPv4 address: kvdist answers LLM_PARAM_INVALID for it
    return cluster.remote_cluster_id, ip_str, port  # type: ignore[return-value]


class LLMDataDist:
    """One PROMPT or DECODER cluster; one initialised instance per process.

    ``LLMDataDist(role, cluster_id)``, then ``init(options)`` (see
    ``LLMConfig.generate_options``). A DECODER links to a PROMPT's
    ``listen_ip_info`` with ``link_clusters``; the PROMPT pushes caches with
    ``kv_cache_manager.transfer_cache_async``.
    """

    llm_engine_instance: ClassVar[LLMDataDist | None] = None

    def __init__(self, role: LLMRole, cluster_id: int) -> None:
        check_isinstance("role", role, LLMRole, allow_none=False)
        check_uint64("cluster_id", cluster_id)
        self._role = role
        self._cluster_id = cluster_id
        self._native: Any = None
        self._kv_cache_manager: KvCacheManager | None = None
        self._is_initialized = False
        self._engine_options: dict[str, str] = {}
        self._enable_cache_mgr = False
        self._cache_manager: CacheManager | None = None
        self._comm_domains: CommDomains | None = None

    # -- life cycle --------------------------------------------------------

    @staticmethod
    def _check_flow_graph_max_size(options: dict[str, Any]) -> None:
        value = options.get("ge.flowGraphMemMaxSize")
        if value is None:
            return
        check_isinstance("ge.flowGraphMemMaxSize", value, str)
        raise_if_false(
            len(value.split(",")) == 1,
            "ge.flowGraphMemMaxSize only support one mem pool in llm datadist",
        )
        raise_if_false(
            value.isdigit(), "ge.flowGraphMemMaxSize must be digit, config value={0}", value
        )

    def _setup_engine_options(self, options: dict[str, Any]) -> None:
        opts = {str(key): str(value) for key, value in options.items()}
        opts["llm.Role"] = _ROLE_NAMES[self._role]
        # As the original: llm.LocalCommRes turns on CacheManager mode and
        # remote access unless they are set; with CacheManager mode off it is
        # refused, and so is llm.TransferBackend (which also needs remote
        # access and a listen address).
        if "llm.LocalCommRes" in opts:
            opts.setdefault("llm.EnableCacheManager", "1")
            opts.setdefault("llm.EnableRemoteCacheAccessible", "1")
        self._enable_cache_mgr = opts.get("llm.EnableCacheManager") == "1"
        for key in ("llm.LocalCommRes", "llm.TransferBackend"):
            if key in opts:
                raise_if_false(
                    self._enable_cache_mgr,
                    "{0} is not supported when llm.EnableCacheManager is not configured.",
                    key,
                )
        if "llm.TransferBackend" in opts:
            opts.setdefault("llm.EnableRemoteCacheAccessible", "1")
            raise_if_false(
                opts["llm.EnableRemoteCacheAccessible"] == "1",
                "llm.TransferBackend is not supported when llm.EnableRemoteCacheAccessible "
                "is not enable.",
            )
            raise_if_false(
                "llm.listenIpInfo" in opts,
                "llm.TransferBackend is not supported when llm.listenIpInfo is not configured.",
            )
            raise_if_false(
                opts["llm.TransferBackend"] == "hixl",
                'llm.TransferBackend "{0}" is unknown (the original knows "hixl"; kvdist '
                "moves the bytes either way)",
                opts["llm.TransferBackend"],
            )
        if "llm.listenIpInfo" not in opts and "llm.ClusterInfo" in opts:
            # Derive the listen address from a ClusterInfo JSON (ips as ints).
            try:
                info = json.loads(opts["llm.ClusterInfo"])
                first = info.get("listen_ip_info", [])[0]
                ip = first["ip"] if isinstance(first["ip"], str) else int_ip_to_str(first["ip"])
                opts["llm.listenIpInfo"] = f"{ip}:{int(first['port'])}"
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                pass
        self._engine_options = opts

    def init(self, options: dict[str, str]) -> None:
        """Initialises the engine (a no-op if this instance is initialised).

        Raises ``LLMException(LLM_FAILED)`` if another ``LLMDataDist`` of this
        process is initialised, ``LLMException(LLM_PARAM_INVALID)`` naming a
        missing ``ge.exec.deviceId`` (or ``llm.listenIpInfo`` on a PROMPT).
        """
        if self._is_initialized:
            return
        raise_if_false(
            LLMDataDist.llm_engine_instance is None,
            "Cannot init multiple LLMDataDists",
            status_code=LLMStatusCode.LLM_FAILED,
        )
        check_isinstance("options", options, dict, allow_none=False)
        self._check_flow_graph_max_size(options)
        self._setup_engine_options(options)
        native_role = int(self._role)
        if self._enable_cache_mgr:
            self._setup_cache_manager_mode()
            native_role = _NATIVE_MIX  # either side links, pulls and pushes
        else:
            self._check_devices_and_listen_addresses()
        kvdist = _native.load()
        native = kvdist.DataDist(native_role, self._cluster_id)
        _native.call(
            "[LLMDataDist.init]",
            f"Failed to initialize llm datadist, options = {options}",
            native.init_map,
            self._engine_options,
        )
        self._native = native
        if self._enable_cache_mgr:
            self._cache_manager = CacheManager(native, self._engine_options)
            self._comm_domains = CommDomains(native, self._cluster_id)
        else:
            self._kv_cache_manager = KvCacheManager(native, self._role)
        LLMDataDist.llm_engine_instance = self
        self._is_initialized = True

    def _setup_cache_manager_mode(self) -> None:
        """As the original's CacheManager mode: llm.listenIpInfo optional
        (ip:port: this side accepts links), the device id defaults to 0, and
        the memory pools (llm.MemPoolConfig, llm.HostMemPoolConfig) bound
        what allocate_cache may take (one kvdist pool of their sum)."""
        opts = self._engine_options
        opts.setdefault("ge.exec.deviceId", "0")
        if "llm.listenIpInfo" in opts:
            parts = opts["llm.listenIpInfo"].split(":")
            raise_if_false(
                len(parts) == 2,
                'llm.listenIpInfo "{0}" is invalid, format should be "ip:port"',
                opts["llm.listenIpInfo"],
            )
            int(parts[1])  # as the original: ValueError for a port that is no number
        pool = 0
        for key in ("llm.MemPoolConfig", "llm.HostMemPoolConfig"):
            if opts.get(key):
                pool += parse_mem_pool_config(key, opts[key])
        if pool:
            opts["ge.flowGraphMemMaxSize"] = str(pool)

    def _check_devices_and_listen_addresses(self) -> None:
        """As the original: without llm.ClusterInfo, a PROMPT gives one
        listen address per device ("0;1" -> "ip:port;ip:port"); with it,
        ge.exec.deviceId is not needed. A CPU host serves on the first
        device's address."""
        opts = self._engine_options
        if "llm.ClusterInfo" in opts:
            opts.setdefault("ge.exec.deviceId", "0")  # recorded only
        raise_if_false(
            "ge.exec.deviceId" in opts,
            "option ge.exec.deviceId (LLMConfig.device_id) is required",
        )
        raise_if_false(
            self._role != LLMRole.PROMPT or "llm.listenIpInfo" in opts,
            "neither llm.ClusterInfo nor llm.listenIpInfo was specified: option "
            "llm.listenIpInfo (LLMConfig.listen_ip_info) is required for LLMRole.PROMPT",
        )
        if "llm.ClusterInfo" in opts or self._role != LLMRole.PROMPT:
            return
        devices = opts["ge.exec.deviceId"].split(";")
        listens = opts["llm.listenIpInfo"].split(";")
        raise_if_false(
            len(listens) == len(devices),
            "listen ip info num:{0} in llm.listenIpInfo is not equal to device num:{1}.",
            len(listens),
            len(devices),
        )
        for one in listens:
            raise_if_false(
                len(one.split(":")) == 2,
                'llm.listenIpInfo "{0}" is invalid, format should be "ip:port"',
                one,
            )
        opts["llm.listenIpInfo"] = listens[0]

    def finalize(self) -> None:
        """Releases everything; idempotent. Unfinished transfers end with an error."""
        if not self._is_initialized:
            return
        if self._comm_domains is not None:
            self._comm_domains.close()
        try:
            self._native.finalize()
        finally:
            if self._kv_cache_manager is not None:
                self._kv_cache_manager._initialized = False
            if self._cache_manager is not None:
                self._cache_manager._initialized = False
            self._is_initialized = False
            if LLMDataDist.llm_engine_instance is self:
                LLMDataDist.llm_engine_instance = None

    def _check_is_inited(self) -> None:
        if not self._is_initialized:
            raise RuntimeError("llm datadist is not initialized")

    def _check_is_cache_mgr_mode(self, func_name: str) -> None:
        raise_if_false(
            self._enable_cache_mgr,
            "{0} is not supported when llm.EnableCacheManager is not configured.",
            func_name,
        )

    def _check_is_not_cache_mgr_mode(self, func_name: str) -> None:
        raise_if_false(
            not self._enable_cache_mgr,
            "{0} is not supported when llm.EnableCacheManager is configured.",
            func_name,
        )

    # -- properties --------------------------------------------------------

    @property
    def cluster_id(self) -> int:
        """The cluster id given at construction."""
        return self._cluster_id

    @property
    def kv_cache_manager(self) -> KvCacheManager:
        """The ``KvCacheManager`` (KvCacheManager mode)."""
        self._check_is_inited()
        self._check_is_not_cache_mgr_mode("kv_cache_manager")
        assert self._kv_cache_manager is not None
        return self._kv_cache_manager

    @property
    def cache_manager(self) -> CacheManager:
        """The ``CacheManager`` (CacheManager mode; ``LLM_PARAM_INVALID`` otherwise)."""
        self._check_is_inited()
        self._check_is_cache_mgr_mode("cache_manager")
        assert self._cache_manager is not None
        return self._cache_manager

    # -- links -------------------------------------------------------------

    @staticmethod
    def _check_link_args(clusters: Any, timeout: Any) -> None:
        check_int32("timeout", timeout)
        raise_if_false(timeout > 0, "Param timeout should be greater than 0.")
        check_isinstance("clusters", clusters, [list, tuple], LLMClusterInfo, allow_none=False)

    def link_clusters(
        self,
        clusters: list[LLMClusterInfo] | tuple[LLMClusterInfo, ...],
        timeout: int = 3000,
    ) -> tuple[LLMStatusCode, list[LLMStatusCode]]:
        """Links to PROMPT clusters (DECODER side; ip/port = ``remote_ip_info_list[0]``).

        Returns the overall code and one code per cluster; link failures are
        returned, not raised. At most 16 clusters per call.
        """
        self._check_is_inited()
        self._check_link_args(clusters, timeout)
        if self._enable_cache_mgr and not self._engine_options.get("llm.LocalCommRes"):
            for cluster in clusters:
                raise_if_false(
                    len(cluster.local_ip_info_list) > 0,
                    "local_ip_info of cluster {0} is required when llm.LocalCommRes is not set",
                    cluster.remote_cluster_id,
                )
        native_clusters = [_native_cluster(cluster) for cluster in clusters]
        ret, rets, why = _native.call(
            "[link_clusters]", "", self._native.link, native_clusters, timeout
        )
        _log_failures("link_clusters", clusters, rets, why)
        return code_2_status(ret), [code_2_status(code) for code in rets]

    def unlink_clusters(
        self,
        clusters: list[LLMClusterInfo] | tuple[LLMClusterInfo, ...],
        timeout: int = 3000,
        force: bool = False,
    ) -> tuple[LLMStatusCode, list[LLMStatusCode]]:
        """Unlinks clusters; returns the overall code and one code per cluster.

        kvdist always tears down both ends when the peer is reachable, and the
        local end alone otherwise, so ``force`` is accepted and checked only.
        """
        self._check_is_inited()
        self._check_link_args(clusters, timeout)
        check_isinstance("force", force, bool)
        native_clusters = [_native_cluster(cluster) for cluster in clusters]
        ret, rets, why = _native.call(
            "[unlink_clusters]", "", self._native.unlink, native_clusters, timeout
        )
        _log_failures("unlink_clusters", clusters, rets, why)
        return code_2_status(ret), [code_2_status(code) for code in rets]

    def check_link_status(self, remote_cluster_id: int) -> None:
        """Raises ``LLMException`` unless ``remote_cluster_id`` is linked and alive."""
        self._check_is_inited()
        self._check_is_not_cache_mgr_mode("check_link_status")
        check_uint64("remote_cluster_id", remote_cluster_id)
        code, message = _native.call(
            "[check_link_status]", "", self._native.check_link, remote_cluster_id
        )
        info = f"remote_cluster_id is {remote_cluster_id}"
        if message:
            info = f"{info}, {str(message).rstrip('.')}"
        handle_llm_status(code, "[check_link_status]", info)

    def switch_role(self, role: LLMRole, switch_options: dict[str, str] | None = None) -> None:
        """Changes the role of this initialised, unlinked instance (as the original).

        Needs no link (``LLM_EXIST_LINK``). ``llm.EnableSwitchRole`` is not
        needed (the original raises ``LLM_FEATURE_NOT_ENABLED`` without it).
        To PROMPT, ``switch_options["llm.listenIpInfo"]`` is where it listens
        from now on; to DECODER it stops listening. Caches stay.
        """
        self._check_is_inited()
        check_isinstance("role", role, LLMRole, allow_none=False)
        if self._enable_cache_mgr:
            self._switch_role_cache_manager_mode(role, switch_options)
            return
        raise_if_false(self._role != role, f"role not changed, role = {role.name}")
        check_isinstance("switch_options", switch_options, dict)
        options = dict(switch_options) if switch_options is not None else {}
        listen = ""
        if role == LLMRole.PROMPT:
            raise_if_false(
                "llm.listenIpInfo" in options,
                'Failed to switch to Prompt, option "llm.listenIpInfo" must be specified',
            )
            listen = str(options["llm.listenIpInfo"])
        _native.call(
            "[switch_role]",
            f"role = {role.name}, switch_options = {options}",
            self._native.switch_role,
            int(role),
            listen,
        )
        self._role = role
        if self._kv_cache_manager is not None:
            self._kv_cache_manager._switch_role(role)

    def _switch_role_cache_manager_mode(
        self, role: LLMRole, switch_options: dict[str, str] | None
    ) -> None:
        """As the original's CacheManager mode: no link allowed; with
        ``llm.listenIpInfo`` it listens there from now on, without it it
        stops listening; the role itself is bookkeeping."""
        check_isinstance("switch_options", switch_options, dict)
        options = dict(switch_options) if switch_options is not None else {}
        listen = str(options.get("llm.listenIpInfo", ""))
        if listen:
            raise_if_false(
                len(listen.split(":")) == 2,
                'llm.listenIpInfo "{0}" is invalid, format should be "ip:port"',
                listen,
            )
        _native.call(
            "[switch_role]",
            f"role = {role.name}, switch_options = {options}",
            self._native.switch_role,
            _NATIVE_MIX,
            listen,
        )
        self._role = role

    # -- CacheManager mode only ----------------------------------------------

    def link(self, comm_name: str, cluster_rank_info: dict[int, int], rank_table: str) -> int:
        """Links the members of a comm domain (CacheManager mode); every member
        calls it. Returns the comm id; ``query_register_mem_status`` says when
        the links are up (see ``llm_datadist.comm_domain``)."""
        self._check_is_inited()
        self._check_is_cache_mgr_mode("link")
        check_isinstance("comm_name", comm_name, str, allow_none=False)
        raise_if_true(len(comm_name) == 0, "comm_name can not be empty")
        raise_if_false(len(comm_name) < 128, "comm_name length should be smaller than 128.")
        check_isinstance("cluster_rank_info", cluster_rank_info, dict)
        check_dict("cluster_rank_info", cluster_rank_info, int, int)
        raise_if_false(
            len(cluster_rank_info) <= 4, "cluster_rank_info size can not be greater than 4."
        )
        for key, value in cluster_rank_info.items():
            check_uint64("cluster_rank_info key", key)
            check_uint32("cluster_rank_info value", value)
        check_isinstance("rank_table", rank_table, str)
        ranks = list(cluster_rank_info.values())
        raise_if_false(len(ranks) > 1, "cluster num must be bigger than 1.")
        raise_if_false(ranks == sorted(ranks), "rank in cluster_rank_info must be ordered")
        raise_if_false(
            len(set(cluster_rank_info)) == len(cluster_rank_info),
            "cluster id in cluster_rank_info can not be duplicated.",
        )
        assert self._comm_domains is not None
        return self._comm_domains.link(cluster_rank_info, rank_table)

    def unlink(self, comm_id: int) -> None:
        """Unlinks the members of a comm domain (``LLM_NOT_YET_LINK`` for an unknown id)."""
        self._check_is_inited()
        self._check_is_cache_mgr_mode("unlink")
        check_isinstance("comm_id", comm_id, int)
        check_uint64("comm_id", comm_id)
        assert self._comm_domains is not None
        self._comm_domains.unlink(comm_id)

    def query_register_mem_status(self, comm_id: int) -> RegisterMemStatus:
        """PREPARING until every member of the domain is linked, then OK (or FAILED)."""
        self._check_is_inited()
        self._check_is_cache_mgr_mode("query_register_mem_status")
        check_isinstance("comm_id", comm_id, int)
        check_uint64("comm_id", comm_id)
        assert self._comm_domains is not None
        return self._comm_domains.status(comm_id)


def _shutdown_handler() -> None:
    instance = LLMDataDist.llm_engine_instance
    if instance is not None:
        try:
            instance.finalize()
        except Exception as exc:  # noqa: BLE001 - only logged at exit, as in the original
            _log.warning("error occurred while finalize llm datadist: %s", exc)


atexit.register(_shutdown_handler)
