"""Caches: kvdist-allocated or caller-owned memory, viewed as numpy arrays."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kvdist.dtypes import DataType, data_type_of, numpy_dtype

if TYPE_CHECKING:
    from kvdist.datadist import DataDist

__all__ = ["Cache", "buffer_address"]


@dataclass(eq=False)
class Cache:
    """``num_tensors`` tensors of one shape and type, in memory kvdist registered.

    Layer-wise transfers read tensors as K0, V0, K1, V1, ...: layer ``l`` is
    tensors ``2l`` and ``2l + 1`` (``tensors_per_layer`` 2; with 1, one
    tensor holds a layer's K and V, as vLLM's CPU cache does). ``addrs`` are this process's addresses;
    send them to the PROMPT so that it can address its pushes (a
    ``Destination``). Views from :meth:`tensor` are valid until :meth:`free`.
    """

    cache_id: int
    shape: tuple[int, ...]
    dtype: DataType
    addrs: list[int]
    blocks: bool
    _owner: DataDist | None = field(repr=False, default=None)
    _keepalive: Any = field(repr=False, default=None)  # caller-owned memory
    tensors_per_layer: int = 2

    @property
    def num_tensors(self) -> int:
        return len(self.addrs)

    @property
    def num_layers(self) -> int:
        return len(self.addrs) // self.tensors_per_layer

    @property
    def tensor_bytes(self) -> int:
        return math.prod(self.shape) * numpy_dtype(self.dtype).itemsize

    def tensor(self, index: int) -> np.ndarray:
        """A writable numpy view (no copy) of tensor ``index``."""
        if not 0 <= index < len(self.addrs):
            raise IndexError(f"tensor {index} of {len(self.addrs)}")
        raw = (ctypes.c_char * self.tensor_bytes).from_address(self.addrs[index])
        return np.frombuffer(raw, dtype=numpy_dtype(self.dtype)).reshape(self.shape)

    def layer(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (K, V) views of layer ``index`` (``tensors_per_layer`` 2)."""
        if self.tensors_per_layer != 2:
            raise ValueError("layer() needs separate K and V tensors; use tensor()")
        return self.tensor(2 * index), self.tensor(2 * index + 1)

    def free(self) -> None:
        """Deallocates (deferred until no write into it can still land)."""
        if self._owner is not None:
            self._owner._free(self)
            self._owner = None

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def buffer_address(obj: Any) -> tuple[int, int, Any]:
    """(address, bytes, element type) of a C-contiguous numpy array, torch CPU
    tensor or buffer-protocol object."""
    if type(obj).__module__.startswith("torch"):
        if obj.device.type != "cpu":
            raise ValueError(f"tensor on {obj.device} is not host memory")
        if not obj.is_contiguous():
            raise ValueError("tensor is not contiguous")
        return int(obj.data_ptr()), obj.numel() * obj.element_size(), obj.dtype
    arr = obj if isinstance(obj, np.ndarray) else np.frombuffer(obj, dtype=np.uint8)
    if not arr.flags["C_CONTIGUOUS"]:
        raise ValueError("array is not C-contiguous")
    return int(arr.ctypes.data), int(arr.nbytes), arr.dtype


def shape_of(obj: Any) -> tuple[int, ...]:
    """Shape of a numpy array or torch tensor; (bytes,) for other buffers."""
    shape = getattr(obj, "shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape)
    return (memoryview(obj).nbytes,)


def check_same(tensors: Sequence[Any]) -> tuple[tuple[int, ...], DataType]:
    """The common shape and type of ``tensors`` (ValueError if they differ)."""
    if not tensors:
        raise ValueError("no tensors given")
    shapes = {shape_of(t) for t in tensors}
    types = {data_type_of(buffer_address(t)[2]) for t in tensors}
    if len(shapes) != 1 or len(types) != 1:
        raise ValueError("all tensors of a cache need one shape and one element type")
    return shapes.pop(), types.pop()
