"""Pure functions behind the curate filters and their statistics.

Text is compared as *words*: lowercased, with every non-word character turned into a space, so
"Tom's $12." and "tom s 12" are the same words. Word n-grams (and 5-gram shingles for near-duplicate
detection) are taken over those words; a text shorter than n words is one n-gram of all its words.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

_NON_WORD_RE = re.compile(r"[^\w\s]|_")
_SCRIPT_WORDS = ("LETTER", "IDEOGRAPH", "SYLLABLE", "CHARACTER")


def words(text: str) -> list[str]:
    """Lowercased words with punctuation stripped (treated as a separator)."""
    return _NON_WORD_RE.sub(" ", text.lower()).split()


def word_ngrams(ws: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The distinct word n-grams of `ws`; a text shorter than n words is one n-gram of all its words."""
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


# ---- per-trace filters -------------------------------------------------------------------------
def repeat_ngram_share(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that repeat an earlier one (0 = no repeats, ->1 = a loop)."""
    ws = text.split()
    total = len(ws) - n + 1
    if total <= 1:
        return 0.0
    distinct = len({tuple(ws[i : i + n]) for i in range(total)})
    return 1 - distinct / total


@lru_cache(maxsize=65536)
def script_of(ch: str) -> str | None:
    """The Unicode script of a letter from its character name ("LATIN", "CJK", "CYRILLIC", ...).

    None for non-letters and for letter-like symbols whose names carry no script (e.g. "DOUBLE-STRUCK
    CAPITAL R", "MATHEMATICAL ITALIC SMALL X"), so math notation never counts as another language.
    """
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if any(w in name for w in _SCRIPT_WORDS) else None


def _script_counts(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for ch, k in Counter(text).items():  # count characters in C first: a text has few distinct ones
        if (script := script_of(ch)) is not None:
            counts[script] += k
    return counts


@lru_cache(maxsize=4096)  # every sample of a problem asks for the same problem text
def dominant_script(text: str) -> str | None:
    """The most common script among the letters of `text`, None if it has no letters."""
    counts = _script_counts(text)
    return counts.most_common(1)[0][0] if counts else None


def foreign_script_share(text: str, script: str | None) -> float:
    """Share of the letters of `text` whose script is not `script` (0.0 when either has no letters)."""
    counts = _script_counts(text)
    total = sum(counts.values())
    if script is None or not total:
        return 0.0
    return 1 - counts[script] / total


def length_reason(num_tokens: int, min_tokens: int | None, max_tokens: int | None) -> str | None:
    """`too_short` / `too_long` when `num_tokens` lies outside the inclusive bounds, else None."""
    if min_tokens is not None and num_tokens < min_tokens:
        return "too_short"
    if max_tokens is not None and num_tokens > max_tokens:
        return "too_long"
    return None


# ---- per-problem statistics --------------------------------------------------------------------
def pass_rates(samples: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """Share of correct samples per problem id, from (problem id, correct) pairs."""
    seen: dict[str, list[int]] = {}
    for pid, correct in samples:
        seen.setdefault(pid, [0, 0])
        seen[pid][0] += bool(correct)
        seen[pid][1] += 1
    return {pid: ok / n for pid, (ok, n) in seen.items()}


def outside(rate: float, bounds: Sequence[float]) -> bool:
    """True when `rate` lies outside the inclusive range [bounds[0], bounds[1]]."""
    return not bounds[0] <= rate <= bounds[1]


def histogram(rates: Iterable[float], bins: int = 10) -> list[int]:
    """Counts of values in [0, 1] over `bins` equal bins; 1.0 falls in the last bin."""
    counts = [0] * bins
    for r in rates:
        counts[min(int(r * bins), bins - 1)] += 1
    return counts


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Mean, nearest-rank p50 and p90, and max of `values` (all 0 when empty)."""
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "max": 0.0}
    s = sorted(values)
    rank = lambda q: s[max(math.ceil(q * len(s)) - 1, 0)]
    return {"mean": round(sum(s) / len(s), 2), "p50": rank(0.5), "p90": rank(0.9), "max": s[-1]}


# ---- decontamination ---------------------------------------------------------------------------
NgramIndex = dict[tuple[str, ...], list[tuple[str, str]]]


def ngram_index(items: Iterable[tuple[str, str, str]], n: int) -> NgramIndex:
    """Map every word n-gram of each (benchmark, id, text) item to the items that contain it."""
    index: NgramIndex = {}
    for bench, item_id, text in items:
        for gram in word_ngrams(words(text), n):
            index.setdefault(gram, []).append((bench, item_id))
    return index


def contamination(text: str, index: NgramIndex, n: int) -> set[tuple[str, str]]:
    """The (benchmark, id) items that share at least one word n-gram with `text`."""
    return {hit for gram in word_ngrams(words(text), n) for hit in index.get(gram, ())}


# ---- exact and near-duplicate detection --------------------------------------------------------
_PERMS = 128  # MinHash functions; LSH bands are cut from them to suit the threshold
_rng = np.random.default_rng(20250101)  # fixed: the same input always gives the same signatures
_MUL = _rng.integers(1, 2**63, _PERMS, dtype=np.uint64) | np.uint64(1)  # odd multipliers
_ADD = _rng.integers(0, 2**63, _PERMS, dtype=np.uint64)


def _shingles(text: str, n: int, cache: dict[str, int]) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the word n-gram shingles of `text`."""
    ws = words(text)
    for w in ws:
        if w not in cache:
            cache[w] = zlib.crc32(w.encode())  # stable across processes and runs, unlike hash()
    ids = np.array([cache[w] for w in ws], np.uint64)
    if len(ids) < n:
        n = len(ids)
    h = np.zeros(len(ids) - n + 1, np.uint64)
    for k in range(n):  # polynomial hash of each window, wrapping mod 2**64
        h = h * np.uint64(0x100000001B3) + ids[k : len(ids) - n + 1 + k]
    return np.unique(h)


def _minhash(sh: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """MinHash signature; multiply-shift hashing: the high 32 bits of a*x+b (mod 2**64) are universal."""
    sig = np.full(_PERMS, np.iinfo(np.uint64).max, np.uint64)
    for s in range(0, len(sh), chunk):  # chunks bound the (shingles x perms) temporary for long texts
        np.minimum(sig, ((sh[s : s + chunk, None] * _MUL + _ADD) >> np.uint64(32)).min(axis=0), out=sig)
    return sig


def _band_rows(threshold: float) -> int:
    """Rows per LSH band: the most selective that still finds pairs at `threshold` with p >= 0.99."""
    best = 1
    for r in (1, 2, 4, 8, 16, 32):
        if 1 - (1 - threshold**r) ** (_PERMS // r) >= 0.99:
            best = r
    return best


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def find_duplicates(texts: Sequence[str], threshold: float | None = None, n: int = 5) -> list[int | None]:
    """For each text, the index of an earlier kept text it duplicates, else None (the first one wins).

    Duplicates have the same words, or (with `threshold`) a Jaccard similarity of their word n-gram
    shingles >= threshold. Candidate pairs come from MinHash LSH and are confirmed on the exact
    shingle sets, recomputed from the text, so only signatures and 16-byte digests of the word
    sequences stay in memory (`texts` may be a lazy sequence that reads a text when asked).
    """
    out: list[int | None] = [None] * len(texts)
    exact: dict[bytes, int] = {}
    buckets: dict[tuple[int, bytes], list[int]] = {}
    cache: dict[str, int] = {}
    rows = _band_rows(threshold) if threshold is not None else 0
    for i, text in enumerate(texts):
        joined = " ".join(words(text))
        key = hashlib.blake2b(joined.encode(), digest_size=16).digest()
        if key in exact:
            out[i] = exact[key]
            continue
        exact[key] = i
        if threshold is None or not joined:
            continue
        sh = _shingles(text, n, cache)
        sig = _minhash(sh)
        keys = [(b, sig[b * rows : (b + 1) * rows].tobytes()) for b in range(_PERMS // rows)]
        for j in sorted({j for k in keys for j in buckets.get(k, ())}):
            if _jaccard(sh, _shingles(texts[j], n, cache)) >= threshold:
                out[i] = exact[key] = j
                break
        else:
            for k in keys:
                buckets.setdefault(k, []).append(i)
    return out
