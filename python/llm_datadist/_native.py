"""Access to kvdist's native binding and translation of its errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from llm_datadist.status import LLMException, LLMStatusCode, code_2_status

T = TypeVar("T")


def load() -> Any:
    """Returns ``kvdist._kvdist``; ``LLMException(LLM_FAILED)`` if it cannot be imported."""
    try:
        from kvdist import _kvdist
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise LLMException(
            f"kvdist native module (kvdist._kvdist) is not available: {exc}",
            status_code=LLMStatusCode.LLM_FAILED,
        ) from exc
    return _kvdist


def call(func_name: str, info: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Calls ``func``; a ``KvdistError`` becomes ``LLMException`` in the original's format.

    ``"{func_name} failed, error code is {LLMStatusCode.X}, {info}."`` where
    ``info`` is the caller's context followed by kvdist's message.
    """
    native = load()
    try:
        return func(*args, **kwargs)
    except native.KvdistError as exc:
        status = code_2_status(int(getattr(exc, "code", LLMStatusCode.LLM_FAILED)))
        message = str(getattr(exc, "message", "") or exc).rstrip(".")
        detail = f"{info}, {message}" if info else message
        raise LLMException(
            f"{func_name} failed, error code is {status}, {detail}.", status_code=status
        ) from None
