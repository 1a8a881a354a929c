"""Element types: GE's ``DataType`` numbering, and conversions from numpy and torch."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

__all__ = ["DataType", "data_type_of", "numpy_dtype"]


class DataType(enum.IntEnum):
    """Element types, numbered as GE's ``ge::DataType`` (and LLM-DataDist's ``DataType``)."""

    FLOAT = 0
    FLOAT16 = 1
    INT8 = 2
    INT32 = 3
    UINT8 = 4
    INT16 = 6
    UINT16 = 7
    UINT32 = 8
    INT64 = 9
    UINT64 = 10
    DOUBLE = 11
    BOOL = 12
    BF16 = 27


_NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.FLOAT16: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.UINT8: np.uint8,
    DataType.INT16: np.int16,
    DataType.UINT16: np.uint16,
    DataType.UINT32: np.uint32,
    DataType.INT64: np.int64,
    DataType.UINT64: np.uint64,
    DataType.DOUBLE: np.float64,
    DataType.BOOL: np.bool_,
    # numpy has no bfloat16: its bits are shown as uint16.
    DataType.BF16: np.uint16,
}

_NAMES = {
    "float32": DataType.FLOAT,
    "float": DataType.FLOAT,
    "float16": DataType.FLOAT16,
    "half": DataType.FLOAT16,
    "bfloat16": DataType.BF16,
    "bf16": DataType.BF16,
    "int8": DataType.INT8,
    "int16": DataType.INT16,
    "int32": DataType.INT32,
    "int64": DataType.INT64,
    "uint8": DataType.UINT8,
    "uint16": DataType.UINT16,
    "uint32": DataType.UINT32,
    "uint64": DataType.UINT64,
    "float64": DataType.DOUBLE,
    "double": DataType.DOUBLE,
    "bool": DataType.BOOL,
}


def data_type_of(dtype: Any) -> DataType:
    """``DataType`` of a DataType, a name ("bfloat16"), a numpy dtype or a torch dtype."""
    if isinstance(dtype, DataType):
        return dtype
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch.") :]
    if name in _NAMES:
        return _NAMES[name]
    try:
        np_name = np.dtype(dtype).name
    except TypeError as e:
        raise TypeError(f"unsupported element type {dtype!r}") from e
    if np_name in _NAMES:
        return _NAMES[np_name]
    raise TypeError(f"unsupported element type {dtype!r}")


def numpy_dtype(dtype: DataType) -> np.dtype:
    """The numpy dtype that views elements of ``dtype`` (bfloat16 as uint16)."""
    return np.dtype(_NUMPY[dtype])
