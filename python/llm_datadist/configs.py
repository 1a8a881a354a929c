"""``LLMRole``, ``LLMClusterInfo`` and ``LlmConfig`` (reference §3, §4, §6)."""

from __future__ import annotations

import json
import socket
from enum import IntEnum
from typing import Any

from llm_datadist._checks import (
    check_dict,
    check_int32,
    check_isinstance,
    check_uint16,
    check_uint32,
    check_uint64,
)
from llm_datadist.status import raise_if_false

__all__ = ["LLMRole", "LLMClusterInfo", "LlmConfig", "trans_str_ip", "int_ip_to_str"]

_UINT32_MAX = 2**32 - 1


class LLMRole(IntEnum):
    """Role of an ``LLMDataDist``: the PROMPT pushes, the DECODER receives."""

    PROMPT = 1
    DECODER = 2
    MIX = 3

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


def trans_str_ip(ip: str | int) -> int:
    """Converts a dotted IPv4 string to the original's int form.

    The int is the ``inet_aton`` bytes read little-endian ("127.0.0.1" ->
    16777343). Ints pass unchanged. Unparsable strings -> ``RuntimeError``.
    """
    if isinstance(ip, str):
        try:
            packed = socket.inet_aton(ip)
        except OSError:
            raise RuntimeError(f"Can not parse ip str:{ip}") from None
        return int.from_bytes(packed, byteorder="little")
    return ip


def int_ip_to_str(ip: int) -> str:
    """The inverse of ``trans_str_ip`` for ints: 16777343 -> "127.0.0.1"."""
    return socket.inet_ntoa(int(ip).to_bytes(4, byteorder="little"))


class LLMClusterInfo:
    """Describes a remote cluster for ``link_clusters``/``unlink_clusters``."""

    def __init__(self) -> None:
        self._remote_cluster_id: int | None = None
        self._remote_role_type: LLMRole | int | None = None
        self._local_ip_info_list: list[tuple[int, int]] = []
        self._remote_ip_info_list: list[tuple[int, int]] = []

    @staticmethod
    def _check_inputs(ip: Any, port: Any) -> int:
        check_isinstance("ip", ip, [str, int])
        check_uint16("port", port)
        return trans_str_ip(ip)

    @property
    def remote_cluster_id(self) -> int | None:
        """Cluster id of the remote ``LLMDataDist`` (uint64)."""
        return self._remote_cluster_id

    @remote_cluster_id.setter
    def remote_cluster_id(self, remote_cluster_id: int) -> None:
        check_uint64("remote_cluster_id", remote_cluster_id)
        self._remote_cluster_id = remote_cluster_id

    @property
    def remote_role_type(self) -> LLMRole | int | None:
        """Role of the remote cluster (informational)."""
        return self._remote_role_type

    @remote_role_type.setter
    def remote_role_type(self, remote_role_type: LLMRole | int) -> None:
        check_isinstance("remote_role_type", remote_role_type, [LLMRole, int])
        self._remote_role_type = remote_role_type

    @property
    def local_ip_info_list(self) -> list[tuple[int, int]]:
        """``(ip_int, port)`` pairs added by ``append_local_ip_info``."""
        return self._local_ip_info_list

    @property
    def remote_ip_info_list(self) -> list[tuple[int, int]]:
        """``(ip_int, port)`` pairs added by ``append_remote_ip_info``."""
        return self._remote_ip_info_list

    def append_local_ip_info(self, ip: str | int, port: int) -> None:
        """Adds a local ip (dotted str or int) and port."""
        self._local_ip_info_list.append((self._check_inputs(ip, port), port))

    def append_remote_ip_info(self, ip: str | int, port: int) -> None:
        """Adds a remote ip (dotted str or int) and port: the PROMPT's listen address."""
        self._remote_ip_info_list.append((self._check_inputs(ip, port), port))

    def __repr__(self) -> str:
        return (
            f"LLMClusterInfo(remote_cluster_id={self._remote_cluster_id}, "
            f"remote_ip_info_list={self._remote_ip_info_list})"
        )


class LlmConfig:
    """Builds the ``init`` options dict from typed, validated properties."""

    def __init__(self) -> None:
        self._options: dict[str, str] = {}
        self._listen_ip_info = ""
        self._device_id: int | list[int] | tuple[int, ...] | None = None
        self._sync_kv_timeout: int | str | None = None
        self._deploy_res_path = ""
        self._ge_options: dict[str, str] = {}
        self._enable_switch_role = False
        self._link_total_time: int | None = None
        self._link_retry_count: int | None = None
        self._cluster_info = ""
        self._output_max_size: int | None = None
        self._mem_utilization = 0.95
        self._buf_pool_cfg = ""
        self._mem_pool_cfg = ""
        self._host_mem_pool_cfg = ""
        self._enable_cache_manager: bool | None = None
        self._enable_remote_cache_accessible: bool | None = None
        self._rdma_traffic_class: int | None = None
        self._rdma_service_level: int | None = None
        self._local_comm_res: str | None = None
        self._transfer_backend: str | None = None
        self._global_resource_config: str | None = None

    # -- options -----------------------------------------------------------

    def generate_options(self) -> dict[str, str]:
        """Returns the options dict for ``LLMDataDist.init``."""
        return self.gen_options()

    def gen_options(self) -> dict[str, str]:
        """Alias of ``generate_options``."""
        opts = self._options
        if self._ge_options:
            opts.update(self._ge_options)
        if self._device_id is not None:
            if isinstance(self._device_id, int):
                opts["ge.exec.deviceId"] = str(self._device_id)
                opts["ge.session_device_id"] = str(self._device_id)
            else:
                opts["ge.session_device_id"] = str(self._device_id[0])
                opts["ge.exec.deviceId"] = ";".join(str(dev) for dev in self._device_id)
        if self._sync_kv_timeout is not None:
            opts["llm.SyncKvCacheWaitTime"] = str(self._sync_kv_timeout)
        if self._deploy_res_path:
            opts["llm.deployResPath"] = self._deploy_res_path
        if self._buf_pool_cfg:
            opts["llm.BufPoolCfg"] = self._buf_pool_cfg
        if self._mem_pool_cfg:
            opts["llm.MemPoolConfig"] = self._mem_pool_cfg
        if self._host_mem_pool_cfg:
            opts["llm.HostMemPoolConfig"] = self._host_mem_pool_cfg
        if self._enable_cache_manager is not None:
            opts["llm.EnableCacheManager"] = "1" if self._enable_cache_manager else "0"
        if self._enable_remote_cache_accessible is not None:
            opts["llm.EnableRemoteCacheAccessible"] = (
                "1" if self._enable_remote_cache_accessible else "0"
            )
        if self._listen_ip_info:
            opts["llm.listenIpInfo"] = self._listen_ip_info
        if self._link_total_time is not None:
            opts["llm.LinkTotalTime"] = str(self._link_total_time)
        if self._link_retry_count is not None:
            opts["llm.LinkRetryCount"] = str(self._link_retry_count)
        if self._rdma_traffic_class is not None:
            opts["llm.RdmaTrafficClass"] = str(self._rdma_traffic_class)
        if self._rdma_service_level is not None:
            opts["llm.RdmaServiceLevel"] = str(self._rdma_service_level)
        if self._local_comm_res is not None:
            opts["llm.LocalCommRes"] = self._local_comm_res
        if self._transfer_backend is not None:
            opts["llm.TransferBackend"] = self._transfer_backend
        if self._global_resource_config is not None:
            opts["llm.GlobalResourceConfig"] = self._global_resource_config
        if self._cluster_info:
            opts["llm.ClusterInfo"] = self._cluster_info
        if self._output_max_size is not None:
            opts["llm.OutputMaxSize"] = str(self._output_max_size)
        if self._enable_switch_role:
            opts["llm.EnableSwitchRole"] = "1"
        if self._mem_utilization is not None:
            opts["llm.MemoryUtilization"] = str(self._mem_utilization)
        return opts

    @property
    def options(self) -> dict[str, str]:
        """The dict the last ``generate_options`` call filled."""
        return self._options

    # -- properties --------------------------------------------------------

    @property
    def device_id(self) -> int | list[int] | tuple[int, ...] | None:
        """Device id(s): ``ge.exec.deviceId`` (required by ``init``)."""
        return self._device_id

    @device_id.setter
    def device_id(self, device_id: int | list[int] | tuple[int, ...]) -> None:
        check_isinstance("device_id", device_id, [list, tuple, int])
        ids = device_id if isinstance(device_id, (list, tuple)) else [device_id]
        if isinstance(device_id, (list, tuple)):
            check_isinstance("device_id", device_id, [list, tuple], int)
        for dev in ids:
            raise_if_false(dev >= 0, "device_id should be greater than or equal to zero.")
            check_int32("device_id", dev)
        self._device_id = device_id

    @property
    def listen_ip_info(self) -> str:
        """``"ip:port"`` the PROMPT listens on: ``llm.listenIpInfo``."""
        return self._listen_ip_info

    @listen_ip_info.setter
    def listen_ip_info(self, listen_ip_info: str) -> None:
        check_isinstance("listen_ip_info", listen_ip_info, str)
        self._listen_ip_info = listen_ip_info

    @property
    def sync_kv_timeout(self) -> int | str | None:
        """Synchronisation timeout in ms: ``llm.SyncKvCacheWaitTime``."""
        return self._sync_kv_timeout

    @sync_kv_timeout.setter
    def sync_kv_timeout(self, sync_kv_timeout: int | str) -> None:
        check_isinstance("sync_kv_timeout", sync_kv_timeout, [int, str])
        if isinstance(sync_kv_timeout, str):
            raise_if_false(sync_kv_timeout.isdigit(), "sync_kv_timeout must be digit.")
        raise_if_false(int(sync_kv_timeout) > 0, "sync_kv_timeout should be greater than zero.")
        check_int32("sync_kv_timeout", int(sync_kv_timeout))
        self._sync_kv_timeout = sync_kv_timeout

    @property
    def ge_options(self) -> dict[str, str]:
        """Extra options merged verbatim (e.g. ``ge.flowGraphMemMaxSize``)."""
        return self._ge_options

    @ge_options.setter
    def ge_options(self, ge_options: dict[str, str]) -> None:
        check_isinstance("ge_options", ge_options, dict)
        check_dict("ge_options", ge_options, str, str)
        self._ge_options = ge_options

    @property
    def deploy_res_path(self) -> str:
        """``llm.deployResPath`` (accepted, no meaning on CPU hosts)."""
        return self._deploy_res_path

    @deploy_res_path.setter
    def deploy_res_path(self, deploy_res_path: str) -> None:
        check_isinstance("deploy_res_path", deploy_res_path, str)
        self._deploy_res_path = deploy_res_path

    @property
    def buf_pool_cfg(self) -> str:
        """``llm.BufPoolCfg`` JSON (accepted, no meaning on CPU hosts)."""
        return self._buf_pool_cfg

    @buf_pool_cfg.setter
    def buf_pool_cfg(self, buf_pool_cfg: str) -> None:
        check_isinstance("buf_pool_cfg", buf_pool_cfg, str)
        self._buf_pool_cfg = buf_pool_cfg

    @property
    def output_max_size(self) -> int | None:
        """``llm.OutputMaxSize``."""
        return self._output_max_size

    @output_max_size.setter
    def output_max_size(self, output_max_size: int) -> None:
        check_isinstance("output_max_size", output_max_size, int)
        self._output_max_size = output_max_size

    @property
    def mem_utilization(self) -> float:
        """``llm.MemoryUtilization`` in [0, 1] (always emitted, default 0.95)."""
        return self._mem_utilization

    @mem_utilization.setter
    def mem_utilization(self, mem_utilization: float) -> None:
        check_isinstance("mem_utilization", mem_utilization, float)
        raise_if_false(
            0.0 <= mem_utilization <= 1.0,
            f"mem_utilization must be in range [0,1], current:{mem_utilization}",
        )
        self._mem_utilization = mem_utilization

    @property
    def cluster_info(self) -> str:
        """``llm.ClusterInfo`` JSON; listen ips are converted to ints."""
        return self._cluster_info

    @cluster_info.setter
    def cluster_info(self, cluster_info: str) -> None:
        check_isinstance("cluster_info", cluster_info, str)
        info = json.loads(cluster_info)
        for ip_info in info.get("listen_ip_info", []):
            ip_info["ip"] = trans_str_ip(ip_info["ip"])
        self._cluster_info = json.dumps(info)

    @property
    def enable_switch_role(self) -> bool:
        """``llm.EnableSwitchRole`` = "1" when True."""
        return self._enable_switch_role

    @enable_switch_role.setter
    def enable_switch_role(self, enable_switch_role: bool) -> None:
        check_isinstance("enable_switch_role", enable_switch_role, [bool])
        self._enable_switch_role = enable_switch_role

    @property
    def link_total_time(self) -> int:
        """``llm.LinkTotalTime`` in seconds, [0, 2**32-1] (getter default 0)."""
        return 0 if self._link_total_time is None else self._link_total_time

    @link_total_time.setter
    def link_total_time(self, link_total_time: int) -> None:
        check_isinstance("link_total_time", link_total_time, int)
        raise_if_false(
            0 <= link_total_time <= _UINT32_MAX,
            f"link_total_time should be an integer between [0, 2^32-1], "
            f"given value is {link_total_time}",
        )
        self._link_total_time = link_total_time

    @property
    def link_retry_count(self) -> int:
        """``llm.LinkRetryCount`` in [1, 100] (getter default 1)."""
        return 1 if self._link_retry_count is None else self._link_retry_count

    @link_retry_count.setter
    def link_retry_count(self, link_retry_count: int) -> None:
        check_isinstance("link_retry_count", link_retry_count, int)
        raise_if_false(
            1 <= link_retry_count <= 100,
            f"link_retry_count should be an integer between [1, 100], "
            f"given value is {link_retry_count}",
        )
        self._link_retry_count = link_retry_count

    @property
    def enable_cache_manager(self) -> bool:
        """``llm.EnableCacheManager`` "1"/"0" (CacheManager mode)."""
        return bool(self._enable_cache_manager)

    @enable_cache_manager.setter
    def enable_cache_manager(self, enable_cache_manager: bool) -> None:
        check_isinstance("enable_cache_manager", enable_cache_manager, [bool])
        self._enable_cache_manager = enable_cache_manager

    @property
    def enable_remote_cache_accessible(self) -> bool:
        """``llm.EnableRemoteCacheAccessible`` "1"/"0"."""
        return bool(self._enable_remote_cache_accessible)

    @enable_remote_cache_accessible.setter
    def enable_remote_cache_accessible(self, enable_remote_cache_accessible: bool) -> None:
        check_isinstance("enable_remote_cache_accessible", enable_remote_cache_accessible, [bool])
        self._enable_remote_cache_accessible = enable_remote_cache_accessible

    @property
    def mem_pool_cfg(self) -> str:
        """``llm.MemPoolConfig`` JSON (CacheManager mode)."""
        return self._mem_pool_cfg

    @mem_pool_cfg.setter
    def mem_pool_cfg(self, mem_pool_cfg: str) -> None:
        check_isinstance("mem_pool_cfg", mem_pool_cfg, str)
        self._mem_pool_cfg = mem_pool_cfg

    @property
    def host_mem_pool_cfg(self) -> str:
        """``llm.HostMemPoolConfig`` JSON (CacheManager mode)."""
        return self._host_mem_pool_cfg

    @host_mem_pool_cfg.setter
    def host_mem_pool_cfg(self, host_mem_pool_cfg: str) -> None:
        check_isinstance("host_mem_pool_cfg", host_mem_pool_cfg, str)
        self._host_mem_pool_cfg = host_mem_pool_cfg

    @property
    def rdma_traffic_class(self) -> int | None:
        """``llm.RdmaTrafficClass`` (uint32)."""
        return self._rdma_traffic_class

    @rdma_traffic_class.setter
    def rdma_traffic_class(self, rdma_traffic_class: int) -> None:
        check_uint32("rdma_traffic_class", rdma_traffic_class)
        self._rdma_traffic_class = rdma_traffic_class

    @property
    def rdma_service_level(self) -> int | None:
        """``llm.RdmaServiceLevel`` (uint32)."""
        return self._rdma_service_level

    @rdma_service_level.setter
    def rdma_service_level(self, rdma_service_level: int) -> None:
        check_uint32("rdma_service_level", rdma_service_level)
        self._rdma_service_level = rdma_service_level

    @property
    def local_comm_res(self) -> str:
        """``llm.LocalCommRes`` (implies CacheManager mode)."""
        return "" if self._local_comm_res is None else self._local_comm_res

    @local_comm_res.setter
    def local_comm_res(self, local_comm_res: str) -> None:
        check_isinstance("local_comm_res", local_comm_res, str)
        self._local_comm_res = local_comm_res

    @property
    def transfer_backend(self) -> str:
        """``llm.TransferBackend``."""
        return "" if self._transfer_backend is None else self._transfer_backend

    @transfer_backend.setter
    def transfer_backend(self, transfer_backend: str) -> None:
        check_isinstance("transfer_backend", transfer_backend, str)
        self._transfer_backend = transfer_backend

    @property
    def global_resource_config(self) -> str:
        """``llm.GlobalResourceConfig``."""
        return "" if self._global_resource_config is None else self._global_resource_config

    @global_resource_config.setter
    def global_resource_config(self, global_resource_config: str) -> None:
        check_isinstance("global_resource_config", global_resource_config, str)
        self._global_resource_config = global_resource_config
