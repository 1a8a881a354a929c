"""Runs vLLM engines (engine_main.py) in their own processes for the tests."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvdist.integrations.vllm.tiny_model import write_tiny_llama

HERE = Path(__file__).resolve().parent

READY_S = 240  # engine start-up; three engines share two cores
RUN_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts(n: int, lo: int, hi: int, seed: int) -> list[list[int]]:
    r = random.Random(seed)
    return [[r.randrange(1, 500) for _ in range(r.randint(lo, hi))] for _ in range(n)]


class Engines:
    """Starts engines, lets them all go at once, collects what they wrote."""

    def __init__(self, tmp: Path, model: str) -> None:
        self.tmp = tmp
        self.model = model
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.logs: list[Any] = []

    def start(self, name: str, role: str, job: dict[str, Any], extra: dict[str, Any]) -> None:
        job_file = self.tmp / f"{name}.job.json"
        job_file.write_text(json.dumps(job))
        out = self.tmp / f"{name}.out.json"
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 (closed in close())
        self.logs.append(log)
        env = dict(os.environ, UCX_NET_DEVICES=os.environ.get("UCX_NET_DEVICES", "lo"))
        cmd = [
            sys.executable,
            str(HERE / "engine_main.py"),
            role,
            self.model,
            str(job_file),
            str(out),
            json.dumps(extra),
        ]
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[name] = (p, out)

    def _wait(self, suffix: str, timeout: float, crash: frozenset = frozenset()) -> None:
        deadline = time.monotonic() + timeout
        for name, (p, out) in self.procs.items():
            path = Path(str(out) + suffix)
            while not path.exists():
                if p.poll() is not None and name in crash:
                    break
                if p.poll() is not None:
                    pytest.fail(f"engine {name} exited {p.returncode}:\n{self.log_tail(name)}")
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"engine {name}: no {path.name} in {timeout} s\n{self.log_tail(name)}"
                    )
                time.sleep(0.1)

    def run(self, crash: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
        """Results per engine; the engines named in ``crash`` must instead
        die (exit code 3, the fault hooks' own) and get {"exit": code}."""
        self._wait(".ready", READY_S)
        for _, out in self.procs.values():
            Path(str(out) + ".go").touch()
        self.started = time.monotonic()
        self._wait("", RUN_S, frozenset(crash))
        results = {}
        for name, (p, out) in self.procs.items():
            p.wait(timeout=120)
            if name in crash:
                assert p.returncode == 3, f"{name} exited {p.returncode}\n{self.log_tail(name)}"
                results[name] = {"exit": p.returncode}
            else:
                results[name] = json.loads(out.read_text())
        return results

    def log_tail(self, name: str, lines: int = 40) -> str:
        text = (self.tmp / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def close(self) -> None:
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> str:
    return write_tiny_llama(str(tmp_path_factory.mktemp("model") / "tiny-llama"))


@pytest.fixture
def engines(tmp_path, model_dir):
    e = Engines(tmp_path, model_dir)
    yield e
    e.close()
