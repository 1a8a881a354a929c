"""Argument checks with the original's exception classes.

* wrong Python type (also of list/tuple elements and dict keys/values) ->
  ``TypeError``; ``None`` passes unless ``allow_none=False``; ``bool`` passes
  ``int`` checks (it is an ``int`` subclass), as in the original;
* an int outside its C type's range -> ``ValueError``.
"""

from __future__ import annotations

from typing import Any, List, Tuple, Type, Union

_MAX_UINT16 = 2**16 - 1
_MAX_UINT32 = 2**32 - 1
_MAX_UINT64 = 2**64 - 1
_MIN_INT32 = -(2**31)
_MAX_INT32 = 2**31 - 1
_MIN_INT64 = -(2**63)
_MAX_INT64 = 2**63 - 1

ClassSpec = Union[Type[Any], List[Type[Any]], Tuple[Type[Any], ...]]


def _as_list(classes: ClassSpec) -> list[type]:
    if isinstance(classes, (list, tuple)):
        return list(classes)
    return [classes]


def _names(classes: list[type]) -> list[str]:
    return [clazz.__name__ for clazz in classes]


def check_isinstance(
    arg_name: str,
    arg_value: Any,
    classes: ClassSpec,
    inner_class: ClassSpec | None = None,
    extra_fmt: str = "",
    allow_none: bool = True,
) -> Any:
    """Raises ``TypeError`` unless ``arg_value`` is one of ``classes``.

    With ``inner_class``, every element of a list/tuple value must be one of
    it too. Returns ``arg_value``.
    """
    if allow_none and arg_value is None:
        return arg_value
    wanted = _as_list(classes)
    if not any(isinstance(arg_value, clazz) for clazz in wanted):
        raise TypeError(
            f"{extra_fmt}{arg_name} only support {_names(wanted)}, but got {type(arg_value)}."
        )
    if inner_class is not None:
        inner = _as_list(inner_class)
        for item in arg_value:
            if not any(isinstance(item, clazz) for clazz in inner):
                raise TypeError(
                    f"{extra_fmt}{arg_name} element only support {_names(inner)}, "
                    f"but got {type(item)}."
                )
    return arg_value


def check_dict(arg_name: str, arg_value: dict, k_class: type, v_class: type) -> None:
    """Raises ``TypeError`` unless every key is ``k_class`` and value ``v_class``."""
    for key, value in arg_value.items():
        if not isinstance(key, k_class):
            raise TypeError(f"{arg_name} dict key only support {k_class}, but got {type(key)}.")
        if not isinstance(value, v_class):
            raise TypeError(f"{arg_name} dict value only support {v_class}, but got {type(value)}.")


def _check_range(arg_name: str, arg_value: Any, low: int, high: int, c_type: str) -> int:
    check_isinstance(arg_name, arg_value, int, allow_none=False)
    if arg_value < low or arg_value > high:
        raise ValueError(f"{arg_name}'s value is out of range,{arg_value} is not a {c_type} value.")
    return arg_value


def check_uint16(arg_name: str, arg_value: Any) -> int:
    """``TypeError`` unless int, ``ValueError`` unless in [0, 2**16)."""
    return _check_range(arg_name, arg_value, 0, _MAX_UINT16, "uint16")


def check_uint32(arg_name: str, arg_value: Any) -> int:
    """``TypeError`` unless int, ``ValueError`` unless in [0, 2**32)."""
    return _check_range(arg_name, arg_value, 0, _MAX_UINT32, "uint32")


def check_uint64(arg_name: str, arg_value: Any) -> int:
    """``TypeError`` unless int, ``ValueError`` unless in [0, 2**64)."""
    return _check_range(arg_name, arg_value, 0, _MAX_UINT64, "uint64")


def check_int32(arg_name: str, arg_value: Any) -> int:
    """``TypeError`` unless int, ``ValueError`` unless in int32's range."""
    return _check_range(arg_name, arg_value, _MIN_INT32, _MAX_INT32, "int32")


def check_int64(arg_name: str, arg_value: Any) -> int:
    """``TypeError`` unless int, ``ValueError`` unless in int64's range."""
    return _check_range(arg_name, arg_value, _MIN_INT64, _MAX_INT64, "int64")


def check_list_uint64(arg_name: str, arg_value: list[int] | tuple[int, ...]) -> None:
    """``ValueError`` unless every element is a uint64 (types checked before)."""
    for value in arg_value:
        check_uint64(arg_name, value)
