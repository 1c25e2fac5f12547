"""Evaluation metrics (pass@k, maj@k, bootstrap CI, percentiles) and scoring a fixed file of outputs (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from r1distill.config import ConfigError, from_dict
from r1distill.data.problems import SourceConfig
from r1distill.eval_metrics import default_ks, majority_correct, pass_at_k
from r1distill.evaluate import DEFAULT_K, EvalConfig, _warn_greedy, score_outputs, summarize
from r1distill.report import accuracy_table, results_markdown
from r1distill.stats import bootstrap_ci, percentile, standard_error

FIXED_OUTPUTS = Path(__file__).parent / "data" / "fixed_outputs.jsonl"


def test_pass_at_k_matches_hand_computed_values():
    # n=5, c=2: pass@k = 1 - C(3, k) / C(5, k)
    #   k=1: 1 - 3/5 = 0.4;  k=2: 1 - 3/10 = 0.7;  k=3: 1 - 1/10 = 0.9
    #   k=4, 5: C(3, k) = 0 (only 3 wrong samples, so any 4 include a correct one) -> 1.0
    expected = {1: 0.4, 2: 0.7, 3: 0.9, 4: 1.0, 5: 1.0}
    assert {k: pass_at_k(5, 2, k) for k in expected} == pytest.approx(expected)


def test_pass_at_k_edge_cases():
    assert all(pass_at_k(4, 4, k) == 1.0 for k in range(1, 5))  # n = c
    assert all(pass_at_k(4, 0, k) == 0.0 for k in range(1, 5))  # c = 0
    # the product form agrees with exact binomials where those are huge
    assert pass_at_k(200, 10, 100) == pytest.approx(1 - math.comb(190, 100) / math.comb(200, 100))
    for n, c, k in [(3, 1, 4), (3, 1, 0), (3, 4, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_default_ks_are_powers_of_two_plus_the_max():
    assert [default_ks(m) for m in (0, 1, 4, 5, 64)] == [[], [1], [1, 2, 4], [1, 2, 4, 5], [1, 2, 4, 8, 16, 32, 64]]


def test_majority_vote_ties_and_equivalent_forms():
    # "0.5" and "\frac12" are one group of 2; "7" another of 2: the tie goes to the group seen first
    assert majority_correct(["0.5", "\\frac12", "7", "7"], [True, True, False, False]) is True
    assert majority_correct(["7", "0.5", "\\frac12", "7"], [False, True, True, False]) is False
    # equivalent forms outvote a larger number of distinct wrong answers
    assert majority_correct(["1", "0.5", "2", "\\frac12", "3"], [False, True, False, True, False]) is True


def test_percentile_nearest_rank():
    values = [35, 20, 15, 50, 40]  # sorted: 15 20 35 40 50; rank = ceil(q/100 * 5)
    assert [percentile(values, q) for q in (5, 30, 40, 50, 90, 100)] == [15, 20, 20, 35, 50, 50]
    with pytest.raises(ValueError):
        percentile([], 50)


def test_bootstrap_ci_constructed_cases():
    assert bootstrap_ci([1.0] * 10) == [1.0, 1.0]
    half = [1.0, 0.0] * 5
    lo, hi = bootstrap_ci(half)
    assert 0.1 <= lo <= 0.5 <= hi <= 0.9
    assert bootstrap_ci(half) == [lo, hi]  # seeded: the same on every call
    assert standard_error([1.0] * 10) == 0.0 and standard_error([0.3]) == 0.0
    assert standard_error(half) == pytest.approx(math.sqrt(10 / 36) / math.sqrt(10))  # var = 10 * 0.25 / 9


def _samples(plan: dict[str, list[tuple[bool, str | None]]]) -> list[dict]:
    """Sample rows from {problem: [(correct, pred_answer), ...]}; token counts 10, 20, 30, ... in order."""
    rows = []
    for pid, draws in plan.items():
        for i, (ok, pred) in enumerate(draws):
            rows.append({"id": pid, "sample_idx": i, "correct": ok, "pred_answer": pred,
                         "num_tokens": 10 * (len(rows) + 1), "finish_reason": "length" if pid == "p4" else "stop"})
    return rows


PLAN = {
    "p1": [(True, "0.5"), (True, "\\frac12"), (False, "3"), (False, "4")],  # c=2; maj: the 0.5 group
    "p2": [(False, "7"), (False, "7"), (False, "8"), (True, "0.5")],  # c=1; maj: "7", wrong
    "p3": [(True, "9")] * 4,  # c=4
    "p4": [(False, None)] * 4,  # c=0, no answers, all truncated
}


def test_summarize_end_to_end():
    m = summarize(_samples(PLAN))
    per_problem = [0.5, 0.25, 1.0, 0.0]
    assert m == {
        "problems": 4, "samples": 16, "k": 4,
        "pass@1": pytest.approx(0.4375),
        "pass@1_ci95": bootstrap_ci(per_problem),
        # deviations from 0.4375: .0625 -.1875 .5625 -.4375, squares sum to .546875
        "pass@1_stderr": pytest.approx(math.sqrt(0.546875 / 3) / 2),
        # p1: 1 - C(2,2)/C(4,2) = 5/6; p2: 1 - C(3,2)/C(4,2) = 1/2; p3: 1; p4: 0
        "pass@2": pytest.approx((5 / 6 + 1 / 2 + 1 + 0) / 4),
        "pass@4": pytest.approx(0.75),  # every problem with a correct sample
        "maj@k": pytest.approx(0.5),
        "answered": pytest.approx(12 / 16),
        "mean_tokens": pytest.approx(85.0),  # tokens 10..160
        "tokens_p50": 80,  # rank ceil(0.5 * 16) = 8
        "tokens_p90": 150,  # rank ceil(0.9 * 16) = 15
        "truncated": pytest.approx(0.25),
    }
    lo, hi = m["pass@1_ci95"]
    assert 0.0 <= lo <= m["pass@1"] <= hi <= 1.0


def test_summarize_skips_ks_some_problem_cannot_reach():
    plan = {**PLAN, "p5": [(True, "1"), (False, "2")]}  # only 2 samples: pass@4 is skipped for the benchmark
    m = summarize(_samples(plan))
    assert m["k"] == 4 and "pass@2" in m and "pass@4" not in m
    m = summarize(_samples(PLAN), ks=[3])
    assert m["pass@3"] == pytest.approx((1 + 0.75 + 1 + 0) / 4) and "pass@2" not in m  # p2: 1 - C(3,3)/C(4,3)
    assert summarize(_samples({f"q{i}": [(True, "1")] for i in range(10)}))["pass@1_ci95"] == [1.0, 1.0]


def test_eval_config_metric_fields():
    assert EvalConfig().pass_at_k == [] and EvalConfig().bootstrap == 1000
    with pytest.raises(ConfigError):
        EvalConfig(pass_at_k=[0])
    with pytest.raises(ConfigError):
        EvalConfig(bootstrap=0)


BENCHES = [SourceConfig(name=n) for n in ("aime24", "aime25", "amc23", "math500", "gsm8k")]
SYNTHETIC = SourceConfig(name="synthetic", split="test")


def test_eval_defaults_are_r1s_protocol():
    cfg = EvalConfig()
    assert (cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (0.6, 0.95, 32768)
    assert (cfg.prompt.system, cfg.prompt.examples, cfg.think_prefix, cfg.num_samples) == (None, [], False, None)
    assert cfg.prompt.instruction.startswith("Please reason step by step")
    assert [cfg.k_for(b) for b in [*BENCHES, SYNTHETIC]] == [64, 64, 64, 4, 1, 1]
    assert DEFAULT_K["aime24"] == 64 and DEFAULT_K["math500"] == 4
    with pytest.raises(ConfigError, match="num_samples must be >= 1"):
        EvalConfig(num_samples=0)
    assert from_dict(EvalConfig, {"num_samples": None}).num_samples is None  # `num_samples: null` in a recipe


def test_k_overrides_and_greedy(capsys):
    assert [EvalConfig(num_samples=8).k_for(b) for b in BENCHES] == [8] * 5  # an explicit k wins everywhere
    greedy = EvalConfig(temperature=0.0, benchmarks=BENCHES)
    assert [greedy.k_for(b) for b in BENCHES] == [1] * 5  # greedy samples would all be the same
    _warn_greedy(greedy)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "1 sample per problem on aime24 (default k 64)" in err and "math500 (default k 4)" in err
    assert "gsm8k" not in err
    explicit = EvalConfig(temperature=0.0, num_samples=3, benchmarks=BENCHES)
    assert explicit.k_for(BENCHES[0]) == 3  # set explicitly: kept, with a warning
    _warn_greedy(explicit)
    assert "the 3 samples of each problem will be the same" in " ".join(capsys.readouterr().err.split())
    _warn_greedy(EvalConfig(temperature=0.0, num_samples=1, benchmarks=BENCHES))  # the quickstart's settings
    _warn_greedy(EvalConfig(benchmarks=BENCHES))
    assert capsys.readouterr().err == ""


def test_results_markdown_compares_models_per_benchmark():
    def metrics(p1, ci, maj, tokens, k):
        return {"pass@1": p1, "pass@1_ci95": ci, "maj@k": maj, "mean_tokens": tokens, "k": k}

    summary = {
        "teacher": {"aime24": metrics(0.5, [0.25, 0.75], 0.6, 9000.4, 64),
                    "gsm8k": metrics(0.9, [0.85, 0.95], 0.9, 300, 1), "_seconds": 12.0},
        "student": {"aime24": metrics(0.125, [0.0, 0.3], 0.2, 12000, 64)},
    }
    assert results_markdown(summary).splitlines() == [
        "| model | aime24 pass@1 [95% CI] | aime24 maj@64 | aime24 mean tokens "
        "| gsm8k pass@1 [95% CI] | gsm8k maj@1 | gsm8k mean tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| teacher | 0.500 [0.250, 0.750] | 0.600 | 9000 | 0.900 [0.850, 0.950] | 0.900 | 300 |",
        "| student | 0.125 [0.000, 0.300] | 0.200 | 12000 |  |  |  |",
    ]
    summary["student"]["aime24"]["k"] = 4  # models sampled differently: the header cannot name one k
    assert "| aime24 maj@k |" in results_markdown(summary)


def test_fixed_outputs_reproduce_a_known_accuracy_exactly():
    rows = [json.loads(line) for line in FIXED_OUTPUTS.read_text().splitlines()]
    scored = score_outputs(rows)
    assert list(scored[0]) == ["benchmark", "id", "sample_idx", "output", "answer", "pred_answer", "correct",
                               "num_tokens", "finish_reason"]
    assert {r["id"]: (r["pred_answer"], r["correct"]) for r in scored} == {
        "gsm-01": ("18", True),  # \boxed{}
        "gsm-02": ("3", True),  # "#### N"
        "gsm-03": ("70000", True),  # "The final answer is N."
        "gsm-04": ("15", False),  # wrong answer
        "gsm-05": (None, False),  # no answer at all
        "gsm-06": ("\\frac{1}{2}", True),  # gold "0.5"
        "gsm-07": ("$1,000", True),  # gold "1000"
        "gsm-08": ("10", True),  # last-number fallback
        "gsm-09": ("60", False),  # truncated mid-computation
        "gsm-10": ("24", True),  # only the text after </think> is read
        "gsm-11": ("1,200", True),  # "#### 1,200" vs gold "1200"
        "gsm-12": ("13", False),  # \boxed{} outranks "the answer is"
    }
    m = summarize(scored)
    assert (m["problems"], m["k"], m["pass@1"], m["answered"]) == (12, 1, 8 / 12, 11 / 12)
    assert m["truncated"] == 1 / 12
    strict = score_outputs(rows, last_number=False)  # gsm-08 and gsm-09 now state no answer
    assert [r["id"] for r in strict if r["pred_answer"] is None] == ["gsm-05", "gsm-08", "gsm-09"]
    assert summarize(strict)["pass@1"] == 7 / 12


def test_report_shows_pass_at_1_with_its_ci():
    summary = {"student": {"gsm8k": {"pass@1": 0.02, "pass@1_ci95": [0.0, 0.05], "maj@k": 0.03, "answered": 0.9,
                                     "mean_tokens": 312.4}}}
    table = accuracy_table(summary)
    assert "gsm8k pass@1 [95% CI]" in table
    assert "| student after training | 0.020 [0.000, 0.050] | 0.030 | 0.900 | 312 |" in table


def test_a_misspelt_model_name_gets_a_did_you_mean_over_the_aliases_and_built_in_names():
    teacher_prompt = {"teacher": {"system": "Solve it."}}
    for models, meant in [(["studnet"], "student"), (["teacher", "studnet"], "student"), (["teahcer"], "teacher"),
                          (["studnet:kd"], "student:kd"), (["student_int"], "student_init"),
                          (["smollm2-135m-instruc"], "smollm2-135m-instruct")]:
        with pytest.raises(ConfigError) as e:  # not the model_prompts error, nor a hub error later
            from_dict(EvalConfig, {"models": models, "model_prompts": teacher_prompt if "teacher" in models else {}})
        assert f"eval.models: {models[-1]!r} is not a model alias (teacher, student, student_init, students, " \
               f"student:<variant>), built-in name or local path. Did you mean {meant!r}?" == str(e.value)
    with pytest.raises(ConfigError, match=r"eval.models: 'studnet' .* Did you mean 'student'\?"):
        from_dict(EvalConfig, {"models": ["studnet"], "model_prompts": teacher_prompt})
    # aliases, hub ids, names with no near alias stay as they were
    EvalConfig(models=["teacher", "student", "student:kd", "student_init:kd", "gpt2", "org/studnet"])


def test_a_built_in_models_hub_id_offline_names_the_built_in(monkeypatch):
    from r1distill import evaluate, hub, models

    monkeypatch.setattr(hub, "offline_reason", lambda: "no network (test)")
    monkeypatch.setattr(models, "_in_hub_cache", lambda repo_id: False)
    cfg = EvalConfig(models=["HuggingFaceTB/SmolLM2-135M-Instruct"], benchmarks=[SourceConfig(name="synthetic",
                                                                                             split="test")])
    with pytest.raises(models.ModelNotFoundError) as e:
        evaluate.run(cfg)
    assert str(e.value).endswith("use the built-in name smollm2-135m-instruct, which is that model (its GGUF ships "
                                 "in a Python package: no hub needed)")
    assert "no network (test)" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("label", ["..", ".", "a b", "x\\..\\y", "student:..", "ok/../..\n"])
def test_a_model_label_that_is_not_a_plain_name_is_refused(label):
    with pytest.raises(ConfigError, match=r"cannot label results \(they go to eval/"):
        EvalConfig(models=[label])


def test_plain_model_labels_are_kept():
    cfg = EvalConfig(models=["HuggingFaceTB/SmolLM2-135M-Instruct", "student:kd_1.5", "runs/x/students/sft", "../m",
                             "~/models/m-1"])
    assert len(cfg.models) == 5
