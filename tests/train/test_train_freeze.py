"""train.freeze_layers: the lower layers and the input embeddings do not change, nothing below layer N is
differentiated, the rest (and a tied head) trains."""

from __future__ import annotations

import pytest
import torch

from r1distill.config import ConfigError, UserError
from r1distill.models import derive_student
from r1distill.train import build_trainer
from train_fixtures import trace_rows, train_config, write_traces


@pytest.fixture(scope="module")
def student3(tmp_path_factory, teacher_dir):
    out = tmp_path_factory.mktemp("student3")
    return derive_student(str(teacher_dir), out, layers=[0, 15, 29])


def test_frozen_layers_get_no_gradient_and_the_rest_trains(tmp_path, student3):
    traces = write_traces(tmp_path / "traces", trace_rows(4))
    cfg = train_config(tmp_path / "t", student3, traces, batch_size=4, freeze_layers=2)
    trainer = build_trainer(cfg, str(student3)).trainer
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []  # a backward hook on a frozen layer's output fires only if the backward reaches it
    model.model.layers[1].register_forward_hook(
        lambda m, a, out: out.register_hook(lambda g: calls.append(1)) if out.requires_grad else None)
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    frozen = {n for n in before if n.startswith(("model.layers.0.", "model.layers.1."))}
    assert frozen and not changed & frozen
    assert {n for n in before if n.startswith("model.layers.2.")} <= changed
    assert "model.embed_tokens.weight" in changed  # tied to the LM head, which trains
    assert calls == []
    assert sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for n, p in model.named_parameters() if n not in frozen)


def test_freeze_layers_errors(tmp_path, student3):
    traces = write_traces(tmp_path / "traces", trace_rows(2))
    with pytest.raises(UserError, match=r"freeze_layers=3: the student has 3 decoder layers"):
        build_trainer(train_config(tmp_path / "a", student3, traces, freeze_layers=3), str(student3))
    with pytest.raises(ConfigError, match="freeze_layers must be >= 0"):
        train_config(tmp_path / "b", student3, traces, freeze_layers=-1)
