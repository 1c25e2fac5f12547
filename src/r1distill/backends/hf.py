"""The `hf` backend: transformers `generate`, batched, with exact top-k log-probs.

Raw log-probs, whatever the model's generation_config.json asks for: transformers would apply the processors
it names (repetition_penalty, no_repeat_ngram_size, min_new_tokens, suppress_tokens, bad_words_ids, ...; Qwen2.5-
Instruct ships repetition_penalty 1.05) before any processor of ours, and merges them into any GenerationConfig
passed in. So during `generate` the model's generation_config is swapped for a plain one holding only its special
token ids; transformers then builds no processor at all, and ours run in this order:
  1. TopKRecorder records `log_softmax(logits).topk(k)`: the model's temperature-1 distribution, `raw`;
  2. the user's temperature (transformers' warper) and top-p (TopPWarper: transformers' rule, without sorting
     the whole vocabulary), nothing else: the recipe's sampling settings are the only ones, as with the vllm and
     openai backends;
  3. SeededSampler adds Gumbel noise from one generator per sequence, and decoding is greedy: argmax(log p + G) is
     an exact draw from p, with a stream of its own per (prompt, sample) (`SamplingConfig.seeds`), so a problem's
     samples do not depend on what it is batched with (torch's one global generator would make them depend on it).
Keeping only (B, k) per step holds memory flat, where `output_logits=True` would keep (B, V) per step (measured:
3.8 GB against 1.35 GB peak RSS at batch 32 for SmolLM2). The (B, k) slices stay on the model's device until the
batch ends: a copy to the CPU at every step would stall a GPU once per token.

Batching: every (prompt, sample) pair of one `generate` call is a sequence, and the sequences of
the whole call are sorted by prompt length before they are cut into batches, so left padding stays
small; the `generate` stage calls once per shard, so the sort spans a shard's problems.

A shared prefix is computed once per batch: the samples of one prompt share all of it, and few-shot prompts share
their system line and worked examples (200 of the quickstart teacher's 250 prompt tokens). On a CPU the prompt
pass is most of a short generation's cost (one batch of 32 x 250 tokens costs about as much as 200 decoding
steps), and transformers' `generate` runs it for every sequence. So the batch's longest common token prefix (at
least MIN_SHARED_PREFIX tokens, leaving every row one token of its own) goes through the model once, its cache is
repeated over the batch, and each row continues from it laid out as [prefix][padding][own tokens]: the padding is
masked and the positions come from the attention mask, so every row sees exactly its own prompt. The dtype
comes from `load_model` ("auto": bf16 on a GPU that supports it and on a CPU with native bf16, else fp32).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from r1distill.backends import (
    Completion,
    OnResult,
    Progress,
    SamplingConfig,
    Scored,
    ScoreInput,
    derive_seed,
    prompt_seeds,
)
from r1distill.models import load_model, load_tokenizer
from r1distill.prompts import render_prompt
from r1distill.tokenbytes import fingerprint, spans, token_bytes

MIN_SHARED_PREFIX = 16  # tokens: below this the extra forward costs more than it saves
SCORE_CHUNK = 1024  # positions per LM-head chunk when scoring: (1024, V) float32 logits at a time (600 MB at 152k)


def topk_of_hidden(hidden: torch.Tensor, targets: torch.Tensor, head, k: int, chunk: int = SCORE_CHUNK,
                   softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-k of log_softmax(head(hidden)) and the targets' log-probs, `chunk` positions at a time, so that no
    (positions x vocabulary) tensor larger than (chunk, V) exists.

    hidden: (N, H) final hidden states (after the model's last norm), the positions that predict `targets`
    targets: (N,) token ids
    head: the output embedding (H -> V); softcap: the model's final_logit_softcapping (Gemma 2), None if none
    returns: ids (N, k) int32, log-probs (N, k) float32, target log-probs (N,) float32
    """
    ids, lps, chosen = [], [], []
    for s in range(0, hidden.shape[0], chunk):
        logits = head(hidden[s:s + chunk]).float()  # (c, V)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        lp = torch.log_softmax(logits, dim=-1)
        vals, idx = lp.topk(k, dim=-1)
        ids.append(idx.to(torch.int32))
        lps.append(vals)
        chosen.append(lp.gather(-1, targets[s:s + chunk, None].to(lp.device)).squeeze(-1))
    if not ids:
        return (torch.zeros(0, k, dtype=torch.int32), torch.zeros(0, k), torch.zeros(0))
    return torch.cat(ids), torch.cat(lps), torch.cat(chosen)


def shared_prefix(ids: list[list[int]]) -> int:
    """The length of the longest common prefix of the rows, leaving each row at least one token of its own (the
    first step needs a new token to produce logits from); 0 below MIN_SHARED_PREFIX or for a single row."""
    if len(ids) < 2:
        return 0
    first, n = ids[0], min(len(x) for x in ids) - 1
    for x in ids[1:]:
        n = next((i for i in range(n) if x[i] != first[i]), n)
    return n if n >= MIN_SHARED_PREFIX else 0


class TopKRecorder(LogitsProcessor):
    """Records the top-k log-probs of the raw next-token distribution at every step, and the raw log-prob of the
    token each step chose (in the top-k or not): read from the step's (B, V) log-probs once the next call (or
    `finish`) shows the chosen token as the last column of input_ids, so only one step's (B, V) is kept."""

    def __init__(self, k: int):
        self.k = k
        self.ids: list[torch.Tensor] = []  # per step: (B, k) int32
        self.logprobs: list[torch.Tensor] = []  # per step: (B, k) float32
        self.chosen: list[torch.Tensor] = []  # per step: (B,) float32, the chosen token's log-prob
        self._last: torch.Tensor | None = None  # the previous step's (B, V) log-probs

    def _take(self, input_ids: torch.Tensor) -> None:
        if self._last is not None:
            self.chosen.append(self._last.gather(-1, input_ids[:, -1:].to(self._last.device)).squeeze(-1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids)
        lp = torch.log_softmax(scores.float(), dim=-1)  # (B, V)
        vals, idx = lp.topk(self.k, dim=-1)  # (B, k)
        self.ids.append(idx.to(torch.int32))
        self.logprobs.append(vals)
        self._last = lp
        return scores

    def finish(self, output_ids: torch.Tensor) -> None:
        """After `generate`: the last step's chosen token is the output's last column."""
        self._take(output_ids)
        self._last = None


class TopPWarper(LogitsProcessor):
    """Nucleus filtering by transformers' TopPLogitsWarper rule (a token is kept while the probability of the
    tokens above it is below top_p; the most likely one always), read from the `k` largest probabilities when
    they hold top_p of the mass in every row, which is nearly always; otherwise the whole batch goes through
    transformers' warper. The warper sorts all V logits of every row at every step: 18% of the quickstart's
    generate time at V = 49k on a CPU, where a top-k of 256 is a small fraction of that. Where several tokens
    tie in probability at the cut (bf16 logits tie often) both keep as many as the rule says but may choose
    different ones among the tied (transformers' sort is not stable either), so a seeded sample can differ."""

    def __init__(self, top_p: float, k: int = 256):
        self.top_p, self.k = top_p, k
        self.fallback = TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.float().softmax(dim=-1)
        vals, idx = probs.topk(min(self.k, probs.shape[-1]), dim=-1)  # (B, k), descending
        cum = vals.cumsum(dim=-1)
        if not bool((cum[:, -1] >= self.top_p).all()):
            return self.fallback(input_ids, scores)
        keep = (cum - vals) < self.top_p  # the mass above each entry
        keep[:, 0] = True
        remove = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, idx, ~keep)
        return scores.masked_fill(remove, -float("inf"))


class SeededSampler(LogitsProcessor):
    """Turns greedy decoding into sampling from softmax(scores): adds Gumbel noise, drawn from one generator per
    sequence, so that each sequence's draws depend on its own seed only."""

    def __init__(self, seeds: list[int], device: torch.device):
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        V = scores.shape[-1]
        u = torch.stack([torch.rand(V, generator=g, device=scores.device) for g in self.gens])  # (B, V) in [0, 1)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return scores.float() + gumbel  # -inf (filtered by top-p) stays -inf


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end a generation: the model's generation_config's eos ids and the tokenizer's eos."""
    gen_eos = model.generation_config.eos_token_id
    eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    eos.add(tokenizer.eos_token_id)
    return sorted(i for i in eos if i is not None)


@contextmanager
def plain_generation_config(model):
    """The model's generation_config replaced, for the duration, by one holding only its special token ids: no
    processor the checkpoint asks for runs, and none of its sampling defaults (top_k 50, ...) leaks in."""
    saved = model.generation_config
    keep = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    model.generation_config = GenerationConfig(**{k: getattr(saved, k, None) for k in keep})
    try:
        yield
    finally:
        model.generation_config = saved


class HFBackend:
    name = "hf"
    # TopKRecorder is the first processor and the model's generation_config is not applied (module docstring)
    logprobs_kind = "raw"

    def __init__(self, model: str, dtype: str = "auto", device: str = "auto", batch_size: int = 32,
                 trust_remote_code: bool = False, share_prefix: bool = True):
        self.model_name = model
        self.batch_size = batch_size
        self.share_prefix = share_prefix  # compute a batch's common prompt prefix once (module docstring)
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        self.model = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        self.eos_ids = eos_ids(self.model, self.tokenizer)

    @classmethod
    def from_model(cls, model, tokenizer, batch_size: int = 32, share_prefix: bool = True) -> HFBackend:
        """A backend over a model already in memory, loading nothing: on-policy training samples from the student
        it is training (the weights as they are at each call) and scores with a teacher loaded beside it."""
        self = cls.__new__(cls)
        self.model_name = getattr(model, "name_or_path", "") or type(model).__name__
        self.batch_size, self.share_prefix = batch_size, share_prefix
        self.tokenizer, self.model = tokenizer, model
        self.eos_ids = eos_ids(model, tokenizer)
        return self

    @property
    def tokenizer_fingerprint(self) -> str:
        return fingerprint(self.tokenizer)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)

    def prompt_lengths(self, prompts: list[list[dict]], think_prefix: bool = False) -> list[int]:
        """Token count of each rendered prompt (the generate stage skips prompts that cannot fit the context)."""
        return [len(render_prompt(self.tokenizer, m, think_prefix)) for m in prompts]

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig, progress: Progress | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        encoded = [render_prompt(self.tokenizer, m, sampling.think_prefix) for m in prompts]
        # Every (prompt, sample) pair is one sequence; sorting the whole call by prompt length keeps padding low.
        seqs = sorted(((p, s) for p in range(len(prompts)) for s in range(sampling.n)),
                      key=lambda ps: (len(encoded[ps[0]]), ps))
        results: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        seeds = prompt_seeds(sampling, len(prompts))
        for start in range(0, len(seqs), self.batch_size):
            batch = seqs[start:start + self.batch_size]
            outs = self._generate_batch([encoded[p] for p, _ in batch], sampling,
                                        [derive_seed(seeds[p], s) for p, s in batch])
            for (p, s), out in zip(batch, outs):
                results[p][s] = out
                if on_result:
                    on_result(p, s, out)
            if progress:
                progress(len(batch), sum(len(o.token_ids) for o in outs))
        return results  # type: ignore[return-value]

    def generate_ids(self, ids: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        """Completions of already-rendered prompts (token ids), `batch_size` at a time in the given order; `seeds`:
        one per prompt (`sampling.n` is ignored: one completion each)."""
        out: list[Completion] = []
        for start in range(0, len(ids), self.batch_size):
            out += self._generate_batch(ids[start:start + self.batch_size], sampling,
                                        seeds[start:start + self.batch_size])
        return out

    @torch.no_grad()
    def score(self, inputs: list[ScoreInput], k: int, progress: Progress | None = None) -> list[Scored]:
        """The model's raw top-k (and each given token's log-prob) at every completion position: one forward pass
        per batch of (prompt, completion) sequences, batched by length (sorted, right-padded), the LM head applied
        only to the completion positions, `SCORE_CHUNK` at a time (`topk_of_hidden`)."""
        order = sorted(range(len(inputs)), key=lambda i: (len(inputs[i][0]) + len(inputs[i][1]), i))
        results: list[Scored | None] = [None] * len(inputs)
        body, head = self.model.base_model, self.model.get_output_embeddings()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            rows = [inputs[i][0] + inputs[i][1] for i in batch]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.model.device)
            attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.model.device)
            hidden = body(input_ids=input_ids, attention_mask=attention).last_hidden_state  # (B, L, H)
            # completion token j of a row with P prompt tokens sits at P + j and is predicted at P + j - 1
            spans_ = [(len(inputs[i][0]), len(inputs[i][1])) for i in batch]
            picked = torch.cat([hidden[b, p - 1:p - 1 + t] for b, (p, t) in enumerate(spans_)])  # (N, H)
            targets = torch.tensor([t for i in batch for t in inputs[i][1]], dtype=torch.long)
            ids, lps, chosen = (x.cpu().numpy() for x in topk_of_hidden(picked, targets, head, k, softcap=softcap))
            at = 0
            for i, (_, t) in zip(batch, spans_):
                results[i] = Scored(np.ascontiguousarray(ids[at:at + t]), np.ascontiguousarray(lps[at:at + t]),
                                    np.ascontiguousarray(chosen[at:at + t]))
                at += t
            if progress:
                progress(len(batch), int(sum(t for _, t in spans_)))
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, ids: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        """One batch; `seeds` holds each sequence's own seed (used when sampling)."""
        pad = self.tokenizer.pad_token_id
        P = shared_prefix(ids) if self.share_prefix else 0
        own = max(len(x) for x in ids) - P
        width = P + own
        # [shared prefix][left padding][the row's own tokens] (without a prefix: plain left padding)
        input_ids = torch.tensor([x[:P] + [pad] * (own - len(x) + P) + x[P:] for x in ids])
        attention = torch.tensor([[1] * P + [0] * (own - len(x) + P) + [1] * (len(x) - P) for x in ids])
        cache = {}
        if P:
            prefix = torch.tensor([ids[0][:P]], device=self.model.device)
            out = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
            # `cache` in transformers >= 5.2x, `past_key_values` before (vLLM 0.31 pins transformers < 5.18; the
            # old keyword stays accepted until 6.0): the output holds the field under the name `generate` takes.
            name = "cache" if "cache" in out else "past_key_values"
            cache[name] = out[name]
            cache[name].batch_repeat_interleave(len(ids))
        recorder = TopKRecorder(sampling.logprobs) if sampling.logprobs else None
        processors: list[LogitsProcessor] = [recorder] if recorder else []
        if sampling.temperature > 0:  # else greedy: plain argmax of the raw logits
            processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPWarper(sampling.top_p))
            processors.append(SeededSampler(seeds, self.model.device))
        config = GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=pad, eos_token_id=self.eos_ids)
        with plain_generation_config(self.model):
            out = self.model.generate(
                input_ids=input_ids.to(self.model.device),
                attention_mask=attention.to(self.model.device),
                generation_config=config,
                logits_processor=LogitsProcessorList(processors),
                **cache,
            )
        gen = out[:, width:].cpu()  # (B, T)
        if recorder:
            recorder.finish(out)
            all_ids = torch.stack(recorder.ids, dim=1).cpu().numpy()  # (B, T, k)
            all_lp = torch.stack(recorder.logprobs, dim=1).cpu().numpy()  # (B, T, k)
            chosen = torch.stack(recorder.chosen, dim=1).cpu().numpy()  # (B, T)
        table = token_bytes(self.tokenizer)
        eos = torch.tensor(self.eos_ids)
        completions = []
        for b in range(gen.shape[0]):
            row = gen[b]
            hits = torch.isin(row, eos).nonzero()
            if len(hits):
                length, finish = int(hits[0]) + 1, "stop"
            else:
                length, finish = row.shape[0], "length"
            token_ids = row[:length].tolist()
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            nbytes, ok = spans(token_ids, table, text)
            completions.append(Completion(
                text=text,
                token_ids=token_ids,
                finish_reason=finish,
                topk_ids=np.ascontiguousarray(all_ids[b, :length]) if recorder else None,
                topk_logprobs=np.ascontiguousarray(all_lp[b, :length]) if recorder else None,
                token_logprobs=np.ascontiguousarray(chosen[b, :length]) if recorder else None,
                token_nbytes=nbytes, token_bytes_ok=ok,
            ))
        return completions
