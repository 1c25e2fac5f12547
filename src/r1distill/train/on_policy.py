"""Objective `on_policy`: the student samples, the teacher scores the student's own tokens after *its* prompt, and
the student learns the per-token reverse KL (`train.on_policy`).

Why our own rather than TRL's: TRL's stable `DistillationTrainer` (on-policy, β = 1 reverse KL, vLLM rollouts) and
its experimental `GKDTrainer` (objective `gkd` here) give the teacher the student's prompt, so the context
distillation the quickstart rests on (the teacher with four worked examples, the student without) is lost
on-policy; and their teacher lives in the training process. Here the teacher is any r1distill backend that can
`score` (hf: loaded beside the student; vllm; openai: a vLLM / OpenAI-compatible server's prompt log-probs, out of
training memory), it reads the row's `teacher_prompt`, and rollouts use the project's hf sampler (shared prompt
prefix, fast top-p, a seed per row) on the live student, or a vLLM engine whose weights follow the trainer
(`rollout_backend`, train/rollouts.py). Everything else is `DistillTrainer`'s (TRL's SFTTrainer: optimizer, schedule,
accumulation, DDP, checkpoints) and the losses are the offline ones (losses.py).

One micro-batch (`OnPolicyTrainer.training_step`), on every process:
1. it is on-policy with probability `lmbda`, drawn from (seed, step, micro-batch): all processes draw alike;
2. rollout: the student (hf: eval mode, no gradient, the trainer's autocast; vllm: the engine's copy, refreshed
   every `rollout_sync_steps` steps) samples `rollouts_per_prompt` completions (default one) per row from the row's
   `prompt`, seeded by (seed, step, micro-batch, row, sample): the same samples on any number of processes and
   after a resume from a checkpoint;
3. scoring: the teacher's log-prob of every sampled token after its own prompt (and its top-k for the
   distribution form), one forward pass over teacher prompt + sample;
4. the batch becomes prompt + sample with labels on the sample (its eos included when it stopped), cut to
   max_length, and the loss is (loss "token") Σ_t w_t·CE_t with w_t = log p_teacher(x_t) − log p_student(x_t)
   from the rollout, or (loss "distribution") train.loss.divergence over the teacher's top-k; both normalised by
   the sampled tokens of all processes (× the accumulation steps: micro-batches are averaged); with
   `verified_only` only the rollouts whose answer the verifier accepts keep their labels (rejection sampling, the
   filter that carries offline KD here: README "On-policy, measured"); with `reward_coef` c the token form's
   weights gain c·(r − r̄), the verifier's reward less a baseline r̄ (REINFORCE beside the distillation): the mean
   of the prompt's own `rollouts_per_prompt` samples (GRPO's group baseline), or with one sample per prompt the
   micro-batch's mean.
Off-policy micro-batches are the kd objective's (the curated traces, their stored top-k, train.loss).
Logged per window: the sampled per-token reverse KL (`rkl`, mean of log p_student − log p_teacher), rollout and
scoring tokens/s, the on-policy steps' time split (rollout / scoring / forward+backward / weight sync to the vllm
rollout engine), and the verifier's answer rate and accuracy on the rollouts.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from r1distill.backends import SamplingConfig, close, derive_seed, get_backend
from r1distill.config import UserError
from r1distill.console import console
from r1distill.models import load_tokenizer
from r1distill.prompts import render_prompt
from r1distill.train import data, objectives, rollouts, skeleton
from r1distill.train.collate import DistillCollator
from r1distill.train.config import TrainConfig
from r1distill.train.losses import IGNORE
from r1distill.train.plan import Plan
from r1distill.train.trainer import DistillTrainer

# train_log.jsonl's extra keys: see the module docstring
ON_POLICY_KEYS = ("rkl", "on_policy_batches", "rollout_tokens_per_s", "score_tokens_per_s", "rollout_s", "score_s",
                  "train_s", "sync_s", "answer_rate", "accuracy")
# window sums, in this order
_STATS = ("batches", "rollout_s", "score_s", "train_s", "rollout_tokens", "trained_tokens", "rollouts", "answered",
          "correct", "rkl_sum", "sync_s")


class IndexedCollator(DistillCollator):
    """DistillCollator's batch plus `idx`, the rows' numbers: an on-policy step samples from those rows' prompts."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch["idx"] = torch.tensor([int(f["idx"]) for f in features], dtype=torch.long)
        return batch


def sampled_batch(prompts: list[list[int]], completions: list[list[int]], student_lp: list[np.ndarray],
                  teacher_lp: list[np.ndarray], pad: int, max_length: int, topk: list[tuple] | None = None) -> dict:
    """The on-policy training batch: prompt + sample, right-padded, labels on the sample cut to max_length, and
    `token_weights` = log p_teacher − log p_student at the label positions (zeros elsewhere); with `topk` (a
    (ids (c, k), log-probs (c, k)) pair per row) the teacher's top-k at the same positions."""
    feats = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        n = max(min(len(p) + len(c), max_length), len(p) + 1)  # at least one sampled token
        f = {"input_ids": np.asarray(p + c, dtype=np.int64)[:n], "prompt_len": len(p)}
        if topk is not None:
            f["topk_ids"], f["topk_logprobs"] = topk[i]
        feats.append(f)
    batch = DistillCollator(pad)(feats)
    weights = torch.zeros(batch["labels"].shape, dtype=torch.float32)
    for b, f in enumerate(feats):
        p, n = f["prompt_len"], len(f["input_ids"])
        weights[b, p:n] = torch.as_tensor(teacher_lp[b][:n - p] - student_lp[b][:n - p], dtype=torch.float32)
    batch["token_weights"] = weights
    return batch


class OnPolicyTrainer(DistillTrainer):
    """DistillTrainer whose micro-batches are, with probability lmbda, the student's own samples scored by the
    teacher (module docstring)."""

    def __init__(self, *args, on_policy, rows, teacher_prompts: list[list[int]], golds: list[str], scorer,
                 seed: int, rollouts_from: str, rollout_dtype: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.op = on_policy
        self.rows = rows  # data.TokenData: the kept rows (their prompts are the rollouts' prompts)
        self.teacher_prompts = teacher_prompts  # by global row: the teacher's rendered prompt ids
        self.golds = golds  # by global row: the gold answer (the rollouts' accuracy)
        self.scorer = scorer  # the teacher, a backend with `score`
        self.seed = seed
        # the rollout engine (train/rollouts.py); vllm starts on `rollouts_from`, the student's dir
        try:
            self.rollouts = rollouts.start(on_policy, self.accelerator, self.processing_class, rollouts_from,
                                           rollout_dtype)
        except BaseException:
            close(scorer)
            raise
        self._micro = (-1, 0)  # (global step, micro-batch index within it)
        self._op_sums = torch.zeros(len(_STATS), dtype=torch.float64)  # window sums (_STATS)
        self._op_totals = torch.zeros(len(_STATS), dtype=torch.float64)  # this session's sums
        self._pending: tuple[float, float] | None = None  # a token-form batch's (Σ NLL, Σ rkl) for _finish

    def close_teacher(self) -> None:
        """Stop the teacher and the rollout engine (their memory, their processes)."""
        close(self.scorer)
        self.rollouts.close()

    def on_policy_now(self, step: int, micro: int) -> bool:
        """Whether micro-batch `micro` of optimizer step `step` samples: the same answer on every process."""
        if self.op.lmbda >= 1.0:
            return True
        return random.Random(derive_seed(self.seed, "lmbda", step, micro)).random() < self.op.lmbda

    def rollout(self, model, idx: list[int], step: int, micro: int):
        """The student's samples from rows `idx`, `rollouts_per_prompt` (k) each, a row's k together: (prompts,
        completions), seeded by (seed, step, micro, row) and the sample's number j (the first sample's seed is the
        same whatever k), from the rollout engine (train/rollouts.py), its weights pushed first when they are
        `rollout_sync_steps` old."""
        op = self.op
        if self.rollouts.stale(step):
            t0 = time.perf_counter()
            self.rollouts.sync(self.accelerator.unwrap_model(model), step)
            self._op_sums[_STATS.index("sync_s")] += time.perf_counter() - t0
        k = op.rollouts_per_prompt
        feats = [self.rows.row(i) for i in idx]
        prompts = [[int(t) for t in f["input_ids"][:f["prompt_len"]]] for f in feats for _ in range(k)]
        sampling = SamplingConfig(n=1, max_new_tokens=op.max_new_tokens, temperature=op.temperature,
                                  top_p=op.top_p, logprobs=1)
        seeds = [derive_seed(self.seed, "rollout", step, micro, i, *([j] if j else [])) for i in idx for j in range(k)]
        return prompts, self.rollouts.sample(model, prompts, sampling, seeds)

    def on_policy_batch(self, model, inputs: dict, step: int, micro: int) -> dict:
        """Rollout -> scoring -> the batch to train on (module docstring), with the window's statistics."""
        from r1distill.verify import verify_answer

        op = self.op
        idx = inputs["idx"].tolist()
        t0 = time.perf_counter()
        prompts, outs = self.rollout(model, idx, step, micro)
        t1 = time.perf_counter()
        group = op.rollouts_per_prompt
        rows = [self.rows.global_row(i) for i in idx for _ in range(group)]
        k = op.teacher_topk if op.loss == "distribution" else 1
        scored = self.scorer.score([(self.teacher_prompts[g], o.token_ids) for g, o in zip(rows, outs)], k)
        t2 = time.perf_counter()
        student_lp = [np.asarray(o.token_logprobs, dtype=np.float64) for o in outs]
        teacher_lp = [np.asarray(s.token_logprobs, dtype=np.float64) for s in scored]
        topk = [(s.topk_ids, s.topk_logprobs) for s in scored] if op.loss == "distribution" else None
        batch = sampled_batch(prompts, [o.token_ids for o in outs], student_lp, teacher_lp,
                              self.processing_class.pad_token_id, self.args.max_length, topk)
        kept = [int((batch["labels"][b] != IGNORE).sum()) for b in range(len(outs))]
        row_nll = [float(-s[:c].sum()) for s, c in zip(student_lp, kept)]
        row_rkl = [float((s[:c] - t[:c]).sum()) for s, t, c in zip(student_lp, teacher_lp, kept)]
        verdicts = [verify_answer(o.text, self.golds[g]) for o, g in zip(outs, rows)]
        # the rollouts trained on: all, or (verified_only) those the verifier accepts; the others are logged only
        trained = [v.correct or not op.verified_only for v in verdicts]
        for b, t in enumerate(trained):
            if not t:
                batch["labels"][b] = IGNORE
        if op.reward_coef:  # the verifier's reward less a baseline, on every sampled token's advantage
            rewards = torch.tensor([float(v.correct) for v in verdicts])
            # the baseline: the mean of the prompt's own samples (k > 1: GRPO's group), else of the micro-batch
            base = rewards.view(-1, group).mean(1).repeat_interleave(group) if group > 1 else rewards.mean()
            for b, adv in enumerate((rewards - base).tolist()):
                sampled = batch["labels"][b] != IGNORE
                batch["token_weights"][b, sampled] += op.reward_coef * adv
        nll = sum(x for x, t in zip(row_nll, trained) if t)
        trained_rkl = sum(x for x, t in zip(row_rkl, trained) if t)
        self._op_sums += torch.tensor([1, t1 - t0, t2 - t1, 0, sum(len(o.token_ids) for o in outs), sum(kept),
                                       len(outs), sum(v.pred_answer is not None for v in verdicts),
                                       sum(v.correct for v in verdicts), sum(row_rkl), 0], dtype=torch.float64)
        if op.loss == "token":
            batch["loss_overrides"] = {"alpha": 1.0}  # the weighted CE alone
            self._pending = (nll, trained_rkl)
        else:
            batch["loss_overrides"] = {"alpha": 0.0}  # the divergence alone (CE on its own samples teaches nothing)
            batch.pop("token_weights")
            self._pending = (nll, None)
        return batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step
        micro = self._micro[1] + 1 if self._micro[0] == step else 0
        self._micro = (step, micro)
        on = self.on_policy_now(step, micro)
        if on:
            inputs = self.on_policy_batch(model, inputs, step, micro)
        else:
            self._pending = None
        inputs.pop("idx", None)
        # Each micro-batch is normalised by its own tokens on all processes (a sampled batch's length is known only
        # once sampled), times the accumulation steps: the accumulated gradient is the micro-batches' mean.
        n = (inputs["labels"][:, 1:] != IGNORE).sum().to(self.accelerator.device)
        if self.args.average_tokens_across_devices:  # as the Trainer counts: all processes' tokens
            n = self.accelerator.reduce(n, reduction="sum")
        n = n.clamp(min=1) * self.current_gradient_accumulation_steps  # (verified_only: a batch may train on none)
        t0 = time.perf_counter()
        loss = super().training_step(model, inputs, n)
        if on:
            self._op_sums[_STATS.index("train_s")] += time.perf_counter() - t0
        return loss

    def _finish(self, model, parts, labels, num_items_in_batch, return_outputs):
        """An on-policy batch logs its samples' NLL as ce; the token form logs their reverse KL as kd and as the
        loss's value (its gradient stays the weighted CE's, a surrogate whose own value means nothing)."""
        if self._pending is not None and model.training:
            # as the losses return them: this process's sums over num_items_in_batch (_finish multiplies back)
            n = float(num_items_in_batch)
            nll, rkl = self._pending
            parts = dict(parts)
            parts["ce"] = torch.tensor(nll / n, dtype=torch.float64)
            if rkl is not None:
                parts["kd"] = torch.tensor(rkl / n, dtype=torch.float64)
                loss = parts["loss"]
                parts["loss"] = loss - loss.detach() + torch.tensor(rkl / n, dtype=loss.dtype, device=loss.device)
            self._pending = None
        return super()._finish(model, parts, labels, num_items_in_batch, return_outputs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:
            s = self.accelerator.reduce(self._op_sums.to(self.accelerator.device), reduction="sum").cpu()
            self._op_totals += s
            self._op_sums.zero_()
            logs.update(window_stats(s, self.accelerator.num_processes))
        super().log(logs, start_time)

    def summary(self) -> dict:
        """This session's on-policy totals (all processes), for summary.json."""
        t = dict(zip(_STATS, self._op_totals.tolist()))
        return {"on_policy_batches": int(t["batches"]), "rollouts": int(t["rollouts"]),
                "rollout_tokens": int(t["rollout_tokens"]), "sampled_tokens_trained": int(t["trained_tokens"]),
                # every token trained on this session (sampled and, off-policy, curated), all processes
                "completion_tokens_seen": self._tokens_seen + float(self._sums[2]),
                **window_stats(self._op_totals, self.accelerator.num_processes)}


def window_stats(sums: torch.Tensor, processes: int) -> dict[str, float]:
    """The logged on-policy figures from a window's summed `_STATS` (times summed over processes: per process)."""
    s = dict(zip(_STATS, sums.tolist()))
    b = s["batches"] or 1.0
    rollouts = s["rollouts"] or 1.0
    return {
        "on_policy_batches": s["batches"] / processes,
        "rkl": s["rkl_sum"] / s["trained_tokens"] if s["trained_tokens"] else 0.0,
        "rollout_tokens_per_s": s["rollout_tokens"] / s["rollout_s"] if s["rollout_s"] else 0.0,
        "score_tokens_per_s": s["rollout_tokens"] / s["score_s"] if s["score_s"] else 0.0,
        "rollout_s": s["rollout_s"] / b, "score_s": s["score_s"] / b, "train_s": s["train_s"] / b,
        "sync_s": s["sync_s"] / b,
        "answer_rate": s["answered"] / rollouts, "accuracy": s["correct"] / rollouts,
    }


def teacher_side(cfg: TrainConfig, rows) -> tuple[list[list[int]], list[str]]:
    """Per global row of the input: the teacher's prompt rendered by its own chat template (`teacher_prompt`, or
    `prompt` where a trace has none), and the gold answer."""
    table = data.read_columns(cfg.inp, ["prompt", "teacher_prompt", "answer"])
    tok = load_tokenizer(cfg.teacher)
    prompts, teacher_prompts = table.column("prompt").to_pylist(), table.column("teacher_prompt").to_pylist()
    rendered = [render_prompt(tok, t or p) for p, t in zip(prompts, teacher_prompts)]
    answers = table.column("answer").to_pylist()
    if len(rendered) != rows.rows_total:
        raise UserError(f"{cfg.inp}: {len(rendered)} rows read but the token cache holds {rows.rows_total}; "
                        "the curated dir changed while training started: run again")
    return rendered, [a or "" for a in answers]


def build(cfg: TrainConfig, student_path: str, tokenizer, plan: Plan) -> skeleton.Setup:
    """The on-policy trainer: the curated rows' prompts, the student, and the teacher backend that scores."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    op = cfg.on_policy
    data.check_vocab(student_path, tokenizer, cfg.teacher, "on-policy distillation (the teacher scores the "
                     "student's own tokens)")
    need_topk = plan.topk  # the off-policy steps (lmbda < 1) are kd's
    if need_topk:
        data.check_logprobs_kind(cfg)
    with PartialState().local_main_process_first():
        cache = data.prepare_tokens(cfg, tokenizer, need_topk, retok=False)
    rows = data.TokenData(cache, cfg.max_length)
    data.require_rows(rows, cfg.inp, cfg.max_length)
    teacher_prompts, golds = teacher_side(cfg, rows)
    extra = (f", verifier reward x{op.reward_coef:g}" if op.reward_coef else "") + \
        (f", {op.rollouts_per_prompt} rollouts a prompt" if op.rollouts_per_prompt > 1 else "") + \
        (f", {op.rollout_backend} rollouts" if op.rollout_backend != "hf" else "")
    console.print(f"[bold]train[/] on_policy ({op.loss} loss, lmbda={op.lmbda}, {op.max_new_tokens} new tokens at "
                  f"temperature {op.temperature}{extra}) on the prompts of {len(rows)} traces from {student_path}, "
                  f"teacher {cfg.teacher} ({op.teacher_backend}) with its own prompt -> {cfg.out}")
    skeleton.warn_small(len(rows))
    args = skeleton.training_args(cfg, SFTConfig, remove_unused_columns=False,
                                  dataset_kwargs={"skip_prepare_dataset": True})
    ckpt = skeleton.prepare_work(cfg, args.process_index == 0)
    PartialState().wait_for_everyone()
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32, use_safetensors=True)
    skeleton.freeze_lower(model, cfg.freeze_layers)
    bf16 = skeleton.use_bf16(cfg)
    device = str(args.device) if cfg.teacher_device == "auto" else cfg.teacher_device
    common = {"dtype": "bfloat16" if bf16 else "float32", "batch_size": cfg.batch_size}
    if op.teacher_backend == "hf":
        common["device"] = device
    scorer = get_backend(op.teacher_backend, cfg.teacher, op.teacher_backend_options, **common)
    trainer = OnPolicyTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"idx": list(range(len(rows)))}),
        processing_class=tokenizer, peft_config=skeleton.lora_config(cfg), loss=cfg.loss,
        vocab_size=objectives.aligned_vocab(tokenizer, model, None, student_path, cfg.teacher),
        data_collator=IndexedCollator(tokenizer.pad_token_id, rows, topk=cfg.loss.topk if need_topk else None),
        on_policy=op, rows=rows, teacher_prompts=teacher_prompts, golds=golds, scorer=scorer, seed=cfg.seed,
        rollouts_from=student_path, rollout_dtype=common["dtype"],
    )
    return skeleton.Setup(trainer, tokenizer, len(rows), rows.truncated, rows.completion_tokens, ckpt, data=rows,
                          log_keys=skeleton.LOG_KEYS + ON_POLICY_KEYS, extra={"teacher": cfg.teacher})
