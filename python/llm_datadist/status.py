"""Status codes, ``LLMException`` and ``Status`` of the ``llm_datadist`` API.

The numeric values are LLM-DataDist's (reference §2); kvdist's native layer
returns the same integers, so ``LLMStatusCode(code)`` maps them directly.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

__all__ = [
    "LLMStatusCode",
    "LLMException",
    "Status",
    "code_2_status",
    "raise_if_false",
    "raise_if_true",
    "handle_llm_status",
]


class LLMStatusCode(IntEnum):
    """Result codes of LLM-DataDist calls (values as in the original)."""

    LLM_SUCCESS = 0
    LLM_FAILED = 0xFFFFFFFF
    LLM_WAIT_PROCESS_TIMEOUT = 0x5010B001
    LLM_KV_CACHE_NOT_EXIST = 0x5010B002
    LLM_REPEAT_REQUEST = 0x5010B003
    LLM_REQUEST_ALREADY_COMPLETED = 0x5010B004
    LLM_PARAM_INVALID = 0x5010B005
    LLM_ENGINE_FINALIZED = 0x5010B006
    LLM_NOT_YET_LINK = 0x5010B007
    LLM_ALREADY_LINK = 0x5010B008
    LLM_LINK_FAILED = 0x5010B009
    LLM_UNLINK_FAILED = 0x5010B00A
    LLM_NOTIFY_PROMPT_UNLINK_FAILED = 0x5010B00B
    LLM_CLUSTER_NUM_EXCEED_LIMIT = 0x5010B00C
    LLM_PROCESSING_LINK = 0x5010B00D
    LLM_DEVICE_OUT_OF_MEMORY = 0x5010B00E
    LLM_PREFIX_ALREADY_EXIST = 0x5010B00F
    LLM_PREFIX_NOT_EXIST = 0x5010B010
    LLM_SEQ_LENOVERLIMIT = 0x5010B011
    LLM_NO_FREE_BLOCK = 0x5010B012
    LLM_BLOCKS_OUT_OF_MEMORY = 0x5010B013
    LLM_EXIST_LINK = 0x5010B018
    LLM_FEATURE_NOT_ENABLED = 0x5010B019
    LLM_TIMEOUT = 0x5010B01A
    LLM_LINK_BUSY = 0x5010B01B
    LLM_OUT_OF_MEMORY = 0x5010B01C
    LLM_DEVICE_MEM_ERROR = 507053
    LLM_SUSPECT_REMOTE_ERROR = 507057
    LLM_UNKNOWN_ERROR = -1

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


def code_2_status(code: int) -> LLMStatusCode:
    """Maps a native result code to an ``LLMStatusCode``.

    Codes without a Python member (e.g. the C++-only 0x5010B014..17) map to
    ``LLM_FAILED``, as in the original.
    """
    try:
        return LLMStatusCode(code)
    except ValueError:
        return LLMStatusCode.LLM_FAILED


class LLMException(RuntimeError):
    """The error raised by ``llm_datadist`` for invalid values and failed calls."""

    def __init__(self, *args: Any, status_code: LLMStatusCode = LLMStatusCode.LLM_SUCCESS) -> None:
        super().__init__(*args)
        self._status_code = status_code

    @property
    def status_code(self) -> LLMStatusCode:
        """The ``LLMStatusCode`` that explains the failure."""
        return self._status_code


class Status:
    """A status code wrapper with ``is_ok()``."""

    def __init__(self, status_code: int | LLMStatusCode = LLMStatusCode.LLM_SUCCESS) -> None:
        self._status_code = code_2_status(int(status_code))

    def is_ok(self) -> bool:
        """True for ``LLM_SUCCESS``."""
        return self._status_code == LLMStatusCode.LLM_SUCCESS

    @property
    def status_code(self) -> LLMStatusCode:
        """The wrapped ``LLMStatusCode``."""
        return self._status_code

    def __repr__(self) -> str:
        return f"Status({self._status_code})"


def _format(msg: str, args: tuple[Any, ...]) -> str:
    return msg.format(*args) if args else msg


def raise_if_false(
    expression: Any,
    msg: str,
    *args: Any,
    status_code: LLMStatusCode = LLMStatusCode.LLM_PARAM_INVALID,
) -> None:
    """Raises ``LLMException(status_code)`` with ``msg.format(*args)`` if falsy."""
    if not expression:
        raise LLMException(_format(msg, args), status_code=status_code)


def raise_if_true(
    expression: Any,
    msg: str,
    *args: Any,
    status_code: LLMStatusCode = LLMStatusCode.LLM_PARAM_INVALID,
) -> None:
    """Raises ``LLMException(status_code)`` with ``msg.format(*args)`` if truthy."""
    if expression:
        raise LLMException(_format(msg, args), status_code=status_code)


def handle_llm_status(code: int, func_name: str, info: str) -> None:
    """Raises ``LLMException`` for a non-success native code.

    Message format as in the original:
    ``"{func_name} failed, error code is {LLMStatusCode.X}, {info}."``.
    """
    status = code_2_status(code)
    if status != LLMStatusCode.LLM_SUCCESS:
        raise LLMException(
            f"{func_name} failed, error code is {status}, {info}.", status_code=status
        )
