"""Whether the Hugging Face hub can be reached, decided once per process and fast.

Offline, huggingface_hub retries every request five times with back-off (about 25 s per file), and transformers
and datasets each ask for several files: a misspelt model name cost 50 s and an offline decontamination two
minutes. So before the first hub request we probe the endpoint once (one HTTP request, a few seconds at most);
when it fails, or `HF_HUB_OFFLINE` is set, every later hub call in this process goes straight to the local cache
(the libraries' own offline mode), and our callers fail in one line naming why.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PROBE_TIMEOUT = 3.0  # seconds for the one probe request (a dropped connection, not a refused one, costs this)
_TRUE = ("1", "ON", "YES", "TRUE")
_state: dict = {}  # "reason": None once the hub answered, else why not; "saved": flags _go_offline changed


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_reason() -> str | None:
    """None when the hub answers; else a short reason ("HF_HUB_OFFLINE is set", "cannot connect to ...")."""
    if "reason" not in _state:
        _state["reason"] = _probe()
        if _state["reason"]:
            _go_offline()
    return _state["reason"]


def _probe() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in _TRUE:
            return f"{var} is set"
    url = endpoint()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None  # it answered (any status): reachable
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", e)
        return f"cannot connect to {url}: {' '.join(str(why).split()) or type(why).__name__}"
    return None


def _go_offline() -> None:
    """Switch the hub libraries (imported now or later) to their offline mode: cache only, no retries."""
    saved = _state.setdefault("saved", {})
    saved["env"] = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # read at import by huggingface_hub and datasets (if imported later)
    for module in ("huggingface_hub.constants", "datasets.config"):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(getattr(mod, "HF_HUB_OFFLINE", None), bool):
            saved[module] = mod.HF_HUB_OFFLINE
            mod.HF_HUB_OFFLINE = True


def reset() -> None:
    """Forget the probe's answer and undo what going offline changed (tests)."""
    saved = _state.get("saved", {})
    if "env" in saved:
        if saved["env"] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved["env"]
    for module, value in saved.items():
        if module != "env" and module in sys.modules:
            sys.modules[module].HF_HUB_OFFLINE = value
    _state.clear()
