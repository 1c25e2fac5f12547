"""The eval stage's metrics: grading outputs against gold answers (`score_outputs`), pass@1 with its bootstrap CI,
unbiased pass@k, maj@k over equivalent answers (`AnswerComparer`, whose verdicts a file keeps across reruns), and the
token-length figures of `summarize`.

Separate from r1distill.evaluate, which runs models and keeps their samples: these are pure functions of the
per-sample rows (no model, no run dir but the maj@k cache file), used on their own to score a fixed file of outputs
and tested as such.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from r1distill.data.traces import write_text_atomic
from r1distill.stats import bootstrap_ci, percentile, standard_error
from r1distill.verify import VERSION as VERIFY_VERSION
from r1distill.verify import hard_limit, is_equivalent, normalize_answer, verify_many
from r1distill.verify import worker_context as verify_context


class AnswerComparer:
    """Whether two extracted answers are the same, for maj@k: ``is_equivalent`` in a worker process with the hard
    limit grading has (``hard_limit(timeout)`` per comparison, so Math-Verify cannot hang the main process, nor run
    unlimited off its main thread), after exact equality of the answers and of their normalised forms. Verdicts are
    cached by (normalised answer, normalised answer, timeout): `cache` may be loaded from and saved to a file, so a
    rerun does not pay again for pathological pairs (8 distinct ``9^{9^{9^{9^{n}}}}`` cost 28 x 5 s).
    Use as a context manager; the worker starts on the first comparison that needs it."""

    def __init__(self, timeout: float = 5.0, cache: dict[tuple[str, str, float], bool] | None = None):
        self.timeout = timeout
        self.cache = {} if cache is None else cache
        self._pool = None

    def __call__(self, a: str, b: str) -> bool:
        if a == b:
            return True
        key = (normalize_answer(a), normalize_answer(b), self.timeout)
        if key[0] and key[0] == key[1]:
            return True  # what is_equivalent's first check would say
        if key not in self.cache:
            self.cache[key] = self._compare(a, b)
        return self.cache[key]

    def _compare(self, a: str, b: str) -> bool:
        if self._pool is None:
            self._pool = verify_context().Pool(1)
        try:
            return bool(self._pool.apply_async(_equivalent, (a, b, self.timeout)).get(hard_limit(self.timeout)))
        except mp.TimeoutError:  # stuck where Math-Verify's alarm cannot reach: undecided, not the same answer
            self.close()
            return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __enter__(self) -> AnswerComparer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _equivalent(a: str, b: str, timeout: float) -> bool:
    return is_equivalent(a, b, timeout=timeout)  # in the worker, where Math-Verify's alarm works


def majority_correct(answers: list[str | None], correct: list[bool], timeout: float = 5.0,
                     same: AnswerComparer | None = None) -> bool:
    """maj@k: group equivalent answers (by ``same``, default an ``AnswerComparer(timeout)``), take the largest
    group (first seen on a tie), and return whether its answer is correct. No answer at all counts as wrong."""
    if same is None:
        with AnswerComparer(timeout) as own:
            return majority_correct(answers, correct, timeout, own)
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if same(a, answers[g[0]]):
                g.append(i)
                break
        else:
            groups.append([i])
    if not groups:
        return False
    best = max(groups, key=len)  # max keeps the first of equal-size groups
    return bool(correct[best[0]])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): the chance that k samples
    drawn without replacement include a correct one, 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i): the Codex paper's form, free of huge binomials
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


def default_ks(max_k: int) -> list[int]:
    """The ks reported when none are configured: powers of two up to ``max_k``, plus ``max_k`` itself."""
    ks, k = [], 1
    while k <= max_k:
        ks.append(k)
        k *= 2
    if ks and ks[-1] != max_k:
        ks.append(max_k)
    return ks


def summarize(samples: list[dict], ks: Sequence[int] = (), bootstrap: int = 1000,
              same: AnswerComparer | None = None) -> dict:
    """Metrics for one model on one benchmark from its per-sample rows.

    pass@1 is the mean over problems of each problem's share of correct samples, with a bootstrap 95% CI
    over problems and its standard error; pass@k (for ``ks``, default ``default_ks(k)``) is the unbiased
    estimator averaged over problems; maj@k is majority voting over the extracted answers; tokens_p50/p90
    are nearest-rank percentiles of the completion lengths. ``same`` compares answers for maj@k (default: a fresh
    ``AnswerComparer``).
    """
    if same is None:
        with AnswerComparer() as own:
            return summarize(samples, ks, bootstrap, own)
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_problem[s["id"]].append(s)
    groups = list(by_problem.values())
    pass1 = [sum(s["correct"] for s in v) / len(v) for v in groups]
    maj = [majority_correct([s["pred_answer"] for s in v], [s["correct"] for s in v], same=same) for v in groups]
    max_k = max((len(v) for v in groups), default=0)
    min_k = min((len(v) for v in groups), default=0)
    n = max(len(samples), 1)
    tokens = [s["num_tokens"] for s in samples]
    metrics = {
        "problems": len(groups),
        "samples": len(samples),
        "k": max_k,
        "pass@1": sum(pass1) / max(len(pass1), 1),
        "pass@1_ci95": bootstrap_ci(pass1, bootstrap) if pass1 else [0.0, 0.0],
        "pass@1_stderr": standard_error(pass1),
    }
    # pass@1 above is already pass_at_k(n, c, 1) = c / n. A k above some problem's sample count is skipped for
    # the whole benchmark: averaging it over only the problems with enough samples would change what it measures.
    for k in sorted(set(ks or default_ks(max_k))):
        if 1 < k <= min_k:
            metrics[f"pass@{k}"] = sum(pass_at_k(len(v), sum(s["correct"] for s in v), k) for v in groups) / len(groups)
    return metrics | {
        "maj@k": sum(maj) / max(len(maj), 1),
        "answered": sum(s["pred_answer"] is not None for s in samples) / n,  # outputs that state an answer
        "mean_tokens": sum(tokens) / n,
        "tokens_p50": percentile(tokens, 50) if tokens else 0,
        "tokens_p90": percentile(tokens, 90) if tokens else 0,
        "truncated": sum(s["finish_reason"] == "length" for s in samples) / n,
    }


def score_outputs(rows: list[dict], last_number: bool = True, timeout: float = 5.0) -> list[dict]:
    """Grade each row's ``output`` against its gold ``answer`` with the shared verifier, in worker processes
    with a hard time limit per row (``verify_many(hard_limit=True)``, as curate does): an output that would
    hang Math-Verify is abandoned after ``hard_limit(timeout)`` seconds and counted wrong.

    Each row needs benchmark, id, sample_idx, output, answer, num_tokens and finish_reason (and may hold the
    problem's text); the result rows hold those plus pred_answer and correct (recomputed), in the order the eval
    stage writes them.
    """
    verdicts = verify_many([r["output"] for r in rows], [r["answer"] for r in rows], last_number=last_number,
                           timeout=timeout, hard_limit=True)
    scored = []
    for r, v in zip(rows, verdicts):
        scored.append({"benchmark": r["benchmark"], "id": r["id"], **({"problem": r["problem"]} if "problem" in r
                                                                      else {}), "sample_idx": r["sample_idx"],
                       "output": r["output"], "answer": r["answer"], "pred_answer": v.pred_answer,
                       "correct": v.correct, "num_tokens": r["num_tokens"], "finish_reason": r["finish_reason"]})
    return scored


def read_maj_cache(path: Path) -> dict[tuple[str, str, float], bool]:
    """maj@k's answer comparisons kept by an earlier run (`write_maj_cache`), or {} when there are none, they are
    damaged, or another verifier version made them."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("verifier") != VERIFY_VERSION:
        return {}  # another verifier may judge the pairs otherwise (or no cache yet)
    try:
        return {(str(a), str(b), float(t)): bool(v) for a, b, t, v in data.get("pairs", [])}
    except (TypeError, ValueError):
        return {}  # a damaged cache is only a lost speed-up


def write_maj_cache(path: Path, cache: dict[tuple[str, str, float], bool]) -> None:
    pairs = [[a, b, t, v] for (a, b, t), v in cache.items()]
    write_text_atomic(path, json.dumps({"verifier": VERIFY_VERSION, "pairs": pairs}))
