"""The hf backend: raw top-k whatever the checkpoint's generation_config asks for, the user's sampling settings and
nothing else, and per-(prompt, sample) seeds (SeededSampler's draws against the softmax they should follow)."""

from __future__ import annotations

import json

import pytest
import torch

from r1distill.backends import SamplingConfig, derive_seed
from r1distill.backends.hf import HFBackend, SeededSampler
from r1distill.models import derive_student, load_model
from r1distill.prompts import render_prompt

PROMPTS = [[{"role": "user", "content": "What is 6 times 7?"}], [{"role": "user", "content": "Name a prime."}]]


@pytest.fixture(scope="module")
def penalised_dir(tmp_path_factory, teacher_dir):
    """A 2-layer student of the built-in teacher whose generation_config.json asks for repetition_penalty 1.3 and
    no_repeat_ngram_size 3 (an untrained student repeats itself, so both change its greedy output)."""
    out = tmp_path_factory.mktemp("penalised") / "model"
    derive_student(str(teacher_dir), out, layers=[0, 29])
    path = out / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    cfg.update({"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "do_sample": True, "top_k": 5})
    path.write_text(json.dumps(cfg))
    return out


def _forward_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log_softmax of a plain forward pass at the positions that predicted each completion token: (T, V)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float()
    return torch.log_softmax(logits, -1)[len(prompt) - 1:len(prompt) - 1 + len(completion)]


def test_stored_topk_is_raw_despite_the_checkpoints_processors(penalised_dir):
    backend = HFBackend(str(penalised_dir), dtype="float32", device="cpu", batch_size=4)
    gc = backend.model.generation_config
    assert gc.repetition_penalty == 1.3 and gc.no_repeat_ngram_size == 3  # the fixture really asks for them
    model = load_model(str(penalised_dir), dtype="float32", device="cpu")
    outs = backend.generate(PROMPTS, SamplingConfig(n=1, max_new_tokens=24, temperature=0.0, logprobs=5))
    for messages, [c] in zip(PROMPTS, outs):
        prompt = render_prompt(backend.tokenizer, messages)
        lp = _forward_logprobs(model, prompt, c.token_ids)
        ids = torch.from_numpy(c.topk_ids).long()
        torch.testing.assert_close(torch.from_numpy(c.topk_logprobs), lp.gather(-1, ids), atol=1e-3, rtol=0)
        assert torch.equal(ids, lp.topk(5, -1).indices)  # the raw top-5, in order
        # Greedy follows the raw distribution (the user's setting), not the penalised one.
        assert c.token_ids == lp.argmax(-1).tolist()
    # The checkpoint's own settings would have changed the output: transformers' generate applies them.
    prompt = torch.tensor([render_prompt(backend.tokenizer, PROMPTS[0])])
    with torch.no_grad():
        penalised = model.generate(prompt, max_new_tokens=24, do_sample=False)[0, prompt.shape[1]:].tolist()
    assert penalised != outs[0][0].token_ids[:len(penalised)], "the fixture's penalties change nothing: a weak test"
    assert backend.model.generation_config.repetition_penalty == 1.3  # restored after generate


def test_sampling_follows_the_users_settings_and_seeds(penalised_dir):
    backend = HFBackend(str(penalised_dir), dtype="float32", device="cpu", batch_size=8)
    greedy = backend.generate(PROMPTS, SamplingConfig(n=1, max_new_tokens=16, temperature=0.0))
    # top_p this small keeps only the most likely token: sampling becomes greedy (no top_k 5 from the checkpoint,
    # no penalty).
    narrow = backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=16, temperature=1.0, top_p=1e-6))
    for [g], samples in zip(greedy, narrow):
        assert all(s.token_ids == g.token_ids for s in samples)
    wide = SamplingConfig(n=2, max_new_tokens=16, temperature=1.0, top_p=1.0, seeds=[11, 12])
    a = backend.generate(PROMPTS, wide)
    b = backend.generate(PROMPTS, wide)
    assert [[c.token_ids for c in cs] for cs in a] == [[c.token_ids for c in cs] for cs in b]  # reproducible
    assert a[0][0].token_ids != a[0][1].token_ids  # a stream per sample
    other = backend.generate(PROMPTS, SamplingConfig(**{**wide.__dict__, "seeds": [13, 14]}))
    assert other[0][0].token_ids != a[0][0].token_ids
    # A prompt's samples depend on its own seed, not on its batch mates.
    alone = backend.generate(PROMPTS[:1], SamplingConfig(**{**wide.__dict__, "seeds": [11]}))
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in a[0]]


def test_seeded_sampler_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]])
    want = torch.softmax(logits, -1)[0]
    n = 20_000
    seeds = [derive_seed("sampler-test", i) for i in range(n)]
    sampler = SeededSampler(seeds, torch.device("cpu"))
    picks = sampler(torch.zeros(n, 1, dtype=torch.long), logits.expand(n, -1).clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=5).float() / n
    # 4 standard errors of a binomial share at n = 20,000 is at most 0.014
    assert torch.allclose(freq, want, atol=0.014), (freq, want)
    assert freq[4] == 0  # a filtered (-inf) token is never drawn
    again = SeededSampler(seeds[:3], torch.device("cpu"))(torch.zeros(3, 1, dtype=torch.long), logits.expand(3, -1))
    assert torch.equal(again.argmax(-1), picks[:3])  # the same seeds, the same draws


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "gsm8k", "q1") == derive_seed(0, "gsm8k", "q1")
    assert len({derive_seed(0, "gsm8k", f"q{i}") for i in range(1000)}) == 1000
    assert 0 <= derive_seed("x") < 1 << 63
    assert derive_seed(0, "a", "bc") != derive_seed(0, "ab", "c")



def test_shared_prefix_length():
    from r1distill.backends.hf import MIN_SHARED_PREFIX, shared_prefix

    base = list(range(100, 100 + MIN_SHARED_PREFIX + 4))
    assert shared_prefix([base + [1, 2], base + [1, 3], base + [7]]) == len(base)
    assert shared_prefix([base, base]) == len(base) - 1  # each row keeps one token of its own
    assert shared_prefix([base]) == 0  # a single row: nothing to share
    assert shared_prefix([base[:MIN_SHARED_PREFIX - 1] + [1], base[:MIN_SHARED_PREFIX - 1] + [2]]) == 0  # too short


def test_a_shared_prefix_changes_nothing_but_the_cost(penalised_dir):
    """Few-shot prompts (a long common prefix) and several samples each: computing the prefix once gives the same
    tokens and the same top-k log-probs as the plain batch."""
    from r1distill.prompts import PromptConfig

    shots = [{"problem": f"Tom has {a} apples and gets {b} more. How many apples?", "response": f"{a} + {b} = {a + b}"}
             for a, b in ((3, 4), (5, 6))]
    prompt = PromptConfig(system="Solve it.", instruction="", examples=shots)
    messages = [prompt.messages(q) for q in ("What is 6 times 7?", "Anna has 9 pens and gives 2 away. How many?",
                                             "What is 12 minus 5?")]
    backend = HFBackend(str(penalised_dir), dtype="float32", device="cpu", batch_size=6)
    encoded = [render_prompt(backend.tokenizer, m) for m in messages]
    from r1distill.backends.hf import shared_prefix

    assert shared_prefix(encoded) > 40  # the test exercises a real shared prefix
    for sampling in (SamplingConfig(n=1, max_new_tokens=12, temperature=0.0, logprobs=5),
                     SamplingConfig(n=2, max_new_tokens=12, temperature=0.8, logprobs=5, seeds=[1, 2, 3])):
        runs = {}
        for share in (False, True):
            backend.share_prefix = share
            runs[share] = backend.generate(messages, sampling)
        for plain, shared in zip(runs[False], runs[True]):
            for a, b in zip(plain, shared):
                assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
                assert (a.topk_ids == b.topk_ids).all()
                torch.testing.assert_close(torch.from_numpy(b.topk_logprobs), torch.from_numpy(a.topk_logprobs),
                                           atol=1e-4, rtol=0)


def test_top_p_warper_keeps_what_transformers_keeps():
    # random float32 logits: no ties at the cut, so both keep the same set (with ties either may pick)
    from transformers import TopPLogitsWarper

    from r1distill.backends.hf import TopPWarper

    gen = torch.Generator().manual_seed(0)
    for scale in (12.0, 4.0, 0.5):  # peaked (the K largest hold top_p), medium, flat (the whole-vocabulary path)
        for top_p in (0.5, 0.9, 0.95, 0.999):
            x = torch.randn(8, 5000, generator=gen) * scale
            want = torch.isinf(TopPLogitsWarper(top_p)(None, x.clone()))
            got = TopPWarper(top_p, k=64)(None, x.clone())
            assert torch.equal(torch.isinf(got), want), (scale, top_p)
            assert torch.equal(got[~want], x[~want])  # the kept logits pass unchanged
    # One dominant token: it alone holds top_p, and it is kept (never an empty nucleus).
    x = torch.zeros(2, 100)
    x[:, 7] = 50.0
    kept = ~torch.isinf(TopPWarper(0.9, k=4)(None, x))
    assert kept.sum(-1).tolist() == [1, 1] and kept[:, 7].all()
