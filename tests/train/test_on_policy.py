"""Objective `on_policy`: the student's own samples, scored by the teacher after the teacher's own prompt.

The losses against hand-computed values, then real runs of a 1-layer student of the built-in teacher: the weights
and the logged reverse KL recomputed with plain forward passes (the teacher's after its own prompt, with examples the
student never sees), teacher = student giving zero loss and zero gradient, seeded rollouts, kill-and-resume.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from r1distill.cli import main
from r1distill.config import ConfigError
from r1distill.train import LossConfig, OnPolicyOptions, TrainConfig
from r1distill.train.losses import IGNORE, chunked_distill_loss, distill_loss
from r1distill.train.on_policy import sampled_batch, window_stats
from r1distill.train.run import build_trainer, prepare_student
from train_fixtures import trace_rows, train_config, train_killed_at_first_checkpoint, write_traces

TEACHER_PROMPT = [{"role": "system", "content": "Add the numbers. Write 'The answer is N.'"},
                  {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "The answer is 4."}]


# ---- the losses ----

def test_weighted_ce_is_the_hand_computed_sum_and_its_gradient_the_policy_gradient():
    """Σ w_t·CE_t / N on a (1, 3, 4) batch, by hand: CE_t = −log softmax(z_t)[y_t]; and its gradient w.r.t. the
    logits is w_t·(softmax(z_t) − onehot(y_t)) / N, the gradient of −w_t·log q(y_t)."""
    z = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]], requires_grad=True)
    y = torch.tensor([[0, 2, IGNORE]])
    w = torch.tensor([[0.5, -2.0, 7.0]])  # the ignored position's weight counts for nothing
    ce0 = -(1.0 - math.log(math.e + 3))  # log q(0) at z = [1, 0, 0, 0]
    ce1 = -(0.0 - math.log(math.e ** 2 + 3))
    want = (0.5 * ce0 - 2.0 * ce1) / 2
    out = distill_loss(z, y, alpha=1.0, token_weights=w)
    assert out["loss"].item() == pytest.approx(want, rel=1e-6)
    out["loss"].backward()
    q = torch.softmax(z.detach(), -1)
    g = torch.zeros_like(z)
    g[0, 0] = 0.5 * (q[0, 0] - torch.eye(4)[0]) / 2
    g[0, 1] = -2.0 * (q[0, 1] - torch.eye(4)[2]) / 2
    assert torch.allclose(z.grad, g, atol=1e-7)
    # the chunked head gives the same value and gradients (chunks of 1 row)
    h = torch.randn(1, 3, 5, requires_grad=True)
    W = torch.randn(4, 5, requires_grad=True)
    ref = distill_loss(h @ W.t(), y, alpha=1.0, token_weights=w)
    ref["loss"].backward()
    gh, gw = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    got = chunked_distill_loss(h, W, y, alpha=1.0, token_weights=w, chunk_size=1)
    got["loss"].backward()
    assert got["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    assert torch.allclose(h.grad, gh, atol=1e-6) and torch.allclose(W.grad, gw, atol=1e-6)
    with pytest.raises(ValueError, match="alpha = 1"):
        distill_loss(z, y, alpha=0.5, topk_ids=torch.zeros(1, 3, 1, dtype=torch.long),
                     topk_logprobs=torch.zeros(1, 3, 1), token_weights=w)


def test_sampled_batch_places_the_sample_and_its_weights_after_the_prompt():
    b = sampled_batch([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], [np.array([-1.0, -2.0]), np.array([-0.5, -0.25, -3.0])],
                      [np.array([-1.5, -1.0]), np.array([-0.5, -1.25, -1.0])], pad=0, max_length=4)
    assert b["input_ids"].tolist() == [[5, 6, 7, 1], [8, 3, 4, 9]]  # the first row's sample cut to max_length
    assert b["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 1], [IGNORE, 3, 4, 9]]
    assert b["token_weights"].tolist() == [[0, 0, 0, -0.5], [0, 0, -1.0, 2.0]]  # log p_teacher − log p_student
    s = window_stats(torch.tensor([2, 3.0, 1.0, 2.0, 10, 8, 4, 3, 1, 4.0, 0.5], dtype=torch.float64), processes=1)
    assert (s["rkl"], s["rollout_tokens_per_s"], s["score_tokens_per_s"], s["rollout_s"]) == (0.5, 10 / 3, 10, 1.5)
    assert s["sync_s"] == 0.25  # the weight push, per on-policy batch
    assert (s["answer_rate"], s["accuracy"]) == (0.75, 0.25)


def test_on_policy_settings_are_checked():
    with pytest.raises(ConfigError, match="on_policy.loss"):
        OnPolicyOptions(loss="sequence")
    with pytest.raises(ConfigError, match="lmbda"):
        OnPolicyOptions(lmbda=1.5)
    with pytest.raises(ConfigError, match="teacher_backend"):
        OnPolicyOptions(teacher_backend="tgi")
    with pytest.raises(ConfigError, match="teacher_backend_options.*base_url"):
        OnPolicyOptions(teacher_backend="openai", teacher_backend_options={"base_url": "http://x"})
    with pytest.raises(ConfigError, match="temperature must be 1"):
        TrainConfig(objective="on_policy", loss=LossConfig(temperature=2.0))


# ---- real runs: a 1-layer student of the built-in teacher ----

def _traces(tmp_path, teacher_prompt: bool):
    rows = trace_rows(8, seed=3)
    for r in rows:
        r["teacher_prompt"] = TEACHER_PROMPT + r["prompt"] if teacher_prompt else None
    return write_traces(tmp_path / "curated", rows)


def _config(tmp_path, student, teacher, traces, **on_policy) -> TrainConfig:
    op = OnPolicyOptions(**({"max_new_tokens": 6} | on_policy))
    return train_config(tmp_path, student, traces, teacher=str(teacher), objective="on_policy", on_policy=op,
                        bf16=False, batch_size=4, alpha=0.0 if op.loss == "distribution" else 0.5,
                        topk_mode="tail")


def _one_batch(trainer, step: int = 0, micro: int = 0):
    """An on-policy batch of the dataset's first 4 rows, as training_step builds it."""
    inputs = trainer.data_collator([{"idx": i} for i in range(4)])
    return trainer.on_policy_batch(trainer.model, inputs, step, micro)


def test_the_teacher_scores_after_its_own_prompt(tmp_path, student_dir, teacher_dir):
    """The weights are log p_teacher − log p_student of each sampled token, the teacher's computed by a plain
    forward pass over *its* prompt (examples included) + the sample, the student's over its own prompt + the sample;
    the logged kd (and the loss's value) is their mean over the sampled tokens."""
    from transformers import AutoModelForCausalLM

    from r1distill.models import load_tokenizer
    from r1distill.prompts import render_prompt

    cfg = _config(tmp_path, student_dir, teacher_dir, _traces(tmp_path, teacher_prompt=True))
    setup = build_trainer(cfg, prepare_student(cfg))
    trainer = setup.trainer
    seen = []
    score = trainer.scorer.score
    trainer.scorer.score = lambda inputs, k: seen.append(inputs) or score(inputs, k)
    batch = _one_batch(trainer)
    tok = load_tokenizer(str(teacher_dir))
    rows = trace_rows(8, seed=3)
    want_prompts = [render_prompt(tok, TEACHER_PROMPT + r["prompt"]) for r in rows[:4]]
    assert [p for p, _ in seen[0]] == want_prompts and all(len(p) > 40 for p in want_prompts)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b, (tp, sample) in enumerate(seen[0]):
            p = render_prompt(tok, rows[b]["prompt"])
            assert batch["input_ids"][b, :len(p)].tolist() == p  # the student sampled from its own prompt
            t_lp = torch.log_softmax(teacher(torch.tensor([tp + sample])).logits[0, len(tp) - 1:-1], -1)
            s_lp = torch.log_softmax(student(torch.tensor([p + sample])).logits[0, len(p) - 1:-1], -1)
            idx = torch.tensor(sample)[:, None]
            want = (t_lp.gather(-1, idx) - s_lp.gather(-1, idx)).squeeze(-1)
            got = batch["token_weights"][b, len(p):len(p) + len(sample)]
            assert torch.allclose(got, want, atol=2e-4), (got, want)
            total, count = total - float(want.sum()), count + len(sample)
    assert abs(total / count) > 0.05  # the teacher's examples make it disagree with the student
    trainer.model.train()  # as training_step leaves it
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=count)
    assert loss.item() == pytest.approx(total / count, rel=1e-3)


@pytest.mark.parametrize("form", ["token", "distribution"])
def test_teacher_equal_to_student_gives_zero_loss_and_zero_gradient(tmp_path, student_dir, form):
    cfg = _config(tmp_path, student_dir, student_dir, _traces(tmp_path, teacher_prompt=False), loss=form,
                  teacher_topk=8)
    trainer = build_trainer(cfg, prepare_student(cfg)).trainer
    batch = _one_batch(trainer)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=n)
    loss.backward()
    grad = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in trainer.model.parameters() if p.grad is not None))
    assert abs(loss.item()) < 1e-4 and grad < 1e-3, (loss.item(), grad)
    # (test_the_teacher_scores_after_its_own_prompt shows the same quantities far from zero for another teacher)
    if form == "token":
        assert batch["token_weights"].abs().max() < 1e-4


def test_rollouts_are_seeded_by_step_and_row(tmp_path, student_dir, teacher_dir):
    cfg = _config(tmp_path, student_dir, teacher_dir, _traces(tmp_path, teacher_prompt=False))
    trainer = build_trainer(cfg, prepare_student(cfg)).trainer
    ids = lambda step, rows: [o.token_ids for o in trainer.rollout(trainer.model, rows, step, 0)[1]]  # noqa: E731
    first = ids(3, [0, 1, 2, 3])
    assert ids(3, [0, 1, 2, 3]) == first
    assert ids(3, [2, 3]) == first[2:]  # a row's sample does not depend on its batch (nor on the process)
    assert ids(4, [0, 1, 2, 3]) != first


def _recipe(tmp_path, student, teacher) -> list[str]:
    """8 rows, batch 2, 1 epoch: 4 steps, most of them on-policy (lmbda 0.9; the rest kd on the stored top-k),
    a checkpoint every 2."""
    recipe = tmp_path / "op.yaml"
    recipe.write_text(
        f"teacher: {teacher}\ntrain:\n  student: {{name: {student}}}\n  objective: on_policy\n  input_dir: "
        f"{tmp_path / 'curated'}\n  epochs: 1\n  batch_size: 2\n  learning_rate: 1.0e-3\n  warmup_ratio: 0\n"
        f"  lr_scheduler: constant\n  report_to: []\n  bf16: false\n  max_length: 64\n  save_steps: 2\n"
        f"  cache_dir: {tmp_path / 'cache'}\n  on_policy: {{max_new_tokens: 6, lmbda: 0.9}}\n")
    return ["train", str(recipe)]


def _steps(out) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if '"summary"' not in x]


@pytest.mark.slow  # a training process killed and resumed
def test_sigkill_then_resume_repeats_the_uninterrupted_steps(tmp_path, student_dir, teacher_dir):
    """The resumed run logs the uninterrupted run's steps 3 and 4: the same on/off choices (drawn from seed and
    step) and the same rollouts (seeded by step and row), hence the same losses."""
    _traces(tmp_path, teacher_prompt=True)
    args = _recipe(tmp_path, student_dir, teacher_dir)
    assert main([*args, f"run_dir={tmp_path / 'ref'}"]) == 0
    ref = _steps(tmp_path / "ref" / "student")
    summary = json.loads((tmp_path / "ref" / "student" / "summary.json").read_text())
    assert [r["on_policy_batches"] for r in ref] == [1.0, 0.0, 1.0, 1.0]  # fixed by (seed, step)
    assert (summary["steps"], summary["on_policy_batches"], summary["rollouts"]) == (4, 3, 6)
    assert all(r[k] >= 0 for r in ref for k in ("rollout_s", "score_s", "answer_rate", "accuracy"))

    run = tmp_path / "killed"
    ckpt = train_killed_at_first_checkpoint([*args, f"run_dir={run}"], run / "student.work", tmp_path / "killed.log")
    assert ckpt.name == "checkpoint-2"
    assert main([*args, f"run_dir={run}", "--resume"]) == 0
    resumed = _steps(run / "student")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(resumed[2:], ref[2:]):
        for key in ("loss", "ce", "kd", "rkl", "on_policy_batches"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_verified_only_trains_on_the_rollouts_the_verifier_accepts(tmp_path, student_dir, teacher_dir, monkeypatch):
    """Rows 0 and 2 verify, 1 and 3 do not: only 0 and 2 keep labels; the loss's value is the reverse KL over their
    tokens alone; all four are still counted in the logged accuracy (2 of 4)."""
    from r1distill import verify

    fake = lambda text, gold: verify.Verdict(pred_answer="1", rule="boxed", correct=gold == "right",  # noqa: E731
                                             gold_ok=True)
    monkeypatch.setattr(verify, "verify_answer", fake)
    batches = {}
    for only in (False, True):
        d = tmp_path / str(only)
        cfg = _config(d, student_dir, teacher_dir, _traces(d, teacher_prompt=True), verified_only=only)
        trainer = build_trainer(cfg, prepare_student(cfg)).trainer
        right = {trainer.rows.global_row(0), trainer.rows.global_row(2)}
        trainer.golds = ["right" if g in right else "wrong" for g in range(len(trainer.golds))]
        batches[only] = (trainer, _one_batch(trainer))
    (_, every), (trainer, only) = batches[False], batches[True]
    assert torch.equal(every["input_ids"], only["input_ids"])  # the same seeded rollouts
    assert torch.equal(only["labels"][[0, 2]], every["labels"][[0, 2]]) and (only["labels"][[1, 3]] == IGNORE).all()
    kept = (only["labels"][[0, 2]] != IGNORE) & (every["token_weights"][[0, 2]] != 0)
    n = int((only["labels"][:, 1:] != IGNORE).sum())
    assert n > 0
    want = float(-every["token_weights"][[0, 2]][kept].sum()) / n  # the reverse KL over rows 0 and 2's tokens
    trainer.model.train()
    assert trainer.compute_loss(trainer.model, only, num_items_in_batch=n).item() == pytest.approx(want, rel=1e-3)
    assert window_stats(trainer._op_sums, 1)["accuracy"] == 0.5


def test_reward_coef_adds_the_verifiers_centred_reward_to_each_sampled_tokens_advantage(tmp_path, student_dir,
                                                                                       teacher_dir, monkeypatch):
    """Rows 0 and 2 verify, 1 and 3 do not: with reward_coef 0.5 the weights of rows 0 and 2's sampled tokens gain
    0.5·(1 − 0.5) and those of rows 1 and 3 lose 0.5·0.5; nothing else changes (the same seeded rollouts, labels)."""
    from r1distill import verify

    fake = lambda text, gold: verify.Verdict(pred_answer="1", rule="boxed", correct=gold == "right",  # noqa: E731
                                             gold_ok=True)
    monkeypatch.setattr(verify, "verify_answer", fake)
    batches = {}
    for coef in (0.0, 0.5):
        d = tmp_path / str(coef)
        cfg = _config(d, student_dir, teacher_dir, _traces(d, teacher_prompt=True), reward_coef=coef)
        trainer = build_trainer(cfg, prepare_student(cfg)).trainer
        right = {trainer.rows.global_row(0), trainer.rows.global_row(2)}
        trainer.golds = ["right" if g in right else "wrong" for g in range(len(trainer.golds))]
        batches[coef] = _one_batch(trainer)
    plain, rewarded = batches[0.0], batches[0.5]
    assert torch.equal(plain["input_ids"], rewarded["input_ids"]) and torch.equal(plain["labels"], rewarded["labels"])
    sampled = plain["labels"] != IGNORE
    want = plain["token_weights"].clone()
    want[[0, 2]] += 0.25 * sampled[[0, 2]]
    want[[1, 3]] -= 0.25 * sampled[[1, 3]]
    assert sampled.sum() > 8 and torch.allclose(rewarded["token_weights"], want, atol=1e-6)
    with pytest.raises(ConfigError, match="reward_coef adds to the token form"):
        OnPolicyOptions(loss="distribution", reward_coef=0.5)


def test_rollouts_per_prompt_samples_each_prompt_k_times_with_the_groups_mean_as_baseline(tmp_path, student_dir,
                                                                                          teacher_dir, monkeypatch,
                                                                                          capsys):
    """k = 2: 4 prompts give 8 rollouts, a prompt's two together, the first of each the same sample as with k = 1
    (its seed does not depend on k). The verifier (faked) accepts all but every fourth rollout, so rewards are
    1 1 | 1 0 | 1 1 | 1 0 and, against each prompt's own mean, the advantages 0 0 | ½ −½ | 0 0 | ½ −½: with
    reward_coef 0.5 those times 0.5 are added to the sampled tokens' weights, nothing else."""
    import itertools

    from r1distill import verify

    def sample(b, batch):  # row b's sampled tokens
        return batch["input_ids"][b][batch["labels"][b] != IGNORE].tolist()

    batches = {}
    for k, coef in ((1, 0.0), (2, 0.0), (2, 0.5)):
        calls = itertools.count()
        monkeypatch.setattr(verify, "verify_answer", lambda text, gold, c=calls: verify.Verdict(
            pred_answer="1", rule="boxed", correct=next(c) % 4 != 3, gold_ok=True))
        d = tmp_path / f"{k}-{coef}"
        cfg = _config(d, student_dir, teacher_dir, _traces(d, teacher_prompt=True), rollouts_per_prompt=k,
                      reward_coef=coef)
        capsys.readouterr()
        batches[k, coef] = _one_batch(build_trainer(cfg, prepare_student(cfg)).trainer)
        header = " ".join(capsys.readouterr().err.split())  # the stage's first line names both settings
        assert "on_policy (token loss" in header and ("2 rollouts a prompt" in header) == (k == 2), header
        assert ("verifier reward x0.5, 2 rollouts" in header) == (coef == 0.5), header
    one, two, rewarded = batches[1, 0.0], batches[2, 0.0], batches[2, 0.5]
    assert one["input_ids"].shape[0] == 4 and two["input_ids"].shape[0] == 8
    assert [sample(2 * b, two) for b in range(4)] == [sample(b, one) for b in range(4)]
    assert any(sample(2 * b, two) != sample(2 * b + 1, two) for b in range(4))  # the second sample is another draw
    assert torch.equal(two["input_ids"], rewarded["input_ids"])
    advantage = torch.tensor([0, 0, 0.5, -0.5, 0, 0, 0.5, -0.5])[:, None]
    want = two["token_weights"] + 0.5 * advantage * (two["labels"] != IGNORE)
    assert torch.allclose(rewarded["token_weights"], want, atol=1e-6)
    with pytest.raises(ConfigError, match="rollouts_per_prompt must be >= 1"):
        OnPolicyOptions(rollouts_per_prompt=0)
