"""The openai backend against real servers on loopback: llama-cpp-python's OpenAI-compatible server with the
built-in SmolLM2 GGUF, and a scripted stdlib HTTP server for retries, errors and the API key."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from llama_server import SKIP_REASON, LlamaServer, ServerProcess, available, free_port, gguf_path
from r1distill import curate, evaluate, generate
from r1distill.backends import SamplingConfig, check_options
from r1distill.backends.openai import OpenAIBackend, Options, TokenMap, parse_choice
from r1distill.config import ConfigError, UserError
from r1distill.data.problems import SourceConfig
from r1distill.data.traces import read_table
from r1distill.models import load_tokenizer
from r1distill.prompts import render_prompt
from teacher_forward import completion_logprobs

MODEL = "smollm2-135m-instruct"
# llama-cpp-python's sampler defaults (repeat_penalty 1.1, top_k 40, min_p 0.05) are not the model's distribution.
PLAIN = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}
needs_llama = pytest.mark.skipif(not available(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def tok(teacher_dir):
    return load_tokenizer(str(teacher_dir))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    if not available():
        pytest.skip(SKIP_REASON)
    with LlamaServer(log=tmp_path_factory.mktemp("llama") / "server.log") as s:
        yield s


@pytest.fixture
def server(llama):
    """The module's llama server; a test fails at once, with the server's exit signal and log, if it dies."""
    with llama.watch():
        yield llama


@pytest.fixture(scope="module")
def llama_strings() -> dict[str, list[int]]:
    """What llama.cpp prints for each token id (its own detokenizer): string -> ids."""
    if not available():
        pytest.skip(SKIP_REASON)
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    by: dict[str, list[int]] = {}
    for i in range(llm.n_vocab()):
        by.setdefault(llm.detokenize([i]).decode("utf-8", errors="ignore"), []).append(i)
    return by


def _post(url: str, body: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


# ----------------------------------------------------------------------------------------------------------------
# The real llama.cpp server


@needs_llama
def test_llama_cpp_is_a_portable_build_that_decodes_a_multi_token_chat():
    """The build `make test` installs: no AVX-512/AMX kernels compiled in, and a chat completion (a multi-token
    first batch, where a native build died of SIGILL in a VM advertising AMX) works. In a child process, so that a
    SIGILL fails this test with its signal instead of killing pytest."""
    code = ("import json, llama_cpp\n"
            f"llm = llama_cpp.Llama(model_path={str(gguf_path())!r}, n_ctx=512, n_threads=1, verbose=False)\n"
            "out = llm.create_chat_completion(messages=[{'role': 'user', 'content': 'What is 2+2? Answer briefly.'}],"
            " max_tokens=4, temperature=0.0)\n"
            "print(json.dumps({'info': llama_cpp.llama_print_system_info().decode(), 'usage': out['usage'],"
            " 'text': out['choices'][0]['message']['content']}))\n")
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit {p.returncode} ({_signal_name(p.returncode)}):\n{p.stderr[-3000:]}"
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert "AVX512" not in got["info"] and "AMX" not in got["info"], got["info"]
    assert got["usage"]["prompt_tokens"] > 10 and got["usage"]["completion_tokens"] >= 1 and got["text"], got


def _signal_name(rc: int) -> str:
    return signal.Signals(-rc).name if rc < 0 else "no signal"


@needs_llama
def test_generate_stage_traces_match_the_servers_response(server, tok, llama_strings, tmp_path, teacher_fp32):
    k = 5
    # The backend talks to the server through a recording proxy, so each row can be checked against the exact
    # answer it came from (llama-cpp-python reuses the KV cache of the previous request's prefix, so even greedy
    # answers to a repeated request can differ in near ties).
    with ScriptedAPI([], default={"forward": server.url}) as proxy:
        cfg = generate.GenerateConfig(
            output_dir=str(tmp_path / "traces"), source=SourceConfig(name="synthetic", num_problems=2),
            backend="openai", backend_options={"base_urls": [proxy.url], "extra_body": PLAIN, "concurrency": 2},
            num_samples=1, max_new_tokens=24, temperature=0.0, topk_logprobs=k, shard_size=8)
        generate.run(cfg)
    rows = read_table(cfg.out).to_pylist()
    assert len(rows) == 2 and len(proxy.forwarded) == 2
    unmapped = mapped = 0
    diffs = []
    for r in rows:
        [(req, answer)] = [(q, a) for q, a in proxy.forwarded if q["messages"] == r["prompt"]]
        assert req["top_logprobs"] == k and req["logprobs"] is True
        raw = answer["choices"][0]
        entries = raw["logprobs"]["content"]
        assert r["completion"] == raw["message"]["content"]
        assert r["finish_reason"] == raw["finish_reason"]
        T = len(entries)
        ids = np.array(r["topk_ids"])
        lps = np.array(r["topk_logprobs"], dtype=np.float32)
        stop = r["finish_reason"] == "stop"
        assert r["num_tokens"] == len(r["completion_ids"]) == len(ids) == T + stop
        if stop:  # llama.cpp leaves out the eos step: eos id appended, its top-k unknown
            assert r["completion_ids"][-1] == tok.eos_token_id == 2
            assert (ids[-1] == -1).all() and np.isneginf(lps[-1]).all()
        assert tok.decode(r["completion_ids"], skip_special_tokens=True) == r["completion"]
        for t, e in enumerate(entries):
            assert r["completion_ids"][t] in llama_strings[e["token"]]  # the sampled id prints as the sampled token
            tops = sorted(e["top_logprobs"], key=lambda x: -x["logprob"])[:k]
            for j in range(k):
                if j >= len(tops):  # fewer entries than k: llama.cpp's dict merged equal strings
                    assert ids[t, j] == -1
                    continue
                cands = llama_strings.get(tops[j]["token"], [])
                own = tops[j]["token"] == e["token"] and tops[j]["logprob"] == e["logprob"]
                if len(cands) == 1:
                    assert ids[t, j] == cands[0], (t, j, tops[j])
                elif own and ids[t, j] != -1:  # the sampled token's entry: its id comes from the sampled ids
                    assert ids[t, j] == r["completion_ids"][t]
                else:
                    assert ids[t, j] == -1 and np.isneginf(lps[t, j]), (t, j, tops[j])
                if ids[t, j] != -1:
                    np.testing.assert_allclose(lps[t, j], np.float16(tops[j]["logprob"]), rtol=1e-3, atol=1e-3)
            # temperature 0 without repeat penalty: the sampled token is the most likely one
            if ids[t, 0] != -1:
                assert ids[t, 0] == r["completion_ids"][t]
        unmapped += int((ids == -1).sum())
        mapped += int((ids != -1).sum())
        # Independent of the server: the dequantized model's own log-probs at the stored ids (llama.cpp computes
        # with quantized activations, so about 0.1 apart; a wrong id would be nats apart).
        full = completion_logprobs(teacher_fp32, render_prompt(tok, r["prompt"]), r["completion_ids"])
        ref = full[:T].gather(-1, torch.tensor(ids[:T]).clamp_min(0).long()).numpy()
        diffs.append(np.abs(ref - lps[:T])[ids[:T] != -1])
    d = np.concatenate(diffs)
    assert d.mean() < 0.25 and d.max() < 2.0, (d.mean(), d.max())
    assert mapped > 0.8 * (mapped + unmapped)
    print(f"\nllama.cpp traces: {mapped} top-{k} entries mapped, {unmapped} unmapped; |server - HF| mean "
          f"{d.mean():.3f}, max {d.max():.3f}")


@needs_llama
def test_backend_counts_unmapped_and_samples_n_per_prompt(server, tok):
    b = OpenAIBackend(MODEL, options={"base_urls": [server.url], "extra_body": PLAIN, "concurrency": 4})
    assert b.logprobs_kind == "raw"
    prompts = [[{"role": "user", "content": "Write one short sentence about a cat."}]]
    seen = []
    out = b.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, temperature=1.0, logprobs=4, seed=7),
                     progress=lambda s, t: seen.append((s, t)))
    assert len(out) == 1 and len(out[0]) == 3
    assert b._n_ignored  # llama-cpp-python ignores `n`: one request per sample, each with its own seed
    assert len({tuple(c.token_ids) for c in out[0]}) == 3
    assert [s for s, _ in seen] == [1, 1, 1] and sum(t for _, t in seen) == sum(len(c.token_ids) for c in out[0])
    for c in out[0]:
        assert c.topk_ids.shape == c.topk_logprobs.shape == (len(c.token_ids), 4)
        assert c.unmapped_tokens == int((c.topk_ids == -1).sum())
        assert np.isneginf(c.topk_logprobs[c.topk_ids == -1]).all()
        assert np.isfinite(c.topk_logprobs[c.topk_ids != -1]).all()
    assert b.prompt_lengths(prompts) == [len(render_prompt(tok, prompts[0]))]


@needs_llama
def test_scoring_through_a_server_without_prompt_logprobs_is_a_clear_error(server, tok):
    from r1distill.backends.openai import OpenAIBackend

    b = OpenAIBackend(MODEL, options={"base_urls": [server.url], "extra_body": PLAIN, "max_retries": 0})
    # llama.cpp's server refuses a prompt of token ids (HTTP 500, a validation error): the error says what is needed
    with pytest.raises(UserError, match=r"HTTP 500.*\(scoring given tokens needs a server that takes token ids"):
        b.score([(tok("Hi")["input_ids"], tok(" there")["input_ids"])], 5)


def test_requests_are_spread_over_two_servers(server, tmp_path):
    with LlamaServer(log=tmp_path / "second.log") as second:
        b = OpenAIBackend(MODEL, options={"base_urls": [server.url, second.url + "/"], "concurrency": 2})
        prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in range(3, 9)]
        before = server.log.read_text().count("POST /v1/chat/completions")
        out = b.generate(prompts, SamplingConfig(n=1, max_new_tokens=4, temperature=0.0))
        assert all(len(o) == 1 and o[0].token_ids for o in out)
        first = server.log.read_text().count("POST /v1/chat/completions") - before
        other = second.log.read_text().count("POST /v1/chat/completions")
    assert first + other == 6 and first >= 1 and other >= 1, (first, other)
    assert b.requests_per_url == {server.url: first, second.url: other}


@needs_llama
def test_eval_stage_with_the_openai_backend(server, tmp_path):
    before = server.log.read_text().count("POST /v1/chat/completions")
    cfg = evaluate.EvalConfig(
        run_dir=str(tmp_path), models=["teacher"], teacher=MODEL, backend="openai",
        backend_options={"base_urls": [server.url], "extra_body": PLAIN},
        benchmarks=[SourceConfig(name="synthetic", split="test", level="easy", num_problems=2)],
        num_samples=1, temperature=0.0, max_new_tokens=16, bootstrap=10)
    out = evaluate.run(cfg)
    summary = json.loads((out / "summary.json").read_text())["teacher"]["synthetic-easy"]
    assert summary["problems"] == 2 and summary["samples"] == 2
    rows = [json.loads(x) for x in (out / "teacher" / "synthetic-easy.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["output"] and r["num_tokens"] > 0 for r in rows)
    assert server.log.read_text().count("POST /v1/chat/completions") - before == 2


# ----------------------------------------------------------------------------------------------------------------
# A scripted server: retries, errors, the API key


class ScriptedAPI:
    """A stdlib HTTP server on loopback answering POSTs from a script of steps, then `default` forever.

    A step is {"status": int, "body": dict|str, "headers": {...}, "sleep": seconds before answering}, or
    {"forward": base_url}: pass the request on to a real server and record its answer."""

    def __init__(self, script: list[dict], default: dict | None = None, models: dict | None = None):
        self.script = list(script)
        self.default = default
        self.models = models  # what GET /v1/models answers (None: 404, as a server without the route)
        self.requests: list[dict] = []
        self.forwarded: list[tuple[dict, dict]] = []  # (request body, upstream's answer)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                models = api.models
                if models is None and "forward" in (api.default or {}):  # a proxy shows the real server's list
                    import urllib.request

                    with urllib.request.urlopen(api.default["forward"] + "/models", timeout=30) as r:
                        models = json.load(r)
                payload = json.dumps(models or {"error": "not found"}).encode()
                self.send_response(200 if models and self.path == "/v1/models" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                step = api.script.pop(0) if api.script else api.default
                time.sleep(step.get("sleep", 0))
                data = step.get("body", {})
                if "forward" in step:
                    data = _post(step["forward"] + self.path.removeprefix("/v1"), body)
                    api.forwarded.append((body, data))
                payload = (data if isinstance(data, str) else json.dumps(data)).encode()
                try:
                    self.send_response(step.get("status", 200))
                    for h, v in step.get("headers", {}).items():
                        self.send_header(h, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


WORDS = ["The", " answer", " is", " four", "."]


def ok_body(n_choices: int = 1, logprobs: bool = True) -> dict:
    """A chat completion as OpenAI-compatible servers write it: content, per-token logprobs with top-2."""
    content = [{"token": w, "logprob": -0.5, "bytes": None,
                "top_logprobs": [{"token": w, "logprob": -0.5, "bytes": None},
                                 {"token": " maybe", "logprob": -1.25, "bytes": None}]} for w in WORDS]
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": i, "message": {"role": "assistant", "content": "".join(WORDS)},
                         "logprobs": {"content": content} if logprobs else None, "finish_reason": "stop"}
                        for i in range(n_choices)],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n_choices}}


def _opts(url: str, **kw) -> dict:
    return {"base_urls": [url], "backoff_s": 0.01, "max_retries": 3, **kw}


PROMPT = [[{"role": "user", "content": "What is 2+2?"}]]
SAMPLING = SamplingConfig(n=1, max_new_tokens=8, temperature=0.0, logprobs=2)


def test_retries_429_then_500_then_succeeds(tok):
    with ScriptedAPI([{"status": 429, "headers": {"Retry-After": "1"}, "body": {"error": "slow down"}},
                      {"status": 500, "body": "oops"}], default={"body": ok_body()}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url))
        t0 = time.time()
        [[c]] = b.generate(PROMPT, SAMPLING)
        assert time.time() - t0 >= 1.0  # Retry-After: 1 honoured though backoff_s is 0.01
    assert len(api.requests) == 3
    ids = [tok.convert_tokens_to_ids(tok.tokenize(w)) for w in WORDS]
    assert all(len(i) == 1 for i in ids)
    word_ids = [i[0] for i in ids]
    assert c.token_ids == word_ids + [tok.eos_token_id] and c.finish_reason == "stop"
    assert c.text == "The answer is four."
    maybe = tok.convert_tokens_to_ids(tok.tokenize(" maybe"))[0]
    np.testing.assert_array_equal(c.topk_ids[:5], [[w, maybe] for w in word_ids])
    np.testing.assert_array_equal(c.topk_logprobs[:5], [[-0.5, -1.25]] * 5)
    assert (c.topk_ids[5] == -1).all() and c.unmapped_tokens == 2  # the eos step the server did not report
    body = api.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["model"] == MODEL
    assert body["messages"] == PROMPT[0] and body["max_tokens"] == 8 and body["temperature"] == 0.0


def test_only_errors_give_a_clear_error_after_max_retries():
    with ScriptedAPI([], default={"status": 503, "body": "overloaded"}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url, max_retries=2))
        with pytest.raises(UserError, match=r"kept failing after 3 attempts.*HTTP 503: overloaded") as e:
            b.generate(PROMPT, SAMPLING)
        assert api.url in str(e.value)
    assert len(api.requests) == 3


def test_timeouts_are_retried():
    with ScriptedAPI([{"sleep": 2.0, "body": ok_body()}], default={"body": ok_body()}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url, timeout_s=0.5))
        [[c]] = b.generate(PROMPT, SAMPLING)
        assert c.text == "The answer is four."
    assert len(api.requests) == 2


def test_unreachable_server_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    b = OpenAIBackend(MODEL, options=_opts(url, max_retries=1))
    with pytest.raises(UserError, match=rf"cannot reach {re.escape(url)}: .*2 attempts.*is the server running"):
        b.generate(PROMPT, SAMPLING)


def test_a_server_that_went_away_is_named_as_such():
    with ScriptedAPI([], default={"body": ok_body()}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url, max_retries=1))
        [[c]] = b.generate(PROMPT, SAMPLING)
        assert c.text == "The answer is four."
    # The port is closed now: connection refused, from a URL that answered earlier in this backend's life.
    with pytest.raises(UserError, match=rf"server at {re.escape(api.url)} went away: it answered earlier.*refuses "
                                        r"connections.*2 attempts.*crashed or was stopped") as e:
        b.generate(PROMPT, SAMPLING)
    assert "is the server running" not in str(e.value)


# A stand-in for a llama.cpp server built for the wrong CPU: it serves /v1/models, then dies of SIGILL on the
# first completion request, as a native llama.cpp build does on a CPU that lacks an instruction it was built for.
DYING_SERVER = r"""
import http.server, json, os, signal, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        print("decoding the first batch", flush=True)
        os.kill(os.getpid(), signal.SIGILL)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_server_that_dies_fails_the_test_at_once_with_its_signal_and_log(tmp_path):
    port = free_port()
    srv = ServerProcess([sys.executable, "-X", "faulthandler", "-c", DYING_SERVER, str(port)], port,
                        log=tmp_path / "server.log")
    # Without the watch this takes 5 retries with 2-4-8-16-32 s of backoff and ends in "connection refused".
    b = OpenAIBackend(MODEL, options=_opts(srv.url, max_retries=5, backoff_s=2.0))
    with srv:
        t0 = time.monotonic()
        with pytest.raises(pytest.fail.Exception) as e, srv.watch():
            b.generate(PROMPT, SAMPLING)
        elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert elapsed < 30, elapsed  # not the 62 s of retries; generous for a busy machine
    assert f"server {srv.url} was killed by SIGILL (exit -4)" in msg and "scripts/build_llama_cpp.sh" in msg, msg
    assert "decoding the first batch" in msg and "Fatal Python error: Illegal instruction" in msg, msg
    # A later test that asks for the dead server fails at once too, with the same reason.
    with pytest.raises(pytest.fail.Exception, match="killed by SIGILL"):
        with srv.watch():
            pass


def test_a_server_that_dies_at_start_names_its_exit(tmp_path):
    port = free_port()
    srv = ServerProcess([sys.executable, "-c", "print('no model file'); raise SystemExit(3)"], port,
                        log=tmp_path / "server.log")
    with pytest.raises(RuntimeError, match=r"exited with 3\n.*\nlast lines of .*server.log:\nno model file"):
        srv.start(timeout=30)


def _finishing(reason) -> dict:
    body = ok_body()
    body["choices"][0]["finish_reason"] = reason
    return {"body": body}


def test_only_a_clean_stop_is_kept_and_each_other_finish_is_counted_under_its_reason(tmp_path, teacher_dir):
    # One request per problem, in order (concurrency 1): stop, content_filter, null, DeepSeek's out-of-capacity
    # answer, length. Before, every one of them but "length" was called "stop" (and eos appended).
    reasons = ["stop", "content_filter", None, "insufficient_system_resource", "length"]
    with ScriptedAPI([_finishing(r) for r in reasons]) as api:
        cfg = generate.GenerateConfig(
            output_dir=str(tmp_path / "traces"), source=SourceConfig(name="synthetic", num_problems=5),
            backend="openai", backend_options=_opts(api.url, concurrency=1), num_samples=1, max_new_tokens=8,
            temperature=0.0, topk_logprobs=2, shard_size=8)
        generate.run(cfg)
    rows = read_table(cfg.out).to_pylist()
    got = sorted(r["finish_reason"] for r in rows)
    assert got == sorted(["stop", "content_filter", "unknown", "insufficient_system_resource", "length"]), got
    for r in rows:  # eos is appended to the clean stop only
        assert (r["completion_ids"][-1] == 2) == (r["finish_reason"] == "stop"), r["finish_reason"]
    stats = json.loads((curate.run(curate.CurateConfig(
        input_dir=str(cfg.out), output_dir=str(tmp_path / "curated"), require_correct=False, require_format=False,
        decontaminate=[], max_repeat_ngram_share=None, max_foreign_script_share=None, dedup_completions=False,
    )) / "stats.json").read_text())
    assert stats["kept"] == 1
    steps = {s["step"]: s.get("rejected") for s in stats["funnel"]}
    assert steps == {"generated": None, "duplicate_problem": 0, "unknown_tokens": 0, "finish_content_filter": 1,
                     "finish_insufficient_system_resource": 1, "finish_unknown": 1, "truncated": 1}, steps
    kept = read_table(tmp_path / "curated").to_pylist()
    assert [r["finish_reason"] for r in kept] == ["stop"]


def test_logprobs_kind_auto_reads_the_server():
    with ScriptedAPI([], default={"body": ok_body()}) as api:  # answers no GET: not a server known to give raw
        assert OpenAIBackend(MODEL, options=_opts(api.url)).logprobs_kind == "processed"
        assert OpenAIBackend(MODEL, options=_opts(api.url, logprobs_kind="raw")).logprobs_kind == "raw"
    models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 4096}]}
    with ScriptedAPI([], default={"body": ok_body()}, models=models) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url))
        assert b.logprobs_kind == "raw" and b.context_length == 4096
        assert OpenAIBackend(MODEL, options=_opts(api.url, logprobs_kind="processed")).logprobs_kind == "processed"


def test_client_errors_are_not_retried():
    with ScriptedAPI([], default={"status": 400, "body": {"error": {"message": "top_logprobs too large"}}}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url))
        with pytest.raises(UserError, match="HTTP 400.*top_logprobs too large"):
            b.generate(PROMPT, SAMPLING)
    assert len(api.requests) == 1


def test_api_n_is_used_when_the_server_supports_it():
    with ScriptedAPI([], default={"body": ok_body(n_choices=3, logprobs=False)}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url))
        out = b.generate(PROMPT * 2, SamplingConfig(n=3, max_new_tokens=8, logprobs=0))
    assert len(api.requests) == 2 and all(r["body"]["n"] == 3 for r in api.requests)
    assert [len(o) for o in out] == [3, 3] and not b._n_ignored
    assert "logprobs" not in api.requests[0]["body"]
    # without log-probs the ids are the re-tokenized text (+ eos)
    assert out[0][0].topk_ids is None and out[0][0].token_ids[-1] == 2 and len(out[0][0].token_ids) == 6


def test_api_key_is_sent_but_never_logged_or_saved(tmp_path, monkeypatch, caplog, capsys):
    key = "sk-test-Zq81Secret0042"
    monkeypatch.setenv("R1D_TEST_API_KEY", key)
    caplog.set_level(logging.DEBUG)  # httpx2/httpcore2 debug logs included
    opts = _opts("", api_key_env="R1D_TEST_API_KEY")
    with ScriptedAPI([{"status": 429, "body": "busy"}], default={"body": ok_body()}) as api:
        opts["base_urls"] = [api.url]
        cfg = generate.GenerateConfig(output_dir=str(tmp_path / "traces"), backend="openai", backend_options=opts,
                                      source=SourceConfig(name="synthetic", num_problems=2), num_samples=2,
                                      max_new_tokens=8, topk_logprobs=2)
        generate.run(cfg)
    assert {r["headers"]["Authorization"] for r in api.requests} == {f"Bearer {key}"}
    assert len(api.requests) == 5  # 4 samples (n ignored after the first answer) + 1 retry
    assert read_table(cfg.out).num_rows == 4
    with ScriptedAPI([], default={"status": 401, "body": "bad key"}) as api:
        b = OpenAIBackend(MODEL, options={**opts, "base_urls": [api.url]})
        with pytest.raises(UserError, match=r"HTTP 401 \(check the API key in \$R1D_TEST_API_KEY\)") as e:
            b.generate(PROMPT, SAMPLING)
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, caplog.text, str(e.value), repr(b), repr(b.opts)]
    texts += [p.read_text(errors="ignore") for p in cfg.out.iterdir() if p.suffix in (".yaml", ".json")]
    assert any("retry" in t for t in texts)  # the retry was logged...
    assert all(key not in t for t in texts)  # ...without the key
    assert all(key.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------------------------
# Parsing other servers' formats, and options


def test_vllm_token_ids_and_reasoning_content(tok):
    # vLLM with --return-tokens-as-token-ids and a reasoning parser: exact ids, eos included in the logprobs.
    tmap = TokenMap(tok)
    ids = [504, 3575, 314, 2]
    content = [{"token": f"token_id:{i}", "logprob": -0.1 * n,
                "top_logprobs": [{"token": f"token_id:{i}", "logprob": -0.1 * n},
                                 {"token": "token_id:7", "logprob": -3.0}]} for n, i in enumerate(ids)]
    choice = {"message": {"content": "4", "reasoning_content": "2+2 is 4."}, "finish_reason": "stop",
              "logprobs": {"content": content}}
    c = parse_choice(choice, "chat", 2, tmap)
    assert c.text == "<think>\n2+2 is 4.\n</think>\n\n4"
    assert c.token_ids == ids and c.unmapped_tokens == 0  # the eos was reported: nothing appended
    np.testing.assert_array_equal(c.topk_ids, [[i, 7] for i in ids])
    # /completions format: top-k as {string: logprob}; byte-level vocabulary strings are decoded text
    choice = {"text": " the cat", "finish_reason": "length",
              "logprobs": {"tokens": [" the", " cat"], "token_logprobs": [-0.5, -1.0],
                           "top_logprobs": [{" the": -0.5, " a": -1.5}, {" cat": -1.0, "\u2581dog": -2.0}]}}
    c = parse_choice(choice, "completions", 3, tmap)
    the, a, cat = (tok.convert_tokens_to_ids(tok.tokenize(w))[0] for w in (" the", " a", " cat"))
    assert c.token_ids == [the, cat] and c.finish_reason == "length"
    np.testing.assert_array_equal(c.topk_ids, [[the, a, -1], [cat, -1, -1]])
    assert c.unmapped_tokens == 3  # a missing third entry in each row, and "▁dog", which is not in this vocab


def test_vllm_return_token_ids_give_exact_sampled_ids(tok):
    # return_token_ids: the sampled ids come with the choice, so even an ambiguous " " is exact (and its own
    # top-k entry with it); an alternative " " in another row stays unmapped.
    tmap = TokenMap(tok)
    space, two = tok.convert_tokens_to_ids("Ġ"), tok.convert_tokens_to_ids("2")
    content = [{"token": " ", "logprob": -0.2, "top_logprobs": [{"token": " ", "logprob": -0.2},
                                                                {"token": "2", "logprob": -1.9}]},
               {"token": "2", "logprob": -0.1, "top_logprobs": [{"token": "2", "logprob": -0.1},
                                                                {"token": " ", "logprob": -2.5}]}]
    choice = {"message": {"content": " 2"}, "finish_reason": "length", "token_ids": [space, two],
              "logprobs": {"content": content}}
    c = parse_choice(choice, "chat", 2, tmap)
    assert c.token_ids == [space, two]
    np.testing.assert_array_equal(c.topk_ids, [[space, two], [two, -1]])
    assert c.unmapped_tokens == 1
    # without the ids the sampled " " is confirmed by re-tokenizing the text
    del choice["token_ids"]
    assert parse_choice(choice, "chat", 2, tmap).token_ids == [space, two]


def test_a_wrong_tokenizer_is_warned_about(capsys, tok):
    body = ok_body()
    for e in body["choices"][0]["logprobs"]["content"]:
        for top in [e, *e["top_logprobs"]]:
            top["token"] = "\u2581" + top["token"]  # a sentencepiece vocabulary's spelling: not in SmolLM2's
    with ScriptedAPI([], default={"body": body}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url))
        [[c]] = b.generate(PROMPT, SAMPLING)
    assert c.unmapped_tokens == c.topk_ids.size == 12
    assert c.token_ids == [-1] * 5 + [tok.eos_token_id]
    err = " ".join(capsys.readouterr().err.split())
    assert "most top-k tokens could not be mapped" in err and "5 sampled tokens could not be identified" in err


def test_ambiguous_strings_are_unmapped_unless_resolved(tok):
    tmap = TokenMap(tok)
    space = tok.convert_tokens_to_ids("Ġ")
    assert tmap.lookup(" ") == (-1, False) and tmap.lookup(" ", resolve=True) == (space, False)
    assert tmap.lookup("") == (-1, False)  # special tokens and partial characters: nothing to prefer
    assert tmap.lookup(" answer") == (tok.convert_tokens_to_ids("Ġanswer"), True)
    assert tmap.lookup(None, raw_bytes=list(b" answer")) == (tok.convert_tokens_to_ids("Ġanswer"), True)


def test_options_are_validated_without_a_server():
    o = check_options("openai", {"base_urls": ["http://a:1/v1/", "https://b/v1"], "concurrency": 3})
    assert isinstance(o, Options) and o.base_urls == ["http://a:1/v1", "https://b/v1"]
    with pytest.raises(ConfigError, match="endpoint must be one of chat, completions"):
        check_options("openai", {"endpoint": "responses"})
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        check_options("openai", {"api_key_env": "sk-abc123"})
    with pytest.raises(ConfigError, match="without credentials"):
        check_options("openai", {"base_urls": ["https://user:sk-abc@host/v1"]})
    with pytest.raises(ConfigError) as e:
        check_options("openai", {"base_urls": ["https://user:sk-abc@host/v1"]})
    assert "sk-abc" not in str(e.value) and "***@host" in str(e.value)
    with pytest.raises(ConfigError, match="concurrency must be >= 1"):
        check_options("openai", {"concurrency": 0})
    with pytest.raises(ConfigError, match="Unknown key 'base_url'.*Did you mean 'base_urls'"):
        check_options("openai", {"base_url": "http://a/v1"})


def test_think_prefix_needs_the_completions_endpoint():
    b = OpenAIBackend(MODEL, options={"base_urls": ["http://127.0.0.1:9/v1"]})
    with pytest.raises(ConfigError, match="think_prefix needs backend_options.endpoint: completions"):
        b.generate(PROMPT, SamplingConfig(think_prefix=True))


@needs_llama
def test_completions_endpoint_with_think_prefix(server, tok):
    b = OpenAIBackend(MODEL, options={"base_urls": [server.url], "endpoint": "completions", "extra_body": PLAIN})
    [[c]] = b.generate(PROMPT, SamplingConfig(n=1, max_new_tokens=6, temperature=0.0, logprobs=3, think_prefix=True))
    assert len(c.token_ids) == len(c.topk_ids) and c.topk_ids.shape[1] == 3
    assert (c.topk_ids[:, 0] == np.array(c.token_ids)).sum() >= len(c.token_ids) - 1  # greedy: top-1 is sampled
    assert b.prompt_lengths(PROMPT, think_prefix=True) == [len(render_prompt(tok, PROMPT[0], True))]


def test_a_completion_past_max_new_tokens_is_cut_and_marked_length_with_one_warning(capsys, tok):
    # The server ignores max_tokens: it answers 5 tokens (and a stop) when 3 were asked for.
    with ScriptedAPI([], default={"body": ok_body()}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url))
        three = SamplingConfig(n=1, max_new_tokens=3, temperature=0.0, logprobs=2)
        [[c]] = b.generate(PROMPT, three)
        assert api.requests[0]["body"]["max_tokens"] == 3
        assert c.finish_reason == "length" and c.text == "The answer is"
        assert c.token_ids == [tok.convert_tokens_to_ids(tok.tokenize(w))[0] for w in WORDS[:3]]
        assert c.topk_ids.shape == c.topk_logprobs.shape == (3, 2) and c.unmapped_tokens == 0
        assert len(c.token_logprobs) == 3 and c.token_nbytes.sum() == len(c.text) and c.token_bytes_ok
        # without log-probs the ids are the re-tokenized text, and the text is cut where its 3rd token ends
        [[c2, c3]] = b.generate(PROMPT, SamplingConfig(n=2, max_new_tokens=3, logprobs=0))
        assert c2.text == c3.text == "The answer is" and c2.finish_reason == "length" and len(c2.token_ids) == 3
        # a clean stop within the limit, its eos appended, is kept whole
        [[c4]] = b.generate(PROMPT, SamplingConfig(n=1, max_new_tokens=5, logprobs=2))
        assert c4.finish_reason == "stop" and len(c4.token_ids) == 6
    assert b.cut_completions == 3
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("ignored max_tokens") == 1 and "1 completions (the longest 6 tokens) were cut to 3" in err


def test_an_error_body_that_echoes_the_headers_does_not_show_the_api_key(monkeypatch, caplog):
    key = "sk-test-Zq81Secret0042"
    monkeypatch.setenv("R1D_TEST_API_KEY", key)
    caplog.set_level(logging.DEBUG)
    # 265 characters before the header: a 300-character quote of the body would end inside the key
    echo = "x" * 265 + f"Authorization: Bearer {key}; api_key={key}; other: Bearer abc.DEF-123"
    steps = [{"status": 500, "body": echo},  # retried: logged, then quoted in the final error
             {"status": 400, "body": echo},
             {"status": 200, "body": {"error": {"headers": {"Authorization": f"Bearer {key}"}}}}]
    errors = []
    with ScriptedAPI(steps, default={"status": 500, "body": echo}) as api:
        b = OpenAIBackend(MODEL, options=_opts(api.url, api_key_env="R1D_TEST_API_KEY", max_retries=1))
        for _ in range(3):
            with pytest.raises(UserError) as e:
                b.generate(PROMPT, SAMPLING)
            errors.append(str(e.value))
    assert "HTTP 400" in errors[0] and "answered with an error" in errors[1] and "kept failing" in errors[2]
    for text in [*errors, caplog.text]:
        assert key[:12] not in text and "abc.DEF" not in text
    assert "Bearer ***" in errors[0] and "Bearer ***" in errors[1]
