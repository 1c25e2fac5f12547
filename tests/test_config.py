from __future__ import annotations

import pytest

from r1distill.config import ConfigError, load_recipe, stage_config
from r1distill.pipeline import build_configs

RECIPE = """
run_dir: runs/x
teacher: smollm2-135m-instruct
generate:
  source: {name: synthetic, num_problems: 3}
  num_samples: 2
train: {objective: sft, student: {derive_from: teacher, num_layers: 4}}
"""


@pytest.fixture
def recipe_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE)
    return p


def test_shared_keys_and_overrides(recipe_file):
    recipe = load_recipe(recipe_file, ["generate.num_samples=5", "train.epochs=1", "eval.models=[teacher,student]"])
    cfgs = build_configs(recipe)
    assert cfgs["generate"].num_samples == 5
    assert cfgs["generate"].source.num_problems == 3
    assert cfgs["generate"].run_dir == "runs/x"
    assert cfgs["train"].student.num_layers == 4 and cfgs["train"].epochs == 1.0
    assert cfgs["eval"].models == ["teacher", "student"]
    assert str(cfgs["curate"].out) == "runs/x/curated"


@pytest.mark.parametrize("override,named", [
    ("generate.num_sample=2", "'num_sample'"),
    ("generate.source.nmae=gsm8k", "'nmae'"),
    ("trian.epochs=1", "'trian'"),
    ("train.student.num_layer=2", "'num_layer'"),
])
def test_misspelt_key_is_an_error_that_names_it(recipe_file, override, named):
    with pytest.raises(ConfigError) as e:
        build_configs(load_recipe(recipe_file, [override]))
    assert named in str(e.value)
    assert "Did you mean" in str(e.value)


def test_wrong_type_and_range_errors(recipe_file):
    with pytest.raises(ConfigError, match="generate.num_samples: expected an integer"):
        build_configs(load_recipe(recipe_file, ["generate.num_samples=many"]))
    with pytest.raises(ConfigError, match="alpha must be in"):
        build_configs(load_recipe(recipe_file, ["train.loss.alpha=1.5"]))
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_recipe(recipe_file, ["train.loss.alpha"])


def test_student_shorthand_its_one_place_and_missing_recipe(tmp_path, recipe_file):
    from r1distill.train import TrainConfig

    cfg = stage_config(load_recipe(None, ["train.student=my/model"]), "train", TrainConfig)
    assert cfg.student.name == "my/model" and cfg.student.derive_from is None
    # the student's settings have one place, train.student: a top-level `student` is refused, saying where it goes
    for args in ((None, ["student=my/model"]), (None, ["student.num_layers=2"])):
        with pytest.raises(ConfigError, match=r"`student` is a train setting: move it under `train:`"):
            load_recipe(*args)
    recipe_file.write_text(recipe_file.read_text() + "student: {derive_from: teacher, num_layers: 2}\n")
    with pytest.raises(ConfigError, match=rf"{recipe_file}: `student` is a train setting"):
        load_recipe(recipe_file)
    with pytest.raises(ConfigError, match="Recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


LAUGHS = """
generate:
  backend: openai
  backend_options:
    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused_and_plain_anchors_still_work(tmp_path):
    from pathlib import Path

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS)  # 9^9 = 387M values once expanded, as the config hash would (asdict, json)
    with pytest.raises(ConfigError, match=r"bomb\.yaml: YAML aliases expand to more than 100,000 values") as e:
        load_recipe(bomb)
    assert "\n" not in str(e.value)
    flow = "{a: &a [x, x, x, x, x, x, x, x, x, x]" + "".join(  # 10^6 values, in an override
        f", {c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcde", "bcdef")) + "}"
    with pytest.raises(ConfigError, match="alias bomb"):
        load_recipe(None, [f"eval.backend_options.extra_body={flow}"])
    loop = tmp_path / "loop.yaml"
    loop.write_text("generate:\n  backend_options: &x {extra_body: *x}\n")
    with pytest.raises(ConfigError, match="loop.yaml: a YAML alias refers to a value that contains it"):
        load_recipe(loop)
    # the recipes' own use: a prompt written once and named again
    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "cpu-xtok.yaml")
    cfg = build_configs(recipe)["eval"]
    assert recipe["eval"]["model_prompts"]["teacher"] is recipe["generate"]["prompt"]
    assert len(cfg.model_prompts["teacher"].examples) > 1
