"""Status codes of kvdist (LLM-DataDist's values) and the error it raises."""

from __future__ import annotations

import enum

from kvdist._ucx import native

KvdistError = native().KvdistError

__all__ = ["KvdistError", "StatusCode"]


class StatusCode(enum.IntEnum):
    """Result codes, numerically equal to LLM-DataDist's ``LLMStatusCode``."""

    SUCCESS = 0
    FAILED = 0xFFFFFFFF
    WAIT_PROCESS_TIMEOUT = 0x5010B001
    KV_CACHE_NOT_EXIST = 0x5010B002
    REPEAT_REQUEST = 0x5010B003
    REQUEST_ALREADY_COMPLETED = 0x5010B004
    PARAM_INVALID = 0x5010B005
    ENGINE_FINALIZED = 0x5010B006
    NOT_YET_LINK = 0x5010B007
    ALREADY_LINK = 0x5010B008
    LINK_FAILED = 0x5010B009
    UNLINK_FAILED = 0x5010B00A
    NOTIFY_PROMPT_UNLINK_FAILED = 0x5010B00B
    CLUSTER_NUM_EXCEED_LIMIT = 0x5010B00C
    PROCESSING_LINK = 0x5010B00D
    DEVICE_OUT_OF_MEMORY = 0x5010B00E
    PREFIX_ALREADY_EXIST = 0x5010B00F
    PREFIX_NOT_EXIST = 0x5010B010
    SEQ_LEN_OVER_LIMIT = 0x5010B011
    NO_FREE_BLOCK = 0x5010B012
    BLOCKS_OUT_OF_MEMORY = 0x5010B013
    EXIST_LINK = 0x5010B018
    FEATURE_NOT_ENABLED = 0x5010B019
    TIMEOUT = 0x5010B01A
    LINK_BUSY = 0x5010B01B
    OUT_OF_MEMORY = 0x5010B01C
    DEVICE_MEM_ERROR = 507053
    SUSPECT_REMOTE_ERROR = 507057
    UNKNOWN_ERROR = -1

    @classmethod
    def of(cls, code: int) -> StatusCode:
        """The member for ``code``; unknown values map to ``FAILED``."""
        try:
            return cls(code)
        except ValueError:
            return cls.FAILED
