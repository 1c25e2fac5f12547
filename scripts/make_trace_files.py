"""Write data/traces/: one small trace file per format `import` reads, for the cpu-import recipe and the README.

Each file holds traces of 32 synthetic train problems (192 problems in all, none shared), laid out exactly as the
public set of that format lays out its rows (column names and types from the dataset cards and files:
open-r1/OpenR1-Math-220k, open-thoughts/OpenThoughts-114k, a ShareGPT and an OpenAI-chat file, simplescaling/s1K,
GAIR/LIMO as CSV). The traces stand in for ones a hosted model wrote without log-probs: the synthetic generator's
worked solution, in R1 form for the reasoning formats (`<think>` … `</think>` then the answer). As in a real set,
not every trace is good: every 8th states a wrong answer and every 16th (reasoning formats) is cut off inside its
reasoning, which curate rejects.

    python scripts/make_trace_files.py [--out data/traces]
Deterministic: the same files on every machine.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from r1distill.data import synthetic

PER_FILE = 32
SYSTEM = "Solve the math word problem. Write the calculation, then 'The answer is N.'"
FILES = ("openr1.parquet", "openthoughts.jsonl", "sharegpt.json", "messages.jsonl", "s1k.parquet", "limo.csv")


def _parts(p: dict, i: int) -> tuple[str, str, bool]:
    """(the calculation, the stated answer, whether the trace is cut off) of problem p, the i-th of its file."""
    calc = p["solution"].split("\n####")[0].strip()
    answer = str(int(p["answer"]) + 1) if i % 8 == 7 else p["answer"]  # a wrong one now and then
    return calc, answer, i % 16 == 11


def _r1(calc: str, answer: str, cut: bool) -> str:
    return f"<think>\n{calc}\n" if cut else f"<think>\n{calc}\n</think>\n\nThe answer is {answer}."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/traces")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    problems = synthetic.generate_problems(PER_FILE * len(FILES), "train", "easy", seed=7)
    chunks = {name: problems[k * PER_FILE:(k + 1) * PER_FILE] for k, name in enumerate(FILES)}

    rows = []  # OpenR1-Math-220k: one row per problem, several generations each
    for i, p in enumerate(chunks["openr1.parquet"]):
        calc, answer, cut = _parts(p, i)
        gens = [_r1(calc, answer, cut), _r1(calc, p["answer"], False).replace("The answer is", "So the answer is")]
        rows.append({"problem": p["problem"], "solution": f"{calc} So the answer is $\\boxed{{{p['answer']}}}$.",
                     "answer": p["answer"], "problem_type": "Algebra", "question_type": "math-word-problem",
                     "source": "synthetic", "uuid": f"openr1-{i}", "is_reasoning_complete": [not cut, True],
                     "generations": gens, "correctness_math_verify": [answer == p["answer"] and not cut, True],
                     "correctness_llama": None, "finish_reasons": None,
                     "correctness_count": 1 + (answer == p["answer"]),
                     "messages": [{"role": "user", "content": p["problem"]},
                                  {"role": "assistant", "content": gens[0]}]})
    pq.write_table(pa.Table.from_pylist(rows), out / "openr1.parquet")

    with (out / "openthoughts.jsonl").open("w") as f:  # OpenThoughts / Bespoke-Stratos: system + conversations
        for i, p in enumerate(chunks["openthoughts.jsonl"]):
            calc, answer, cut = _parts(p, i)
            value = (f"<|begin_of_thought|>\n\n{calc}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\nThe answer is "
                     f"{answer}.\n\n<|end_of_solution|>")
            if cut:
                value = f"<|begin_of_thought|>\n\n{calc}\n\n"
            f.write(json.dumps({"system": SYSTEM, "conversations": [{"from": "user", "value": p["problem"]},
                                                                    {"from": "assistant", "value": value}],
                                "ground_truth_solution": f"{calc} The answer is $\\boxed{{{p['answer']}}}$."}) + "\n")

    sharegpt = []
    for i, p in enumerate(chunks["sharegpt.json"]):
        calc, answer, _ = _parts(p, i)
        sharegpt.append({"conversations": [{"from": "system", "value": SYSTEM},
                                           {"from": "human", "value": p["problem"]},
                                           {"from": "gpt", "value": f"{calc}\nThe answer is {answer}."}],
                         "answer": p["answer"]})
    (out / "sharegpt.json").write_text(json.dumps(sharegpt, indent=1) + "\n")

    with (out / "messages.jsonl").open("w") as f:  # OpenAI chat rows
        for i, p in enumerate(chunks["messages.jsonl"]):
            calc, answer, _ = _parts(p, i)
            f.write(json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": p["problem"]},
                                             {"role": "assistant", "content": f"{calc}\nThe answer is {answer}."}],
                                "answer": p["answer"]}) + "\n")

    rows = []  # s1K: question, reference solution, one thinking trajectory and the attempt
    for i, p in enumerate(chunks["s1k.parquet"]):
        calc, answer, _ = _parts(p, i)  # s1K's trajectories are complete
        rows.append({"solution": f"{calc}\n\nThe answer is $\\boxed{{{p['answer']}}}$.", "question": p["problem"],
                     "cot_type": "math", "source_type": "synthetic", "metadata": json.dumps({"id": p["id"]}),
                     "cot": None, "thinking_trajectories": [calc],
                     "attempt": f"The answer is {answer}."})
    pq.write_table(pa.Table.from_pylist(rows), out / "s1k.parquet")

    with (out / "limo.csv").open("w", newline="") as f:  # LIMO's columns, as a CSV
        w = csv.writer(f)
        w.writerow(["question", "solution", "answer"])
        for i, p in enumerate(chunks["limo.csv"]):
            calc, answer, cut = _parts(p, i)
            w.writerow([p["problem"], _r1(calc, answer, cut), p["answer"]])
    print(f"{len(FILES)} files, {PER_FILE} problems each -> {out}")


if __name__ == "__main__":
    main()
