from __future__ import annotations

import pytest

from r1distill.config import ConfigError, load_recipe, stage_config
from r1distill.pipeline import build_configs

RECIPE = """
run_dir: runs/x
teacher: smollm2-135m-instruct
student: {derive_from: teacher, num_layers: 4}
generate:
  source: {name: synthetic, num_problems: 3}
  num_samples: 2
train: {objective: sft}
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


def test_student_shorthand_and_missing_recipe(tmp_path):
    from r1distill.train import TrainConfig

    cfg = stage_config(load_recipe(None, ["student=my/model"]), "train", TrainConfig)
    assert cfg.student.name == "my/model" and cfg.student.derive_from is None
    with pytest.raises(ConfigError, match="Recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
