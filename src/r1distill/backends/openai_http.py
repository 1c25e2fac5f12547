"""The openai backend's HTTP side: the client, which of the `base_urls` gets each request (the least loaded), retries
with exponential backoff and jitter (Retry-After honoured) and the API key, which is read from the environment at each
use, sent only in the Authorization header and redacted from every message.

Apart from the backend (`r1distill.backends.openai`), which builds the request bodies and reads the answers: this
module knows nothing of either, only URLs, status codes and retries (the backend's module docstring gives the rules).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from r1distill.config import UserError

if TYPE_CHECKING:
    from r1distill.backends.openai import Options

log = logging.getLogger("r1distill.backends.openai")  # the backend's logger: its retry warnings keep their name

RETRY_STATUS = {408, 425, 429} | set(range(500, 600))
MAX_RETRY_AFTER_S = 300.0  # an absurd Retry-After must not stall a run for hours
_BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)  # RFC 6750's token characters


class Transport:
    """The requests of one openai backend to its servers: `post` (retried, spread over `base_urls`) and `models`."""

    def __init__(self, opts: Options):
        self.opts = opts
        self._inflight = {u: 0 for u in opts.base_urls}
        self._next = 0  # round-robin start among equally loaded URLs
        self.requests_per_url = {u: 0 for u in opts.base_urls}  # answered requests, for the record
        self._reached: set[str] = set()  # URLs that answered (any HTTP status) in this backend's life

    def api_key(self) -> str | None:
        return os.environ.get(self.opts.api_key_env) or None

    def redact(self, text: str) -> str:
        """A server's text without the API key or any bearer token: a server may echo the request's headers in an
        error. Before any cut to length, so that no part of the key is left."""
        if key := self.api_key():
            text = text.replace(key, "***")
        return _BEARER.sub("Bearer ***", text)

    def client(self):
        import httpx2 as httpx

        key = self.api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(self.opts.timeout_s, connect=min(10.0, self.opts.timeout_s))
        limits = httpx.Limits(max_connections=self.opts.concurrency, max_keepalive_connections=self.opts.concurrency)
        return httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits)

    def _pick_url(self) -> str:
        """The base URL with the fewest requests in flight; ties go round robin."""
        urls = self.opts.base_urls
        low = min(self._inflight.values())
        for j in range(len(urls)):
            u = urls[(self._next + j) % len(urls)]
            if self._inflight[u] == low:
                self._next = (self._next + j + 1) % len(urls)
                return u
        return urls[0]

    async def post(self, client, sem: asyncio.Semaphore, body: dict, path: str | None = None) -> dict:
        import httpx2 as httpx

        path = path or ("/chat/completions" if self.opts.endpoint == "chat" else "/completions")
        attempts = self.opts.max_retries + 1
        failures: list[str] = []
        unreachable = True
        refused_url = None  # the URL of the last failure, when it was a connect error
        for attempt in range(attempts):
            wait_hint = None
            async with sem:
                url = self._pick_url()
                self._inflight[url] += 1
                try:
                    r = await client.post(url + path, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    failures.append(f"{url}: {type(e).__name__}: {self.redact(str(e))}".rstrip(": "))
                    # A slow answer (read timeout) means the server is there: only connect errors say it is not.
                    refused = isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                    unreachable &= refused
                    refused_url = url if refused else None
                    if not refused:  # it accepted the connection (then dropped it, or was slow): it was there
                        self._reached.add(url)
                    r = None
                finally:
                    self._inflight[url] -= 1
            if r is not None:
                unreachable = False
                refused_url = None
                self._reached.add(url)
                if r.status_code == 200:
                    try:
                        data = r.json()
                    except ValueError:
                        failures.append(f"{url}: HTTP 200 with a body that is not JSON: {self.redact(r.text)[:200]!r}")
                    else:
                        if isinstance(data, dict) and "error" not in data:
                            self.requests_per_url[url] += 1
                            return data
                        raise UserError(f"{url}{path} answered with an error: {self.redact(str(data))[:300]}")
                elif r.status_code in RETRY_STATUS:
                    failures.append(f"{url}: HTTP {r.status_code}: {self.redact(r.text)[:200]}")
                    wait_hint = _retry_after(r.headers.get("retry-after"))
                else:
                    hint = (f" (check the API key in ${self.opts.api_key_env})"
                            if r.status_code in (401, 403) else "")
                    raise UserError(f"{url}{path} answered HTTP {r.status_code}{hint}: {self.redact(r.text)[:300]}")
            if attempt + 1 == attempts:
                break
            delay = min(self.opts.backoff_max_s, self.opts.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
            if wait_hint is not None:
                delay = max(delay, min(wait_hint, MAX_RETRY_AFTER_S))
            log.warning("openai backend: %s; retry %d/%d in %.1fs", failures[-1][:200], attempt + 1,
                        self.opts.max_retries, delay)
            await asyncio.sleep(delay)
        last = failures[-1]
        if refused_url in self._reached:
            # It answered before and now refuses connections: it crashed or was stopped, it is not a wrong address.
            raise UserError(f"the server at {refused_url} went away: it answered earlier in this run, now it refuses "
                            f"connections ({last.split(': ', 1)[1]}, after {attempts} attempts); it crashed or was "
                            "stopped - check its log, then restart it and rerun")
        if unreachable:
            raise UserError(f"cannot reach {_urls(failures)}: {last.split(': ', 1)[1]} (after {attempts} attempts) "
                            "- is the server running?")
        raise UserError(f"the server kept failing after {attempts} attempts, last: {last}")

    def models(self) -> list[dict]:
        """The first server's GET /models entries ([] when it does not answer)."""
        import httpx2 as httpx

        key = self.api_key()
        try:
            r = httpx.get(f"{self.opts.base_urls[0]}/models", timeout=10,
                          headers={"Authorization": f"Bearer {key}"} if key else {})
            self._reached.add(self.opts.base_urls[0])
            data = r.json().get("data", []) if r.status_code == 200 else []
            return [m for m in data if isinstance(m, dict)]
        except Exception:  # noqa: BLE001 - only hints; the requests themselves report unreachable servers
            return []


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def run_sync(coro):
    """Run a coroutine to its end from synchronous code, also when called inside a running event loop (a notebook):
    then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["out"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def _urls(failures: Iterable[str]) -> str:
    seen: list[str] = []
    for f in failures:
        u = f.split(": ", 1)[0]
        if u not in seen:
            seen.append(u)
    return ", ".join(seen)
