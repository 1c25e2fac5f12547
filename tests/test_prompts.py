"""Teacher prompt vs student prompt: the teacher sees a system line and worked examples, the student trains on the
problem alone (context distillation); eval asks each model with its own prompt and says which."""

from __future__ import annotations

import json

import pytest

from r1distill import eval_config, evaluate, generate
from r1distill.config import ConfigError
from r1distill.data.problems import SourceConfig
from r1distill.data.traces import read_table
from r1distill.models import load_tokenizer
from r1distill.prompts import R1_INSTRUCTION, PromptConfig
from r1distill.train import TrainConfig
from r1distill.train.data import TokenData, prepare_tokens

SYSTEM = "Solve the math word problem. Write the calculation, then 'The answer is N.'"
EXAMPLES = [{"problem": "Ben has 3 bags with 5 apples in each bag. How many apples does Ben have?",
             "response": "3 * 5 = 15\nThe answer is 15."},
            {"problem": "Mia has 7 stickers and gets 6 more. How many stickers does she have now?",
             "response": "7 + 6 = 13\nThe answer is 13."}]
FEW_SHOT = PromptConfig(system=SYSTEM, instruction="", examples=EXAMPLES)


def test_messages_with_and_without_the_examples(tmp_path):
    assert FEW_SHOT.messages("Q?") == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EXAMPLES[0]["problem"]}, {"role": "assistant", "content": EXAMPLES[0]["response"]},
        {"role": "user", "content": EXAMPLES[1]["problem"]}, {"role": "assistant", "content": EXAMPLES[1]["response"]},
        {"role": "user", "content": "Q?"}]
    assert FEW_SHOT.student_messages("Q?") == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Q?"}]
    assert PromptConfig().messages("Q?") == [{"role": "user", "content": f"Q?\n{R1_INSTRUCTION}"}]
    assert FEW_SHOT.describe() == "system line + no instruction + 2 examples"
    f = tmp_path / "shots.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    assert PromptConfig(examples_file=str(f)).examples == EXAMPLES
    f.write_text(json.dumps(EXAMPLES[0]) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"shots.jsonl:2: not JSON"):
        PromptConfig(examples_file=str(f))
    with pytest.raises(ConfigError, match=r"prompt.examples\[0\]: expected \{problem: ..., response: ...\}"):
        PromptConfig(examples=[{"problem": "x"}])


def test_teacher_rows_hold_the_examples_and_the_students_do_not(tmp_path, teacher_dir):
    cfg = generate.GenerateConfig(output_dir=str(tmp_path / "traces"), prompt=FEW_SHOT, num_samples=1,
                                  source=SourceConfig(name="synthetic", num_problems=2), max_new_tokens=12,
                                  temperature=0.0, topk_logprobs=3)
    generate.run(cfg)
    rows = read_table(cfg.out).to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert r["teacher_prompt"] == FEW_SHOT.messages(r["problem"])
        assert r["prompt"] == FEW_SHOT.student_messages(r["problem"])
        assert not any(EXAMPLES[0]["problem"] in m["content"] for m in r["prompt"])
        assert len(r["topk_ids"]) == r["num_tokens"]  # the top-k still describes the completion's tokens
    # What train reads: the student's chat and the teacher's completion, no trace of the examples.
    tok = load_tokenizer(str(teacher_dir))
    tcfg = TrainConfig(input_dir=str(cfg.out), cache_dir=str(tmp_path / "cache"))
    data = TokenData(prepare_tokens(tcfg, tok, need_topk=True, retok=False), max_length=512)
    for i, r in enumerate(rows):
        text = tok.decode(data.row(i)["input_ids"])
        assert "Ben has 3 bags" not in text and "Mia has 7 stickers" not in text and r["problem"] in text
        assert data.row(i)["input_ids"][data.row(i)["prompt_len"]:].tolist() == r["completion_ids"]
    # A different teacher prompt is a different config: the dir refuses to mix the two.
    assert cfg.hash() != generate.GenerateConfig(output_dir=cfg.output_dir).hash()


def test_eval_gives_each_model_its_prompt_and_says_which(tmp_path, teacher_dir, monkeypatch):
    seen: dict[str, list] = {}

    class Recording:
        name = "fake"
        model_name = "fake"

        def __init__(self, model: str):
            self.model = model

        def generate(self, prompts, sampling, progress=None):
            from r1distill.backends import Completion

            seen.setdefault(self.model, []).extend(prompts)
            return [[Completion(text="The answer is 1.", token_ids=[1], finish_reason="stop")] for _ in prompts]

    monkeypatch.setattr(evaluate, "get_backend", lambda backend, model, *a, **k: Recording(model))
    monkeypatch.setattr(eval_config, "check_model", lambda name: name)
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"id": "x", "problem": "What is 0 + 1?", "answer": "1"}) + "\n")
    cfg = evaluate.EvalConfig(run_dir=str(tmp_path), models=["teacher", "other"], temperature=0.0, bootstrap=10,
                              benchmarks=[SourceConfig(path=str(path))], model_prompts={"teacher": FEW_SHOT})
    summary = json.loads((evaluate.run(cfg) / "summary.json").read_text())
    assert seen[cfg.teacher] == [FEW_SHOT.messages("What is 0 + 1?")]
    assert seen["other"] == [PromptConfig().messages("What is 0 + 1?")]
    assert summary["teacher"]["_prompt"] == "system line + no instruction + 2 examples"
    assert summary["other"]["_prompt"] == "R1 instruction"
    with pytest.raises(ConfigError, match="model_prompts names student, not in eval.models"):
        evaluate.EvalConfig(models=["teacher"], model_prompts={"student": FEW_SHOT})
