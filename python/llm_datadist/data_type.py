"""``DataType``: element types of KV caches, with GE's ``ge::DataType`` values."""

from __future__ import annotations

from enum import Enum

__all__ = ["DataType", "data_type_size"]
# Also, as the original (numpy imported on first use): ``dtype_to_np_dtype``
# (DataType -> numpy type; DT_BF16 -> float16, numpy has no bfloat16),
# ``valid_np_dtypes`` and ``np_dtype_to_dtype`` (numpy dtype -> DataType).


class DataType(Enum):
    """Element type of a cache tensor (values are GE's ``ge::DataType`` ints)."""

    DT_FLOAT = 0
    DT_FLOAT16 = 1
    DT_BF16 = 27
    DT_INT8 = 2
    DT_INT16 = 6
    DT_UINT16 = 7
    DT_UINT8 = 4
    DT_INT32 = 3
    DT_INT64 = 9
    DT_UINT32 = 8
    DT_UINT64 = 10
    DT_BOOL = 12
    DT_DOUBLE = 11
    DT_STRING = 13


_SIZES = {
    DataType.DT_FLOAT: 4,
    DataType.DT_FLOAT16: 2,
    DataType.DT_BF16: 2,
    DataType.DT_INT8: 1,
    DataType.DT_INT16: 2,
    DataType.DT_UINT16: 2,
    DataType.DT_UINT8: 1,
    DataType.DT_INT32: 4,
    DataType.DT_INT64: 8,
    DataType.DT_UINT32: 4,
    DataType.DT_UINT64: 8,
    DataType.DT_BOOL: 1,
    DataType.DT_DOUBLE: 8,
}


def data_type_size(data_type: DataType) -> int:
    """Bytes per element; -1 for types without a fixed size (``DT_STRING``)."""
    return _SIZES.get(data_type, -1)


_NUMPY_NAMES = ("dtype_to_np_dtype", "valid_np_dtypes", "np_dtype_to_dtype")


def __getattr__(name: str) -> object:
    """The numpy tables, built on first use so numpy is not imported before."""
    if name not in _NUMPY_NAMES:
        raise AttributeError(f"module {__name__} has no attribute {name}")
    import numpy as np

    to_np = {
        DataType.DT_FLOAT: np.float32,
        DataType.DT_FLOAT16: np.float16,
        DataType.DT_BF16: np.float16,
        DataType.DT_INT8: np.int8,
        DataType.DT_INT16: np.int16,
        DataType.DT_UINT16: np.uint16,
        DataType.DT_UINT8: np.uint8,
        DataType.DT_INT32: np.int32,
        DataType.DT_INT64: np.int64,
        DataType.DT_UINT32: np.uint32,
        DataType.DT_UINT64: np.uint64,
        DataType.DT_BOOL: np.bool_,
        DataType.DT_DOUBLE: np.double,
        DataType.DT_STRING: np.bytes_,
    }
    # Every type but BF16 maps back (its numpy stand-in is FLOAT16's).
    from_np = {np.dtype(t): d for d, t in to_np.items() if d is not DataType.DT_BF16}
    tables = {
        "dtype_to_np_dtype": to_np,
        "valid_np_dtypes": list(to_np.values()),
        "np_dtype_to_dtype": from_np,
    }
    globals().update(tables)
    return tables[name]
