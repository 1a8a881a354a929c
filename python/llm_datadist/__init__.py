"""``llm_datadist``: kvdist's drop-in for Huawei CANN's LLM-DataDist Python API.

Code written for the original runs unchanged on CPU hosts (KvCacheManager
mode): ``from llm_datadist import *`` gives the original's names.
``TensorDesc``, ``Tensor`` and ``KvCacheManager`` load lazily, as in the
original. Importing the package sets ``AUTO_USE_UC_MEMORY=0`` if unset.
"""

from __future__ import annotations

import os
from typing import Any

from llm_datadist.configs import LLMClusterInfo, LlmConfig, LLMRole
from llm_datadist.configs import LlmConfig as LLMConfig
from llm_datadist.data_type import DataType
from llm_datadist.llm_datadist import LLMDataDist
from llm_datadist.llm_types import (
    BlocksCacheKey,
    Cache,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    CacheTask,
    KvCache,
    LayerSynchronizer,
    MemInfo,
    Memtype,
    Placement,
    RegisterMemStatus,
    TransferConfig,
    TransferWithCacheKeyConfig,
)
from llm_datadist.status import LLMException, LLMStatusCode, Status

__all__ = [
    "LLMClusterInfo",
    "LLMStatusCode",
    "LLMException",
    "LLMRole",
    "LlmConfig",
    "LLMConfig",
    "DataType",
    "Status",
    "CacheDesc",
    "CacheKey",
    "CacheKeyByIdAndIndex",
    "KvCache",
    "Cache",
    "BlocksCacheKey",
    "LLMDataDist",
    "Placement",
    "RegisterMemStatus",
    "LayerSynchronizer",
    "TransferConfig",
    "CacheTask",
    "TransferWithCacheKeyConfig",
    "Memtype",
    "MemInfo",
    "TensorDesc",
    "Tensor",
    "KvCacheManager",
]


def __getattr__(name: str) -> Any:
    """Loads ``TensorDesc``, ``Tensor`` and ``KvCacheManager`` on first use."""
    if name == "TensorDesc":
        from llm_datadist.llm_types import TensorDesc

        return TensorDesc
    if name == "Tensor":
        from llm_datadist.llm_types import Tensor

        return Tensor
    if name == "KvCacheManager":
        from llm_datadist.kv_cache_manager import KvCacheManager

        return KvCacheManager
    raise AttributeError(f"Module 'llm_datadist' has no attribute '{name}'")


if "AUTO_USE_UC_MEMORY" not in os.environ:
    os.environ["AUTO_USE_UC_MEMORY"] = "0"
