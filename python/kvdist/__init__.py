"""kvdist: layer-wise KV-cache transfer between prefill and decode processes.

The native Python API over libkvdist. Code written for Huawei's
``llm_datadist`` should import the ``llm_datadist`` package instead.
"""

from kvdist import _ucx

_ucx.load()  # before anything imports the extension

from kvdist.cache import Cache
from kvdist.datadist import DataDist, Destination, LayerEvents, Link, Role, Task
from kvdist.dtypes import DataType
from kvdist.status import KvdistError, StatusCode

__all__ = [
    "Cache",
    "DataDist",
    "DataType",
    "Destination",
    "KvdistError",
    "LayerEvents",
    "Link",
    "Role",
    "StatusCode",
    "Task",
]
__version__ = "0.1.0"
