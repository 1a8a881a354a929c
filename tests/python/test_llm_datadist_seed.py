"""The seed example of transfer_cache_async runs unchanged.

``helpers/seed_prompt.py`` is the seed's 调用示例 block with its ``...``
filled in: it is the PROMPT process; it starts a DECODER process that
allocates a cache, links to the PROMPT, hands over its 2 * num_layers
addresses and, after the transfer, checks the bytes in its own memory.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.llm_helpers import HELPERS_DIR, child_env

pytest.importorskip("kvdist._kvdist")


def test_seed_example() -> None:
    out = subprocess.run(
        [sys.executable, str(HELPERS_DIR / "seed_prompt.py")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "SEED OK" in out.stdout
