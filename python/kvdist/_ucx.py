"""UCX for ``kvdist._kvdist``.

A wheel of kvdist is built against UCX from PyPI (the ``libucx-cu12``
wheel, a dependency): its libraries are loaded here, before the extension
is imported, as RAPIDS' ucxx does (the extension also finds them through
its RPATH). ``KVDIST_UCX=system`` leaves them out, for a kvdist built
against the system's UCX (``-C cmake.define.KVDIST_UCX=system``, e.g. for
RDMA, which the PyPI UCX is built without).
"""

from __future__ import annotations

import os
from types import ModuleType


def load() -> None:
    """Loads the PyPI UCX's libraries, where that wheel is installed."""
    if os.environ.get("KVDIST_UCX", "") == "system":
        return
    try:
        import libucx
    except ImportError:
        return  # a kvdist built against the system's UCX
    libucx.load_library()


def native() -> ModuleType:
    """``kvdist._kvdist``; an ImportError that says what to install if UCX is missing."""
    try:
        from kvdist import _kvdist
    except ImportError as exc:
        if "libuc" in str(exc):
            raise ImportError(f"kvdist needs UCX ({exc}): pip install libucx-cu12") from None
        raise
    return _kvdist
