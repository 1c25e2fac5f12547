"""Student variants: one recipe, several students trained on the same curated traces, all evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1distill.cli import main
from r1distill.config import ConfigError, load_recipe
from r1distill.pipeline import build_configs

TINY = Path(__file__).with_name("tiny.yaml")


def _recipe(tmp_path, variants, models=("students",)) -> dict:
    recipe = load_recipe(TINY, [f"run_dir={tmp_path}"])
    recipe["variants"] = variants
    recipe["eval"]["models"] = list(models)
    return recipe


def test_variants_merge_over_train_and_expand_students(tmp_path):
    configs = build_configs(_recipe(tmp_path, {
        "sft": {"objective": "sft"},
        "rkl": {"loss": {"divergence": "reverse_kl", "topk": 4}},
        "d1": {"student": {"derive_from": "teacher", "num_layers": 1}},
    }, models=["teacher", "student_init", "students", "student_init:d1"]))
    assert [n for n in configs if n.startswith("train")] == ["train:sft", "train:rkl", "train:d1"]
    sft, rkl, d1 = configs["train:sft"], configs["train:rkl"], configs["train:d1"]
    assert (sft.objective, rkl.objective) == ("sft", "kd")
    # a nested key merges: the base's alpha stays, the variant's divergence and top-k are added
    assert (rkl.loss.alpha, rkl.loss.divergence, rkl.loss.topk) == (0.5, "reverse_kl", 4)
    assert sft.out == tmp_path / "students" / "sft" and rkl.out == tmp_path / "students" / "rkl"
    # the same student as the base shares student_init; another depth gets its own
    assert sft.init_out == rkl.init_out == tmp_path / "student_init"
    assert sft.init_dir == str(tmp_path / "student_init")  # named: another derivation there is moved aside, replaced
    assert d1.init_out == tmp_path / "students_init" / "d1" and d1.student.num_layers == 1
    assert configs["eval"].models == ["teacher", "student_init", "student:sft", "student:rkl", "student:d1",
                                      "student_init:d1"]
    assert configs["eval"].resolve("teacher") == "smollm2-135m-instruct"


def test_a_moved_stage_output_is_the_next_stage_s_input(tmp_path):
    recipe = load_recipe(TINY, [f"run_dir={tmp_path}", "generate.output_dir=elsewhere/traces",
                                "curate.output_dir=elsewhere/curated"])
    configs = build_configs(recipe)
    assert configs["curate"].inp == Path("elsewhere/traces") and configs["train"].inp == Path("elsewhere/curated")
    configs = build_configs({**recipe, "variants": {"a": {}}})
    assert configs["train:a"].inp == Path("elsewhere/curated")
    recipe["curate"]["input_dir"] = "mine"  # a stage's own input_dir wins
    assert build_configs(recipe)["curate"].inp == Path("mine")


def test_a_variant_starts_from_an_earlier_variants_student(tmp_path):
    """`student: {name: "student:kd"}`: the kd variant's output dir, the base's derivation dropped; the model check
    skips it (it does not exist before the run) and a later or unknown variant is refused."""
    from r1distill.pipeline import _check_models

    configs = build_configs(_recipe(tmp_path, {"kd": {}, "kd_op": {"objective": "on_policy",
                                                                     "student": {"name": "student:kd"}}}))
    op = configs["train:kd_op"]
    assert op.student.name == str(tmp_path / "students" / "kd") and op.student.derive_from is None
    _check_models(configs)  # no error: students/kd is made by the run
    for variants in ({"kd_op": {"student": {"name": "student:kd"}}, "kd": {}},
                     {"kd_op": {"student": {"name": "student:nope"}}}):
        with pytest.raises(ConfigError, match="names no variant listed before kd_op"):
            build_configs(_recipe(tmp_path, variants))


@pytest.mark.parametrize("variants, models, message", [
    ({"a b": {}}, ["teacher"], "must be letters"),
    ({"sft": "objective: sft"}, ["teacher"], "must be a mapping"),
    ({"sft": {"objective": "sfft"}}, ["teacher"], "train.objective must be one of"),
    ({"sft": {"epoch": 2}}, ["teacher"], "Unknown key 'epoch'"),
    ({"sft": {"output_dir": "x"}}, ["teacher"], "students/sft"),
    ({"sft": {}}, ["student:kd"], "variants are sft"),
    (None, ["students"], "has no variants"),
    ({"sft": {}, "_base": {"output_dir": "x"}}, ["teacher"], "train.output_dir cannot be used with variants"),
])
def test_variant_mistakes_are_errors_before_anything_runs(tmp_path, variants, models, message):
    recipe = _recipe(tmp_path, variants, models)
    if variants is None:
        del recipe["variants"]
    elif "_base" in variants:
        recipe["train"].update(variants.pop("_base"))
    with pytest.raises(ConfigError, match=message):
        build_configs(recipe)


@pytest.mark.slow  # r1distill run with two variants
def test_two_variants_through_run(tmp_path, capsys):
    """`r1distill run` with two variants (one of another depth): two students, their inits, one eval of both,
    one report; a rerun skips every stage."""
    run_dir = tmp_path / "run"
    recipe = _recipe(run_dir, {"sft": {"objective": "sft"},
                               "rkl_d1": {"loss": {"divergence": "reverse_kl"},
                                          "student": {"derive_from": "teacher", "num_layers": 1}}},
                     models=["student_init", "students"])
    path = tmp_path / "variants.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    assert main(["run", str(path)]) == 0
    layers = {d: json.loads((run_dir / d / "config.json").read_text())["num_hidden_layers"]
              for d in ("student_init", "students_init/rkl_d1", "students/sft", "students/rkl_d1")}
    assert layers == {"student_init": 2, "students_init/rkl_d1": 1, "students/sft": 2, "students/rkl_d1": 1}
    assert not (run_dir / "student").exists()
    objectives = {v: json.loads((run_dir / "students" / v / "summary.json").read_text())["objective"]
                  for v in ("sft", "rkl_d1")}
    assert objectives == {"sft": "sft", "rkl_d1": "kd"}
    log = [json.loads(x) for x in (run_dir / "students" / "rkl_d1" / "train_log.jsonl").read_text().splitlines()]
    assert any("kd" in rec for rec in log)
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert list(summary) == ["student_init", "student:sft", "student:rkl_d1"]
    for label in summary:
        assert summary[label]["synthetic-easy"]["problems"] == 4
        rows = (run_dir / "eval" / label.replace(":", "_") / "synthetic-easy.jsonl").read_text().splitlines()
        assert len(rows) == 4
    meta = json.loads((run_dir / "run.json").read_text())
    assert list(meta["stages"]) == ["generate", "curate", "train:sft", "train:rkl_d1", "eval"]
    report = (run_dir / "report.md").read_text()
    assert "synthetic-easy Δ vs sft [95% CI]" in report  # the comparison, against the sft variant
    row = next(line for line in report.splitlines() if line.startswith("| rkl_d1 "))
    assert "reverse_kl" in row and f"{summary['student:rkl_d1']['synthetic-easy']['pass@1']:.3f}" in row
    capsys.readouterr()
    assert main(["run", str(path)]) == 0
    assert capsys.readouterr().err.count("skipped") == 5


def test_a_missing_student_tokenizer_fails_before_generate(tmp_path):
    import yaml

    from r1distill.models import ModelNotFoundError
    from r1distill.pipeline import run

    recipe = load_recipe(TINY, [f"run_dir={tmp_path}"])
    recipe["train"]["student"] = {"derive_from": "teacher", "num_layers": 1, "tokenizer": str(tmp_path / "no-such-bpe")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ModelNotFoundError, match=r"^student.tokenizer: Model path .*no-such-bpe does not exist"):
        run(path)
    assert not (tmp_path / "traces").exists()  # generate never started


def test_a_misspelt_variant_gets_a_did_you_mean(tmp_path):
    from r1distill.config import UserError
    from r1distill.evaluate import EvalConfig

    with pytest.raises(ConfigError, match=r"variants are kd, sft\. Did you mean 'student:kd'\?"):
        build_configs(_recipe(tmp_path, {"kd": {}, "sft": {}}, models=["teacher", "student:kdd"]))
    (tmp_path / "students" / "sft").mkdir(parents=True)  # the eval stage alone: the variants trained so far
    with pytest.raises(UserError, match=r"run train first\. Did you mean 'student:sft'\?"):
        EvalConfig(run_dir=str(tmp_path), models=["student:sfft"]).resolve("student:sfft")


def test_a_named_students_start_is_that_model(tmp_path):
    import yaml

    from r1distill.pipeline import run

    named = str(tmp_path / "my-student")
    recipe = load_recipe(TINY, [f"run_dir={tmp_path}"])
    recipe["train"]["student"] = {"name": named}
    recipe["eval"]["models"] = ["student_init", "student"]
    ev = build_configs(recipe)["eval"]
    assert ev.resolve("student_init") == named  # not {run_dir}/student_init, which nothing writes
    # with variants: the base's named student is `student_init`, a variant's its own
    recipe = _recipe(tmp_path, {"a": {}, "b": {"student": "other"},
                                "d": {"student": {"derive_from": "teacher", "num_layers": 1}}},
                     models=["student_init", "student_init:b", "student_init:d", "students"])
    recipe["train"]["student"] = named
    ev = build_configs(recipe)["eval"]
    assert (ev.resolve("student_init"), ev.resolve("student_init:b")) == (named, "other")
    assert ev.student_inits == {"student_init": named, "student_init:a": named, "student_init:b": "other"}
    # An alias no train stage of the recipe makes fails before the first stage, not after training.
    recipe = _recipe(tmp_path / "r", {"d": {"student": {"derive_from": "teacher", "num_layers": 1}}},
                     models=["student_init", "students"])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"'student_init' is no model this recipe's train stage makes \(it makes "
                                          r"student:d, student_init:d\)"):
        run(path)
    assert not (tmp_path / "r" / "traces").exists()


def test_a_standalone_eval_reads_aliases_as_run_does(tmp_path, monkeypatch):
    import yaml

    from r1distill import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "STAGES", [(n, c, (lambda cfg: seen.append(cfg) or "ok") if n == "eval" else r)
                                             for n, c, r in pipeline.STAGES])
    named = str(tmp_path / "my-student")
    recipe = _recipe(tmp_path, {"a": {}, "b": {"objective": "sft"}}, models=["student_init", "students"])
    recipe["train"]["student"] = {"name": named}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # `students` is every variant's student, as in `run`, not a hub id; a named student's start is that model
    assert main(["eval", str(path)]) == 0
    assert seen[0].models == ["student_init", "student:a", "student:b"]
    assert seen[0].resolve("student_init") == named
