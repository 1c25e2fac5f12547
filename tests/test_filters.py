"""Curation filters on literal strings, and their place in the curate stage (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from r1distill import curate, filters
from r1distill.config import ConfigError, UserError
from r1distill.data import problems
from r1distill.data.traces import read_table, rows_to_table, write_table_atomic

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "gsm8k_test.jsonl"
STORY = ("Tom has 7 apples and buys 5 more at the market on Monday morning, then he walks home along the river "
         "and counts them again carefully before dinner with his sister")


def _row(pid, s, completion, problem="p", answer="12", T=3, finish="stop"):
    return {"prompt_id": pid, "sample_idx": s, "problem": problem, "answer": answer,
            "prompt": [{"role": "user", "content": problem}], "completion": completion, "reasoning": None,
            "completion_ids": list(range(T)), "topk_ids": np.zeros((T, 2), np.int32),
            "topk_logprobs": np.full((T, 2), -0.7, np.float32), "finish_reason": finish, "num_tokens": T,
            "teacher": "t", "gen_config_hash": "h"}


def _curate(tmp_path, rows, **kw):
    write_table_atomic(rows_to_table(rows), tmp_path / "traces" / "shard-00000.parquet")
    out = curate.run(curate.CurateConfig(run_dir=str(tmp_path), **kw))
    stats = json.loads((out / "stats.json").read_text())
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = {(r["prompt_id"], r["sample_idx"]): r["reject_reason"] for r in rejected}
    return stats, reasons, read_table(out).to_pylist()


# ---------------------------------------------------------------------------------------------- per trace


def test_repetition_share_separates_loops_from_prose():
    assert filters.repeat_ngram_share(STORY) == 0.0
    assert filters.repeat_ngram_share("I think so. " * 40) > 0.9
    assert filters.repeat_ngram_share("a b c d e " * 3, n=4) == pytest.approx(1 - 5 / 12)
    assert filters.repeat_ngram_share("too short") == 0.0


def test_language_mixing_counts_letters_outside_the_problems_script():
    assert filters.dominant_script("How many apples does Tom have?") == "LATIN"
    assert filters.dominant_script("汤姆有几个苹果?") == "CJK"
    assert filters.dominant_script("2 + 2 = ?") is None
    mixed = "So 7 + 5 = 12. 所以答案是十二。"  # 7 CJK ideographs and 2 Latin letters
    assert filters.foreign_script_share(mixed, "LATIN") == pytest.approx(7 / 9)
    assert filters.foreign_script_share("Let θ = 30, so sin θ = 1/2 and x ∈ ℝ", "LATIN") < 0.2  # math stays
    assert filters.foreign_script_share("所以答案是十二", "CJK") == 0.0
    assert filters.foreign_script_share("anything", None) == 0.0


def test_length_bounds_are_inclusive():
    assert filters.length_reason(5, 5, 10) is None and filters.length_reason(10, 5, 10) is None
    assert filters.length_reason(4, 5, None) == "too_short"
    assert filters.length_reason(11, None, 10) == "too_long"
    assert filters.length_reason(10**6, None, None) is None


# ---------------------------------------------------------------------------------------------- per problem


def test_pass_rates_histogram_and_distribution():
    rates = filters.pass_rates([("a", True), ("a", False), ("b", False), ("c", True), ("a", True)])
    assert rates == pytest.approx({"a": 2 / 3, "b": 0.0, "c": 1.0})
    assert [filters.outside(r, [0.2, 0.8]) for r in rates.values()] == [False, True, True]
    assert filters.histogram([0.0, 0.05, 0.5, 0.99, 1.0]) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert filters.distribution([1, 2, 3, 4, 10]) == {"mean": 4.0, "p50": 3, "p90": 10, "max": 10}
    assert filters.distribution([]) == {"mean": 0.0, "p50": 0.0, "p90": 0.0, "max": 0.0}


def test_exact_duplicates_ignore_case_punctuation_and_spacing():
    texts = ["The answer is 12.", "the answer  is 12", "The answer is 13.", "", ""]
    assert filters.find_duplicates(texts) == [None, 0, None, None, 3]


def test_near_duplicates_by_shingle_jaccard():
    one_word_changed = STORY.replace("Monday", "Tuesday") + " and then some more words to add length here"
    longer = STORY + " and then some more words to add length here"
    other = "A train leaves the station at noon at 60 miles per hour and another follows it at 80 miles per hour"
    texts = [longer, one_word_changed, other, STORY]
    j = filters._jaccard(*(filters._shingles(t, 5, {}) for t in (longer, one_word_changed)))
    assert 0.7 < j < 0.9  # one changed word breaks 5 of the shingles
    assert filters.find_duplicates(texts, threshold=0.7) == [None, 0, None, 0]
    assert filters.find_duplicates(texts, threshold=0.9) == [None, None, None, None]
    assert filters.find_duplicates(texts, threshold=0.6, n=5)[3] == 0  # STORY: a prefix of `longer`


# ---------------------------------------------------------------------------------------------- decontamination


def _gsm8k_problem() -> dict:
    if not GSM8K.is_file():
        pytest.skip(f"{GSM8K} not found")
    return problems.read_file(GSM8K)[5]


def test_copied_benchmark_problem_is_caught_and_a_paraphrase_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv(problems.BENCHMARKS_ENV, str(GSM8K.parent))
    bench = _gsm8k_problem()
    # Insert a word after every 7 (as the filter counts words): no 8 consecutive words of the original survive.
    ws = filters.words(bench["problem"])
    paraphrase = " ".join(w + (" indeed" if i % 7 == 6 else "") for i, w in enumerate(ws))
    rows = [_row("copy", 0, "\\boxed{12}", problem="Please solve: " + bench["problem"]),
            _row("para", 0, "\\boxed{12}", problem=paraphrase)]
    stats, reasons, kept = _curate(tmp_path, rows, decontaminate=["gsm8k"])
    assert reasons == {("copy", 0): "contaminated"}
    assert [r["prompt_id"] for r in kept] == ["para"]
    assert stats["contamination"] == {"gsm8k": [bench["id"]]}
    assert stats["funnel"][1] == {"step": "contaminated", "rejected": 1, "left": 1}


def test_unloadable_benchmark_is_skipped_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(problems.BENCHMARKS_ENV, str(tmp_path))  # no local files here

    def offline(name, *args, **kwargs):
        raise UserError(f"Could not load {name} from the Hugging Face hub")

    monkeypatch.setattr(problems, "_hub", offline)
    index, skipped = curate._benchmark_index(curate.CurateConfig(decontaminate=["aime24"]))
    assert (index, skipped) == ({}, ["aime24"])
    assert "aime24" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- in the stage


def test_each_filter_names_its_reason_in_order(tmp_path):
    loop = "I think so. " * 30 + "\\boxed{12}"
    rows = [
        _row("a", 0, "7 + 5 = 12, so \\boxed{12}", problem=STORY, T=5),
        _row("a", 1, "7 + 5 is 12 hence \\boxed{12}", problem=STORY, T=7),  # over max_per_problem (longer)
        _row("a", 2, "7 + 5 = 12, so \\boxed{12}!", problem=STORY, T=3),  # duplicate completion of a/0
        _row("a", 3, loop, problem=STORY, T=50),  # repetition
        _row("a", 4, "所以答案是十二 \\boxed{12}", problem=STORY, T=6),  # language mixing
        _row("a", 5, "fine: \\boxed{12}", problem=STORY, T=1),  # too short
        _row("a", 6, "also fine: \\boxed{12}", problem=STORY, T=99),  # too long
        _row("b", 0, "\\boxed{12}", problem=STORY.upper()),  # duplicate problem of a (all samples)
        _row("c", 0, "\\boxed{12}", problem="What is 6 + 6?"),  # pass rate 0.5 < 0.6
        _row("c", 1, "\\boxed{13}", problem="What is 6 + 6?"),
    ]
    stats, reasons, kept = _curate(tmp_path, rows, decontaminate=[], min_tokens=2, max_tokens=60,
                                   pass_rate_range=[0.6, 1.0], max_per_problem=1)
    assert reasons == {("a", 1): "over_max_per_problem", ("a", 2): "duplicate_completion",
                       ("a", 3): "repetition", ("a", 4): "language_mixing", ("a", 5): "too_short",
                       ("a", 6): "too_long", ("b", 0): "duplicate_problem", ("c", 0): "pass_rate",
                       ("c", 1): "pass_rate"}
    assert [(r["prompt_id"], r["sample_idx"]) for r in kept] == [("a", 0)]
    steps = [s["step"] for s in stats["funnel"]]
    assert steps == ["generated", "duplicate_problem", "pass_rate", "unknown_tokens", "truncated", "unclosed_think",
                     "no_answer", "gold_unparseable", "incorrect", "too_short", "too_long", "repetition",
                     "language_mixing", "duplicate_completion", "over_max_per_problem"]
    assert stats["funnel"][-1]["left"] == stats["kept"] == 1
    assert stats["pass_rate_histogram"] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert stats["tokens_kept"] == {"mean": 5.0, "p50": 5, "p90": 5, "max": 5}


def test_random_selection_is_seeded(tmp_path):
    rows = [_row("a", i, f"try {i}: \\boxed{{12}}", problem=STORY, T=10 - i) for i in range(6)]
    picks = []
    for seed in (0, 0, 1):
        _, _, kept = _curate(tmp_path / str(len(picks)), rows, select="random", seed=seed, max_per_problem=2,
                             decontaminate=[])
        picks.append(sorted(r["sample_idx"] for r in kept))
    assert picks[0] == picks[1] and len(picks[0]) == 2
    _, _, kept = _curate(tmp_path / "short", rows, max_per_problem=2, decontaminate=[])
    assert sorted(r["sample_idx"] for r in kept) == [4, 5]


@pytest.mark.parametrize("bad", [{"pass_rate_range": [0.8, 0.2]}, {"pass_rate_range": [0.5]},
                                 {"select": "longest"}, {"decontaminate": ["mmlu"]},
                                 {"max_repeat_ngram_share": 1.5}, {"min_tokens": 10, "max_tokens": 5},
                                 {"near_dup_threshold": 0.0}, {"num_workers": -1}])
def test_bad_config_says_how_to_fix(bad):
    with pytest.raises(ConfigError, match="curate\\."):
        curate.CurateConfig(**bad)
