"""The `vllm` backend: in-process `vllm.LLM` (the optional `[vllm]` extra, vllm==0.31.0).

`vllm` is imported only when the backend is built, so this module (its `Options` and the pure
`to_completion` conversion) imports without it.

Log-probs: vLLM's `logprobs_mode="raw_logprobs"` (its default since v0.10) returns the
log-softmax of the logits before any penalty, temperature or top-p, i.e. the teacher's
temperature-1 distribution, the same thing the hf backend stores: `logprobs_kind = "raw"`.
`"processed_logprobs"` returns them after temperature/top-p (`logprobs_kind = "processed"`).
Per generated token vLLM returns a dict {token id: Logprob(logprob, rank)} holding the top-k and
the sampled token, the sampled token first: k+1 entries when the sampled token is outside the
top-k. `to_completion` sorts by log-prob and keeps the k best.

Parallelism: `tensor_parallel_size` / `pipeline_parallel_size` go to one engine (with
`distributed_executor_backend="ray"` it spans the nodes of a Ray cluster). `vllm.LLM` refuses
`data_parallel_size > 1` in a single process, so `data_parallel_size = D` starts D worker processes,
each an independent engine on its own tp*pp GPUs (a dense model's data-parallel ranks share
nothing), and splits every call's prompts between them. For data parallel across nodes run one
`r1distill generate --shard i/N` per node instead.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from r1distill.backends import Completion, Progress, SamplingConfig, prompt_seeds
from r1distill.config import ConfigError
from r1distill.models import load_tokenizer, resolve_model
from r1distill.prompts import render_prompt
from r1distill.tokenbytes import fingerprint, spans, token_bytes

LOGPROBS_MODES = {"raw_logprobs": "raw", "processed_logprobs": "processed"}
EXECUTORS = ("ray", "mp", "uni", "external_launcher")


@dataclass
class Options:
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1  # independent engine replicas, one worker process each (see the module doc)
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # "ray" for many nodes, "mp" for one; None: vLLM picks
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None: the model's own context length
    enforce_eager: bool = False  # no CUDA graphs (faster start, slower decoding)
    logprobs_mode: str = "raw_logprobs"  # or "processed_logprobs" (after temperature/top-p)
    max_logprobs: int = 20  # vLLM's cap on logprobs=k per request: raise it for generate.topk_logprobs > 20

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "data_parallel_size", "pipeline_parallel_size", "max_logprobs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"backend_options.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"backend_options.gpu_memory_utilization must be in (0, 1], "
                              f"got {self.gpu_memory_utilization}")
        if self.distributed_executor_backend not in (None, *EXECUTORS):
            raise ConfigError(f"backend_options.distributed_executor_backend must be one of {', '.join(EXECUTORS)} "
                              f"(or unset), got {self.distributed_executor_backend!r}")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ConfigError(f"backend_options.logprobs_mode must be raw_logprobs or processed_logprobs (the stored "
                              f"values are log-probabilities, not logits), got {self.logprobs_mode!r}")
        if self.data_parallel_size > 1 and self.distributed_executor_backend == "ray":
            raise ConfigError("backend_options.data_parallel_size > 1 runs engine replicas on this node's GPUs; with "
                              "Ray across nodes run one `r1distill generate --shard i/N` per replica instead")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"backend_options.max_model_len must be >= 1, got {self.max_model_len}")

    @property
    def logprobs_kind(self) -> str:
        return LOGPROBS_MODES[self.logprobs_mode]


def to_completion(out, k: int) -> Completion:
    """One vLLM `CompletionOutput` -> a `Completion` with (T, k) top-k arrays ordered by rank.

    out.logprobs: one {token id: Logprob} mapping per generated token (a list, or vLLM's FlatLogprobs,
    which indexes the same way), None when no log-probs were asked for. A position with fewer than k
    entries (a vocabulary smaller than k) is padded with id -1 / log-prob -inf and counted in
    `unmapped_tokens`, as the Completion contract says.
    """
    if out.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM request ended with finish_reason={out.finish_reason!r} (stop reason "
                           f"{out.stop_reason!r}); the engine aborted it or failed")
    token_ids = [int(t) for t in out.token_ids]  # ends with the eos when finish_reason is "stop"
    comp = Completion(text=out.text, token_ids=token_ids, finish_reason=out.finish_reason)
    if not k:
        return comp
    if out.logprobs is None or len(out.logprobs) != len(token_ids):
        got = "none" if out.logprobs is None else len(out.logprobs)
        raise RuntimeError(f"vLLM returned {got} log-prob positions for {len(token_ids)} tokens (asked for top-{k})")
    ids = np.full((len(token_ids), k), -1, dtype=np.int32)
    lps = np.full((len(token_ids), k), -np.inf, dtype=np.float32)
    chosen = np.full(len(token_ids), np.nan, dtype=np.float32)  # vLLM always returns the sampled token's entry
    for t in range(len(token_ids)):
        position = dict(out.logprobs[t].items())
        if (own := position.get(token_ids[t])) is not None:
            chosen[t] = own.logprob
        # Ties in log-prob keep vLLM's rank order; the sampled token, when outside the top-k, sorts last.
        best = sorted(position.items(), key=lambda e: (-e[1].logprob, e[1].rank or 0, e[0]))[:k]
        ids[t, :len(best)] = [i for i, _ in best]
        lps[t, :len(best)] = [e.logprob for _, e in best]
        comp.unmapped_tokens += len(best) < k
    comp.topk_ids, comp.topk_logprobs, comp.token_logprobs = ids, lps, chosen
    return comp


def split_evenly(n: int, parts: int) -> list[range]:
    """`parts` contiguous ranges covering range(n), sizes differing by at most one (empty ones last)."""
    q, r = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (i < r))
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


def _sampling_params(sampling: SamplingConfig, count: int):
    """One `SamplingParams` per prompt, seeded with the prompt's own seed (`SamplingConfig.seeds`, 63-bit ones
    folded to vLLM's 32-bit range): a request's n samples come from its seed's generator, so a problem gets the
    same samples whatever else is in the call."""
    from vllm import SamplingParams

    greedy = sampling.temperature <= 0
    return [SamplingParams(n=sampling.n, temperature=0.0 if greedy else sampling.temperature,
                           top_p=1.0 if greedy else sampling.top_p, max_tokens=sampling.max_new_tokens,
                           logprobs=sampling.logprobs or None, seed=seed % (1 << 31),
                           flat_logprobs=True)  # fewer Python objects per token; indexes like a list
            for seed in prompt_seeds(sampling, count)]


def _engine(model: str, opts: Options, dtype: str, trust_remote_code: bool):
    from vllm import LLM

    kwargs = asdict(opts)
    kwargs.pop("data_parallel_size")  # replicas are ours (worker processes), not one engine's
    return LLM(model=model, dtype={"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype),
               trust_remote_code=trust_remote_code, **kwargs)


def _run(llm, prompt_ids: list[list[int]], sampling: SamplingConfig) -> list[list[Completion]]:
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], _sampling_params(sampling, len(prompt_ids)),
                        use_tqdm=False)
    return [[to_completion(o, sampling.logprobs) for o in sorted(r.outputs, key=lambda o: o.index)] for r in outs]


def _replica(gpus: str, model: str, opts: Options, dtype: str, trust_remote_code: bool, conn) -> None:
    """A data-parallel worker process: its own engine on `gpus`, serving (prompt ids, sampling) calls."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus  # before vllm (and CUDA) load in this process
    try:
        llm = _engine(model, opts, dtype, trust_remote_code)
        conn.send(("ready", llm.model_config.max_model_len))
        while (job := conn.recv()) is not None:
            conn.send(("ok", _run(llm, *job)))
    except Exception as e:  # the parent re-raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, options: dict | None = None, dtype: str = "auto", device: str = "auto",
                 batch_size: int = 32, trust_remote_code: bool = False):
        from r1distill.config import from_dict

        if device not in ("auto", "cuda") and not str(device).startswith("cuda"):
            raise ConfigError(f"The vllm backend runs on GPUs; got device={device!r} (use auto, or the hf backend)")
        self.opts = from_dict(Options, dict(options or {}), "backend_options (vllm)")
        self.model_name = model
        self.logprobs_kind = self.opts.logprobs_kind
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)  # renders prompts as hf does
        path = resolve_model(model)
        # batch_size does not apply: vLLM schedules sequences itself (continuous batching).
        if self.opts.data_parallel_size == 1:
            self.llm = _engine(path, self.opts, dtype, trust_remote_code)
            self.context_length = int(self.llm.model_config.max_model_len)
            self._replicas = []
        else:
            self.llm = None
            self._replicas = self._start_replicas(path, dtype, trust_remote_code)

    def _start_replicas(self, path: str, dtype: str, trust_remote_code: bool) -> list:
        import multiprocessing as mp

        import torch

        per = self.opts.tensor_parallel_size * self.opts.pipeline_parallel_size
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        need = per * self.opts.data_parallel_size
        if len(gpus) < need:
            raise ConfigError(f"backend_options: data_parallel_size x tensor_parallel_size x pipeline_parallel_size "
                              f"needs {need} GPUs, {len(gpus)} visible")
        ctx = mp.get_context("spawn")  # CUDA cannot be forked; not daemons: vLLM's own workers are their children
        replicas = []
        for r in range(self.opts.data_parallel_size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_replica, daemon=False,
                               args=(",".join(gpus[r * per:(r + 1) * per]), path, self.opts, dtype, trust_remote_code,
                                     child))
            proc.start()
            replicas.append((proc, parent))
        lengths = [self._receive(conn) for _, conn in replicas]
        self.context_length = int(min(lengths))
        return replicas

    def _receive(self, conn):
        kind, payload = conn.recv()
        if kind == "error":
            self.close()
            raise RuntimeError(f"a vLLM data-parallel replica failed: {payload}")
        return payload

    def close(self) -> None:
        for proc, conn in self._replicas:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        self._replicas = []

    def __del__(self) -> None:
        if getattr(self, "_replicas", None):
            self.close()

    @property
    def tokenizer_fingerprint(self) -> str:
        return fingerprint(self.tokenizer)

    def prompt_lengths(self, prompts: list[list[dict]], think_prefix: bool = False) -> list[int]:
        return [len(render_prompt(self.tokenizer, m, think_prefix)) for m in prompts]

    def _add_spans(self, results: list[list[Completion]]) -> list[list[Completion]]:
        table = token_bytes(self.tokenizer)
        for c in (c for cs in results for c in cs):
            c.token_nbytes, c.token_bytes_ok = spans(c.token_ids, table, c.text)
        return results

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig,
                 progress: Progress | None = None) -> list[list[Completion]]:
        if sampling.logprobs > self.opts.max_logprobs:
            raise ConfigError(f"top-{sampling.logprobs} log-probs exceed vLLM's max_logprobs={self.opts.max_logprobs}: "
                              f"set backend_options.max_logprobs to at least {sampling.logprobs}")
        ids = [render_prompt(self.tokenizer, m, sampling.think_prefix) for m in prompts]
        if not self._replicas:
            results = _run(self.llm, ids, sampling)
            if progress:
                progress(len(prompts) * sampling.n, sum(len(c.token_ids) for cs in results for c in cs))
            return self._add_spans(results)
        parts = split_evenly(len(ids), len(self._replicas))
        seeds = prompt_seeds(sampling, len(ids))
        for (_, conn), part in zip(self._replicas, parts):
            # Each replica gets its prompts' own seeds, so the split does not change any sample.
            conn.send(([ids[i] for i in part], SamplingConfig(**{**asdict(sampling),
                                                                 "seeds": [seeds[i] for i in part]})))
        results = []
        for _, conn in self._replicas:
            got = self._receive(conn)
            if progress:
                progress(len(got) * sampling.n, sum(len(c.token_ids) for cs in got for c in cs))
            results += got
        return self._add_spans(results)
