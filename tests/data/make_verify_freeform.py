"""Build tests/data/verify_freeform.jsonl: gold/prediction pairs for the answer verifier.

Each pair is a real MATH-500 or GSM8K gold answer (or a hand-written one, ``source="hand"``) and a
model-style completion that states an answer in a free-form way (no ``\\boxed{}`` unless the kind is
``boxed*``), with the verdict a careful human grader would give in ``expected``. Near misses (a wrong
number, a close fraction, a flipped interval bracket, the right number only in the reasoning,
thousands separators that change the value, truncated outputs...) are ``expected: false``.

The completions reuse the reasoning of the reference solution (calculator annotations and the final
answer line removed) so that the final statement is preceded by realistic intermediate numbers and
LaTeX. A second, smaller set (verify_freeform_blind.jsonl) was written after the verifier change with new
phrasings and measured without tuning to it. Both files are committed; rerun this script only to
regenerate them on purpose (the main file is unchanged by the blind section, which has its own seed):

    python tests/data/make_verify_freeform.py [BENCHMARKS_DIR] [-o OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BENCH = HERE.parents[2] / "shared" / "benchmarks"
SEED = 20261212


def load(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


# ------------------------------------------------------------------------------------------ reasoning text

def gsm_reasoning(row: dict) -> str:
    """The GSM8K reference solution without its calculator annotations and its "#### N" line."""
    text = re.sub(r"<<[^>]*>>", "", row["solution"])
    return "\n".join(line for line in text.splitlines() if not line.startswith("####")).strip()


def math_reasoning(row: dict, max_chars: int = 700) -> str:
    """The MATH reference solution up to the sentence before its first \\boxed, [asy] blocks removed,
    cut at a paragraph or sentence end with balanced $ signs; '' when nothing clean is left."""
    text = re.sub(r"\[asy\].*?\[/asy\]", "", row["solution"], flags=re.DOTALL)
    box = text.find("\\boxed")
    text = text[:box] if box >= 0 else text
    cut = max(text.rfind("\n"), text.rfind(". "), text.rfind(".$ "))
    text = text[: cut + 1] if cut > 0 else ""
    if len(text) > max_chars:
        para = text.rfind("\n\n", 0, max_chars)
        text = text[:para] if para > 0 else ""
    text = text.strip()
    if text.replace("\\$", "").count("$") % 2 or text.count("\\[") != text.count("\\]"):
        return ""
    if re.search(r"answer|boxed", text, re.IGNORECASE):
        return ""
    return text


def spaced(n: int, sep: str = " ") -> str:
    return f"{n:,}".replace(",", sep)


def near_int(rng: random.Random, g: int) -> int:
    for _ in range(20):
        cand = rng.choice([g + 1, g - 1, g + 10, g * 2, g + 2, g // 10 if g >= 100 else g + 3])
        if cand != g and (cand > 0 or g <= 0):
            return cand
    return g + 7


# ------------------------------------------------------------------------------------------ GSM8K kinds
# Each entry: kind, expected, template with {g} (the number as written in the completion) and {r}
# (the reasoning). "{w}" is a wrong number for the false variants.

GSM_TEMPLATES: list[tuple[str, bool, str]] = [
    ("final_answer_phrase", True, "{r}\nFinal Answer: The total is {g}."),
    ("final_answer_phrase", False, "{r}\nFinal Answer: The total is {w}."),
    ("final_answer_phrase", True, "{r}\n\n**Final Answer:** In total that makes {g}."),
    ("final_answer_phrase", False, "{r}\n\n**Final Answer:** In total that makes {w}."),
    ("answer_is_prose", True, "{r}\nSo the answer is {g}, which is what the question asks for."),
    ("answer_is_prose", False, "{r}\nSo the answer is {w}, which is what the question asks for."),
    ("answer_is_prose", True, "{r}\nThe answer is that there are {g} in all."),
    ("answer_is_prose", False, "{r}\nThe answer is that there are {w} in all."),
    ("currency", True, "{r}\nSo the final amount is ${g}."),
    ("currency", False, "{r}\nSo the final amount is ${w}."),
    ("currency", True, "{r}\nThe answer is \\${g}.00 in total."),
    ("currency", True, "{r}\nThat comes to {g} dollars."),
    ("currency", False, "{r}\nThat comes to {w} dollars."),
    ("units", True, "{r}\nTherefore the result is {g} units."),
    ("units", False, "{r}\nTherefore the result is {w} units."),
    ("latex_inline_number", True, "{r}\nThus the result is $ {g} $."),
    ("latex_inline_number", False, "{r}\nThus the result is $ {w} $."),
    ("plain_last_line", True, "{r}\nSo, {g}."),
    ("plain_last_line", False, "{r}\nSo, {w}."),
    ("reasoning_has_gold_final_wrong", False,
     "{r}\nWait, I made an error above. Recomputing everything carefully gives {w}.\nThe answer is {w}."),
    ("reasoning_wrong_final_right", True,
     "At first I got {w}, but that double counts.\n{r}\nSo the correct answer is {g}."),
    ("think_then_answer", True, "<think>\nMaybe it is {w}? Let me redo it.\n{r}\n</think>\n\nThe answer is {g}."),
    ("think_then_answer", False, "<think>\n{r}\n</think>\n\nI will go with {w}."),
]

GSM_BIG_TEMPLATES: list[tuple[str, bool, str]] = [
    ("spaced_thousands", True, "{r}\nThat comes to about {gs} in total."),
    ("spaced_thousands", False, "{r}\nThat comes to about {ws} in total."),
    ("spaced_thousands", True, "{r}\nFinal answer: {gs}"),
    ("comma_thousands", True, "{r}\nSo the total comes to ${gc}."),
    ("comma_thousands", False, "{r}\nSo the total comes to ${wc}."),
    ("latex_thousands", True, "{r}\nHence the value is $ {gt} $ dollars."),
]


def gsm_pairs(rng: random.Random, gsm: dict[str, dict]) -> list[dict]:
    out = []
    small = [r for r in gsm.values() if re.fullmatch(r"\d+", r["answer"]) and int(r["answer"]) < 1000]
    big = [r for r in gsm.values() if re.fullmatch(r"\d+", r["answer"]) and int(r["answer"]) >= 1000]
    picks = rng.sample(small, 4 * len(GSM_TEMPLATES))
    for i, (kind, expected, tpl) in enumerate(GSM_TEMPLATES * 4):
        row = picks[i]
        g = int(row["answer"])
        w = near_int(rng, g)
        pred = tpl.format(r=gsm_reasoning(row), g=g, w=w)
        out.append({"gold": row["answer"], "pred": pred, "expected": expected, "kind": kind,
                    "source": f"gsm8k:{row['id'].rsplit('/', 1)[-1]}"})
    picks = rng.sample(big, 4 * len(GSM_BIG_TEMPLATES))
    for i, (kind, expected, tpl) in enumerate(GSM_BIG_TEMPLATES * 4):
        row = picks[i]
        g = int(row["answer"])
        w = g + rng.choice([100, 1000, -100, 10])
        pred = tpl.format(r=gsm_reasoning(row), gs=spaced(g), ws=spaced(w), gc=f"{g:,}", wc=f"{w:,}",
                          gt=spaced(g, "\\,"))
        out.append({"gold": row["answer"], "pred": pred, "expected": expected, "kind": kind,
                    "source": f"gsm8k:{row['id'].rsplit('/', 1)[-1]}"})
    # truncated: the reference reasoning cut off before its final line states the result
    for row in rng.sample(small, 10):
        r = gsm_reasoning(row)
        lines = r.splitlines()
        last = lines[-1]
        pos = last.find(row["answer"])
        cut = last[: max(pos - 1, len(last) // 3)] if pos > 0 else last[: len(last) // 2]
        if row["answer"] in cut:
            continue
        pred = "\n".join(lines[:-1] + [cut]).rstrip()
        out.append({"gold": row["answer"], "pred": pred, "expected": False, "kind": "truncated",
                    "source": f"gsm8k:{row['id'].rsplit('/', 1)[-1]}"})
    return out


# ------------------------------------------------------------------------------------------ MATH-500 kinds
# (id, kind, [(final statement, expected), ...]); the gold is the benchmark's answer for that id.

MATH_CASES: list[tuple[str, str, list[tuple[str, bool]]]] = [
    ("test/precalculus/96.json", "latex_assignment", [
        ("so $x = \\frac{7}{4}$", True), ("so $x = \\frac{7}{5}$", False), ("so $x = \\frac{4}{7}$", False)]),
    ("test/algebra/2584.json", "latex_assignment", [
        ("Solving gives $t = \\frac{14}{3}$.", True), ("Solving gives $t = \\frac{14}{5}$.", False)]),
    ("test/algebra/972.json", "latex_assignment", [
        ("Therefore $x=\\frac{11}{2}$ is the value we want.", True),
        ("Therefore $x=\\frac{11}{3}$ is the value we want.", False)]),
    ("test/algebra/2517.json", "latex_assignment", [
        ("which gives $k = -\\frac{35}{9}$.", True), ("which gives $k = \\frac{35}{9}$.", False)]),
    ("test/algebra/291.json", "dfrac_of_them", [
        ("So $\\dfrac{2}{3}$ of them remain.", True), ("So $\\dfrac{3}{4}$ of them remain.", False)]),
    ("test/prealgebra/1356.json", "dfrac_of_them", [
        ("That is $\\dfrac{4}{9}$ of the whole.", True), ("That is $\\dfrac{4}{7}$ of the whole.", False)]),
    ("test/counting_and_probability/1114.json", "dfrac_of_them", [
        ("The probability is $\\dfrac{11}{36}$ of all outcomes.", True),
        ("The probability is $\\dfrac{11}{35}$ of all outcomes.", False)]),
    ("test/prealgebra/1655.json", "dfrac_of_them", [
        ("So $\\frac{17}{50}$ of the students.", True), ("So $\\frac{17}{100}$ of the students.", False)]),
    ("test/counting_and_probability/430.json", "slash_fraction", [
        ("The probability is 1/3.", True), ("The probability is 1/4.", False),
        ("The probability is about 0.33.", False)]),
    ("test/counting_and_probability/803.json", "slash_fraction", [
        ("So the probability equals 1/4.", True), ("So the probability equals 0.25.", True),
        ("So the probability equals 1/8.", False)]),
    ("test/intermediate_algebra/1197.json", "slash_fraction", [
        ("The value is 3/56.", True), ("The value is 3/65.", False)]),
    ("test/precalculus/1146.json", "slash_fraction", [
        ("We conclude it is 35/64.", True), ("We conclude it is 35/46.", False)]),
    ("test/algebra/518.json", "decimal_fraction", [
        ("This gives 0.75.", True), ("This gives 0.7.", False)]),
    ("test/intermediate_algebra/1410.json", "decimal_fraction", [
        ("The ratio is $1.2$.", True), ("The ratio is $1.25$.", False)]),
    ("test/geometry/353.json", "sqrt_shorthand", [
        ("The length is $\\sqrt5$.", True), ("The length is $\\sqrt6$.", False),
        ("The length is $5$.", False)]),
    ("test/intermediate_algebra/1797.json", "sqrt_shorthand", [
        ("so the distance is $2\\sqrt5$ units.", True), ("so the distance is $2\\sqrt3$ units.", False)]),
    ("test/prealgebra/1302.json", "sqrt_shorthand", [
        ("which simplifies to $11 \\sqrt{2}$.", True), ("which simplifies to $11 \\sqrt{3}$.", False)]),
    ("test/geometry/843.json", "sqrt_shorthand", [
        ("The side is $6\\sqrt 2$ cm.", True), ("The side is $6\\sqrt 3$ cm.", False)]),
    ("test/precalculus/1303.json", "sqrt_shorthand", [
        ("Thus the magnitude is $\\sqrt{51}$.", True), ("Thus the magnitude is $\\sqrt{15}$.", False)]),
    ("test/precalculus/697.json", "sqrt_shorthand", [
        ("Hence $\\tan \\theta = -\\sqrt3$.", True), ("Hence $\\tan \\theta = \\sqrt3$.", False)]),
    ("test/intermediate_algebra/558.json", "interval", [
        ("The solution set is $(3, 4]$.", True), ("The solution set is $[3, 4]$.", False),
        ("The solution set is $(3, 4)$.", False)]),
    ("test/intermediate_algebra/183.json", "interval", [
        ("So $x \\in (2, \\infty)$.", True), ("So $x \\in [2, \\infty)$.", False)]),
    ("test/precalculus/695.json", "interval", [
        ("The range is $(-\\infty, 0]$.", True), ("The range is $(-\\infty, 0)$.", False)]),
    ("test/intermediate_algebra/1714.json", "interval", [
        ("The domain is $(5,\\infty)$.", True), ("The domain is $(-5,\\infty)$.", False)]),
    ("test/algebra/2043.json", "interval", [
        ("so the answer is $(-\\infty,2)\\cup(3,\\infty)$.", True),
        ("so the answer is $(-\\infty,2]\\cup[3,\\infty)$.", False)]),
    ("test/algebra/2486.json", "interval", [
        ("The set of values is $\\left(\\frac35, \\frac83\\right]$.", True),
        ("The set of values is $\\left[\\frac35, \\frac83\\right]$.", False)]),
    ("test/intermediate_algebra/1992.json", "interval", [
        ("We need $x \\in (0,9)\\cup(9,36)$.", True), ("We need $x \\in (0,36)$.", False)]),
    ("test/precalculus/920.json", "matrix_inline", [
        ("The matrix is $\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}$.", True),
        ("The matrix is $\\begin{bmatrix} -1 & 0 \\\\ 0 & -1 \\end{bmatrix}$.", True),
        ("The matrix is $\\begin{pmatrix} 1 & 0 \\\\ 0 & -1 \\end{pmatrix}$.", False)]),
    ("test/precalculus/263.json", "matrix_inline", [
        ("so the vector is $\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}$.", True),
        ("so the vector is $\\begin{pmatrix} -2 \\\\ 14 \\\\ -7 \\end{pmatrix}$.", False)]),
    ("test/precalculus/398.json", "matrix_inline", [
        ("Therefore the projection is $\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}$.", True),
        ("Therefore the projection is $\\begin{pmatrix} \\frac{1}{5} \\\\ -\\frac{18}{5} \\end{pmatrix}$.", True),
        ("Therefore the projection is $\\begin{pmatrix} 1/5 \\\\ 18/5 \\end{pmatrix}$.", False)]),
    ("test/precalculus/145.json", "matrix_inline", [
        ("The answer is $\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}$.", True),
        ("The answer is $\\begin{pmatrix} -7 \\\\ 16 \\\\ -5 \\end{pmatrix}$.", False)]),
    ("test/precalculus/807.json", "tuple_inline", [
        ("so the polar coordinates are $(3, \\frac{\\pi}{2})$.", True),
        ("so the polar coordinates are $(3, \\pi)$.", False)]),
    ("test/intermediate_algebra/47.json", "tuple_inline", [
        ("The ordered pair is $(-2, 1)$.", True), ("The ordered pair is $(1, -2)$.", False)]),
    ("test/precalculus/43.json", "tuple_inline", [
        ("We get $(x, y) = (15, -29)$.", True), ("We get $(x, y) = (15, 29)$.", False)]),
    ("test/intermediate_algebra/956.json", "tuple_inline", [
        ("The triple is $(6,31,-1)$.", True), ("The triple is $(6,-1,31)$.", False)]),
    ("test/precalculus/541.json", "tuple_inline", [
        ("The point is $\\left(\\tfrac{3}{2}, -13\\right)$.", True),
        ("The point is $\\left(\\tfrac{2}{3}, -13\\right)$.", False)]),
    ("test/geometry/538.json", "tuple_inline", [
        ("The center is (8, -2).", True), ("The center is (8, 2).", False)]),
    ("test/intermediate_algebra/1388.json", "list_answer", [
        ("The solutions are $x = 1$ and $x = -2$.", True), ("The solutions are $1$ and $2$.", False),
        ("The only solution is $x = 1$.", False)]),
    ("test/intermediate_algebra/428.json", "list_answer", [
        ("so the roots are $3, 5, 7$.", True), ("so the roots are $3, 5$.", False)]),
    ("test/intermediate_algebra/1102.json", "list_answer", [
        ("All solutions: $x=-2$ or $x=1$.", True), ("All solutions: $x=-2$ or $x=-1$.", False)]),
    ("test/precalculus/990.json", "complex", [
        ("Thus $z = 6 - 5i$.", True), ("Thus $z = 6 + 5i$.", False)]),
    ("test/algebra/2264.json", "complex", [
        ("We end up with $1+2i$.", True), ("We end up with $2+i$.", False)]),
    ("test/precalculus/927.json", "degrees", [
        ("So the angle is $90^\\circ$.", True), ("So the angle is $80^\\circ$.", False)]),
    ("test/geometry/183.json", "degrees", [
        ("The measure is 145 degrees.", True), ("The measure is 135 degrees.", False)]),
    ("test/intermediate_algebra/1994.json", "expression", [
        ("Hence the sum equals $p - q$.", True), ("Hence the sum equals $q - p$.", False)]),
    ("test/algebra/2046.json", "expression", [
        ("so the polynomial is $-6 + 3x + x^3$.", True), ("so the polynomial is $x^3-3x-6$.", False)]),
    ("test/intermediate_algebra/431.json", "expression", [
        ("It factors as $(b+2)(a+5)$.", True), ("It factors as $(a+2)(b+5)$.", False)]),
    ("test/precalculus/323.json", "expression", [
        ("The line is $y = 2x + 3$.", True), ("The line is $y = 3x + 2$.", False)]),
    ("test/prealgebra/1423.json", "expression", [
        ("The area is $12\\pi$ square units.", True), ("The area is $24\\pi$ square units.", False)]),
    ("test/prealgebra/1991.json", "text_answer", [
        ("So the answer is Navin.", True), ("So the answer is Evelyn.", False)]),
    ("test/prealgebra/105.json", "text_answer", [
        ("He ends up facing east.", True), ("He ends up facing west.", False)]),
    ("test/precalculus/819.json", "text_answer", [
        ("The answer is (C).", True), ("The answer is (D).", False)]),
    ("test/prealgebra/1558.json", "decimal_comma", [
        ("The total is 1,25 dollars.", True), ("The total is 1,5 dollars.", False)]),
    ("test/prealgebra/2019.json", "decimal_comma", [
        ("So it takes 4,5 hours.", True), ("So it takes 5,4 hours.", False)]),
    ("test/algebra/621.json", "decimal_comma", [
        ("The result is 3,21.", True), ("The result is 3,12.", False)]),
    ("test/prealgebra/1784.json", "decimal_comma", [
        ("The mean is 326,5.", True), ("The mean is 326,0.", False)]),
    ("test/counting_and_probability/508.json", "comma_thousands", [
        ("There are 10,080 arrangements.", True), ("There are 10 080 arrangements.", True),
        ("There are 1,080 arrangements.", False)]),
    ("test/counting_and_probability/737.json", "comma_thousands", [
        ("The answer is 58 500.", True), ("The answer is 58,000.", False)]),
    ("test/algebra/2626.json", "currency", [
        ("She will have $\\$32,348$ at the end.", True), ("She will have $\\$32,384$ at the end.", False)]),
    ("test/algebra/2780.json", "currency", [
        ("The total cost is $18.90.", True), ("The total cost is $19.80.", False)]),
    ("test/prealgebra/1044.json", "units", [
        ("The difference is 5.4 cents.", True), ("The difference is 4.5 cents.", False)]),
    ("test/number_theory/864.json", "base_n", [
        ("In base 8 this is $52_8$.", True), ("In base 8 this is $25_8$.", False)]),
    ("test/algebra/2470.json", "mixed_number", [
        ("The answer is $137\\frac{1}{2}$ miles.", True), ("The answer is $137.5$ miles.", True),
        ("The answer is $135\\frac{1}{2}$ miles.", False)]),
    ("test/intermediate_algebra/662.json", "plus_minus", [
        ("so $x = 1 \\pm \\sqrt{19}$.", True), ("so $x = 1 \\pm \\sqrt{17}$.", False)]),
]

# Boxed completions: the benchmark's own reference solution (must stay correct) and a near miss made by
# replacing the boxed content.
BOXED_IDS = [
    "test/precalculus/807.json", "test/algebra/2584.json", "test/precalculus/1303.json",
    "test/intermediate_algebra/558.json", "test/precalculus/920.json", "test/counting_and_probability/508.json",
    "test/prealgebra/1991.json", "test/algebra/2470.json", "test/precalculus/990.json",
    "test/intermediate_algebra/1388.json", "test/algebra/2043.json", "test/number_theory/864.json",
    "test/geometry/353.json", "test/prealgebra/1044.json", "test/algebra/2626.json",
]
BOXED_WRONG = {
    "test/precalculus/807.json": "\\left( 3, \\pi \\right)",
    "test/algebra/2584.json": "\\frac{14}{5}",
    "test/precalculus/1303.json": "\\sqrt{15}",
    "test/intermediate_algebra/558.json": "[3,4]",
    "test/precalculus/920.json": "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
    "test/counting_and_probability/508.json": "10,\\!800",
    "test/prealgebra/1991.json": "\\text{Evelyn}",
    "test/algebra/2470.json": "137",
    "test/precalculus/990.json": "6 + 5i",
    "test/intermediate_algebra/1388.json": "1",
    "test/algebra/2043.json": "(-\\infty, 2] \\cup [3, \\infty)",
    "test/number_theory/864.json": "25_8",
    "test/geometry/353.json": "5",
    "test/prealgebra/1044.json": "4.5 \\text{ cents}",
    "test/algebra/2626.json": "\\$32,\\!384",
}


def replace_last_box(solution: str, content: str) -> str:
    start = solution.rfind("\\boxed{")
    depth, i = 0, start + len("\\boxed")
    while i < len(solution):
        if solution[i] == "{":
            depth += 1
        elif solution[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    return solution[: start + len("\\boxed{")] + content + solution[i:]


def math_pairs(rng: random.Random, math: dict[str, dict]) -> list[dict]:
    out = []
    for mid, kind, finals in MATH_CASES:
        row = math[mid]
        reasoning = math_reasoning(row)
        for final, expected in finals:
            # about half of them are bare final statements, half follow the reference reasoning
            pred = f"{reasoning}\n\n{final}" if reasoning and rng.random() < 0.5 else final
            out.append({"gold": row["answer"], "pred": pred, "expected": expected, "kind": kind,
                        "source": f"math500:{mid}"})
    for mid in BOXED_IDS:
        row = math[mid]
        out.append({"gold": row["answer"], "pred": row["solution"], "expected": True, "kind": "boxed",
                    "source": f"math500:{mid}"})
        out.append({"gold": row["answer"], "pred": replace_last_box(row["solution"], BOXED_WRONG[mid]),
                    "expected": False, "kind": "boxed", "source": f"math500:{mid}"})
    return out


def gsm_boxed_pairs(rng: random.Random, gsm: dict[str, dict]) -> list[dict]:
    out = []
    for row in rng.sample(sorted(gsm.values(), key=lambda r: r["id"]), 6):
        g = int(row["answer"])
        r = gsm_reasoning(row)
        for expected, value in ((True, g), (False, near_int(rng, g))):
            out.append({"gold": row["answer"], "pred": f"{r}\nThe final answer is $\\boxed{{{value}}}$.",
                        "expected": expected, "kind": "boxed", "source": f"gsm8k:{row['id'].rsplit('/', 1)[-1]}"})
    return out


# ------------------------------------------------------------------------------------------ hand-written
# The issue's own examples and ambiguity traps, with plain-text golds as a dataset might store them.

HAND: list[tuple[str, str, bool, str]] = [
    ("7/4", "so $x = \\frac{7}{4}$", True, "latex_assignment"),
    ("7/4", "so $x = \\frac{7}{3}$", False, "latex_assignment"),
    ("y>=2", "We get $y \\ge 2$.", True, "inequality"),
    ("y>=2", "We get $y \\geq 2$, so that is the condition.", True, "inequality"),
    ("y>=2", "We get $y > 2$.", False, "inequality"),
    ("y>=2", "We get $y \\le 2$.", False, "inequality"),
    ("x<3", "Therefore $x < 3$.", True, "inequality"),
    ("x<3", "Therefore $x \\leq 3$.", False, "inequality"),
    ("52", "Final Answer: The total is 52.", True, "final_answer_phrase"),
    ("52", "Final Answer: The total is 25.", False, "final_answer_phrase"),
    ("2/3", "$\\dfrac{2}{3}$ of them", True, "dfrac_of_them"),
    ("2/3", "$\\dfrac{3}{2}$ of them", False, "dfrac_of_them"),
    ("3500", "There were about 3 500 people.", True, "spaced_thousands"),
    ("3500", "There were about 3 050 people.", False, "spaced_thousands"),
    ("2.5", "The bag weighs 2,5 kg.", True, "decimal_comma"),
    ("25", "The bag weighs 2,5 kg.", False, "decimal_comma"),
    ("2.5", "The bag weighs 25 kg.", False, "decimal_comma"),
    ("0.75", "Il reste 0,75 litre.", True, "decimal_comma"),
    ("1234", "The distance is 1,234 km.", True, "comma_thousands"),
    ("1.234", "The distance is 1,234 km.", False, "comma_thousands"),
    ("1.234", "The distance is 1.234 km.", True, "comma_thousands"),
    ("2.5", "The population grew to 2,500.", False, "comma_thousands"),
    ("12", "The possible values are 1, 2.", False, "comma_list"),
    ("1, 2", "The possible values are 1, 2.", True, "comma_list"),
    ("1, 2", "The possible values are $1$ and $2$.", True, "comma_list"),
    ("[1, 4)", "The solution set is $[1, 4)$.", True, "interval"),
    ("[1, 4)", "The solution set is $[1, 4]$.", False, "interval"),
    ("[1, 4)", "The solution set is $(1, 4)$.", False, "interval"),
    ("\\sqrt{5}", "$\\sqrt5$", True, "sqrt_shorthand"),
    ("\\sqrt{5}", "so the side is $\\sqrt{5}$ cm long", True, "sqrt_shorthand"),
    ("\\sqrt{5}", "$\\sqrt{3}$", False, "sqrt_shorthand"),
    ("(1, 2)", "The point is $(1, 2)$.", True, "tuple_inline"),
    ("(1, 2)", "The point is $(2, 1)$.", False, "tuple_inline"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
     "We find $A = \\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$.", True, "matrix_inline"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
     "We find $A = \\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}$.", False, "matrix_inline"),
    ("18", "The answer is 18 because each of the 9 eggs sells for $2.", True, "answer_is_prose"),
    ("18", "The answer is 9 because she sells 9 eggs and each gives $2, so 18 is wrong.", False,
     "answer_is_prose"),
    ("42", "After simplifying, the answer is: forty-two, i.e. 42.", True, "answer_is_prose"),
    ("18", "She makes $18 every day.", True, "currency"),
    ("18", "She makes €18 every day.", True, "currency"),
    ("18", "She makes $1.80 every day.", False, "currency"),
    ("1", "Step 1: First we find how many eggs are left.", False, "truncated"),
    ("3", "Step 1: 16 - 3 = 13 eggs.\nStep 2: Then 13 -", False, "truncated"),
    ("18", "Let's compute. She sells 16 - 3 - 4 = 9 eggs. Then 9 * 2", False, "truncated"),
    ("20", "We add 12 and 8 to get 20. Then we subtract 5 to get 15.", False, "reasoning_has_gold_final_wrong"),
    ("15", "We add 12 and 8 to get 20. Then we subtract 5 to get 15.", True, "plain_last_line"),
    ("\\frac{1}{3}", "The probability is approximately 0.333.", False, "decimal_fraction"),
    ("\\frac{1}{8}", "The probability is 0.125.", True, "decimal_fraction"),
    ("50", "So 50% of the class passed.", True, "percent"),
    ("50", "So 5% of the class passed.", False, "percent"),
    ("5", "<think>I think it's 5... no wait.</think>\n\nThe answer is 6.", False, "think_then_answer"),
    ("6", "<think>I think it's 5... no wait.</think>\n\nThe answer is 6.", True, "think_then_answer"),
    ("10", "The answer is \\boxed{10}.", True, "boxed"),
    ("10", "I get \\boxed{10} first but then \\boxed{12}.", False, "boxed"),
    ("\\frac{1}{2}", "Hence $\\boxed{\\dfrac12}$.", True, "boxed"),
    ("\\frac{1}{2}", "Hence $\\boxed{\\frac{2}{1}}$.", False, "boxed"),
]


def hand_pairs() -> list[dict]:
    return [{"gold": g, "pred": p, "expected": e, "kind": k, "source": "hand"} for g, p, e, k in HAND]


# ------------------------------------------------------------------------------------------ blind set
# Written after the verifier change and measured once, without tuning to it: new phrasings, other GSM8K rows
# and other MATH-500 answers. Kept in its own file (verify_freeform_blind.jsonl).

BLIND_GSM_TEMPLATES: list[tuple[str, bool, str]] = [
    ("final_answer_phrase", True, "{r}\nThe final answer is {g} apples."),
    ("final_answer_phrase", False, "{r}\nThe final answer is {w} apples."),
    ("answer_colon", True, "{r}\n\nAnswer: {g}"),
    ("answer_colon", False, "{r}\n\nAnswer: {w}"),
    ("bold_last", True, "{r}\n\n**{g}**"),
    ("bold_last", False, "{r}\n\n**{w}**"),
    ("plain_last_line", True, "{r}\nIn conclusion, {g} is the number we were asked for."),
    ("plain_last_line", False, "{r}\nIn conclusion, {w} is the number we were asked for."),
    ("latex_assignment", True, "{r}\nWe find $x = {g}$."),
    ("latex_assignment", False, "{r}\nWe find $x = {w}$."),
    ("latex_text", True, "{r}\n$\\text{{Total}} = {g}$"),
    ("answer_is_then_check", True, "{r}\nThe answer is {g}. Check: {w} - {g} = {d}, so it is consistent."),
    ("answer_is_then_check", False, "{r}\nThe answer is {w}. Check: {w} - {g} = {d}, so it is consistent."),
    ("answer_should_be", True, "{r}\nSo the answer should be {g}."),
    ("currency", True, "{r}\nThus, the total cost is \\$ {g}."),
    ("currency", False, "{r}\nThus, the total cost is \\$ {w}."),
    ("units", True, "{r}\nSo he needs {g} more minutes to reach the goal."),
    ("reasoning_has_gold_final_wrong", False,
     "{r}\nHmm, but the question asks for the amount left after one more week, which is {w}.\n"
     "Final answer: {w}"),
]

BLIND_GSM_BIG_TEMPLATES: list[tuple[str, bool, str]] = [
    ("spaced_thousands", True, "{r}\nIn total: {gn} dollars."),  # no-break space as the separator
    ("spaced_thousands", True, "{r}\nThe answer is {gnn}."),  # narrow no-break space
    ("spaced_thousands", False, "{r}\nThe answer is {wnn}."),
    ("comma_thousands", True, "{r}\nSo the company earns {gc}.00 dollars."),
    ("comma_thousands", False, "{r}\nSo the company earns {wc}.00 dollars."),
]

BLIND_MATH_CASES: list[tuple[str, str, list[tuple[str, bool]]]] = [
    ("test/intermediate_algebra/1063.json", "complex", [
        ("Multiplying out gives $1 + 274i$.", True), ("Multiplying out gives $1 - 274i$.", False)]),
    ("test/precalculus/779.json", "complex", [
        ("The result of the rotation is $-2+7i$.", True), ("The result of the rotation is $2-7i$.", False)]),
    ("test/geometry/826.json", "mixed_number", [
        ("The length is $\\frac{9}{5}$ units.", True), ("The length is 1.8 units.", True),
        ("The length is $1\\frac{5}{4}$ units.", False)]),
    ("test/number_theory/598.json", "scientific", [
        ("The probability is $6.72 \\times 10^{-5}$.", True), ("The probability is 0.000672.", False)]),
    ("test/number_theory/417.json", "comma_thousands", [
        ("The number is 11,111,111,100.", True), ("The number is 11 111 111 100.", True),
        ("The number is 1,111,111,100.", False)]),
    ("test/prealgebra/1003.json", "degrees", [
        ("Each angle measures $\\frac{270}{7}$ degrees.", True),
        ("Each angle measures about $38.57$ degrees.", False)]),
    ("test/algebra/2780.json", "currency", [
        ("So she pays 18.9 dollars.", True), ("So she pays $18.09.", False)]),
    ("test/algebra/101.json", "interval", [
        ("All $x$ with $-2 \\le x \\le 7$ work.", True), ("so $x \\in [-2, 7)$.", False),
        ("so $x \\in [-2, 7]$.", True)]),
    ("test/prealgebra/1924.json", "expression", [
        ("The sum simplifies to $2(k+1)$.", True), ("The sum simplifies to $2k+1$.", False)]),
    ("test/intermediate_algebra/1994.json", "expression", [
        ("Hence it equals $-q + p$.", True), ("Hence it equals $p + q$.", False)]),
    ("test/precalculus/452.json", "text_answer", [
        ("The correct option is (E).", True), ("The correct option is (A).", False)]),
    ("test/precalculus/117.json", "degrees", [
        ("Therefore $\\theta = 30^\\circ$.", True), ("Therefore $\\theta = 60^\\circ$.", False),
        ("The angle is 30°.", True)]),
    ("test/algebra/1519.json", "sqrt_fraction", [
        ("which rationalizes to $\\frac{1}{\\sqrt{3}}$.", True), ("which rationalizes to $\\frac{1}{3}$.", False),
        ("which rationalizes to $\\dfrac{\\sqrt3}{3}$.", True)]),
    ("test/geometry/880.json", "sqrt_shorthand", [
        ("The diagonal is $\\sqrt{452}$.", True), ("The diagonal is $2\\sqrt{131}$.", False)]),
    ("test/precalculus/499.json", "interval", [
        ("The range is $\\left[ \\dfrac{\\pi^2}{8}, \\dfrac{5\\pi^2}{4} \\right]$.", True),
        ("The range is $\\left( \\dfrac{\\pi^2}{8}, \\dfrac{5\\pi^2}{4} \\right]$.", False)]),
    ("test/number_theory/410.json", "decimal", [
        ("As a decimal this is 0.35625.", True), ("As a decimal this is 0.3562.", False)]),
    ("test/intermediate_algebra/2015.json", "list_answer", [
        ("The roots are $-2$, $1+\\sqrt5$ and $1-\\sqrt5$.", True),
        ("The roots are $-2$ and $1+\\sqrt5$.", False)]),
    ("test/precalculus/356.json", "expression", [
        ("The line is given by \\(y = -2x\\).", True), ("The line is given by \\(y = 2x\\).", False)]),
    ("test/intermediate_algebra/1123.json", "display_math", [
        ("Therefore\n\\[ S = \\frac{10}{11}. \\]", True), ("Therefore\n\\[ S = \\frac{11}{10}. \\]", False)]),
    ("test/counting_and_probability/377.json", "display_math", [
        ("The probability is\n$$\\frac{448}{15625}$$", True), ("The probability is\n$$\\frac{448}{15624}$$", False)]),
    ("test/algebra/1078.json", "interval", [
        ("The solution is the open interval $(-\\sqrt3, \\sqrt3)$.", True),
        ("The solution is the interval $[-\\sqrt3, \\sqrt3]$.", False)]),
    ("test/intermediate_algebra/1981.json", "interval", [
        ("So $x\\in(2,12)\\cup(12,102)$.", True), ("So $x\\in(2,102)$.", False)]),
    ("test/intermediate_algebra/690.json", "tuple_inline", [
        ("The ordered quadruple is $(1, -16, -4, 43)$.", True),
        ("The ordered quadruple is $(1, 16, -4, 43)$.", False)]),
    ("test/precalculus/625.json", "matrix_inline", [
        ("The projection is $\\begin{pmatrix} \\frac{16}{49} \\\\ \\frac{48}{49} \\\\ \\frac{24}{49} \\end{pmatrix}$.",
         True),
        ("The projection is $\\begin{pmatrix} \\frac{16}{49} \\\\ \\frac{24}{49} \\\\ \\frac{48}{49} \\end{pmatrix}$.",
         False)]),
    ("test/precalculus/881.json", "matrix_inline", [
        ("so $\\mathbf{v} = \\begin{pmatrix} -18 \\\\ -49 \\\\ 96 \\end{pmatrix}.$", True),
        ("so $\\mathbf{v} = \\begin{pmatrix} -18 \\\\ -49 \\\\ 69 \\end{pmatrix}.$", False)]),
    ("test/precalculus/807.json", "tuple_inline", [
        ("$(r, \\theta) = \\left(3, \\frac{\\pi}{2}\\right)$", True),
        ("$(r, \\theta) = \\left(\\frac{\\pi}{2}, 3\\right)$", False)]),
]

BLIND_HAND: list[tuple[str, str, bool, str]] = [
    ("3.14", "That gives roughly 3,14 as the ratio.", True, "decimal_comma"),
    ("314", "That gives roughly 3,14 as the ratio.", False, "decimal_comma"),
    ("2.5", "Il faut payer 2,50 € en tout.", True, "decimal_comma"),
    ("1000", "She saved 1 000 dollars.", True, "spaced_thousands"),
    ("1000", "She saved 100 dollars.", False, "spaced_thousands"),
    ("4", "The answer is 4 or 5, depending on how you count.", False, "hedge"),
    ("7", "It's definitely not 7; the answer is 8.", False, "answer_is_prose"),
    ("8", "It's definitely not 7; the answer is 8.", True, "answer_is_prose"),
    ("-3", "Solving, x = \u22123.", True, "unicode_minus"),
    ("0.25", "The probability is 25%.", True, "percent"),
    ("6", "The answer is six.", True, "number_word"),
    ("\\frac{1}{3}", "So the probability is 1/3 \u2248 0.333.", True, "slash_fraction"),
    ("\\frac{1}{3}", "So the probability is about 0.3333.", False, "decimal_fraction"),
    ("x \\le -1", "so $x\\leq -1$", True, "inequality"),
    ("x \\le -1", "so $x<-1$", False, "inequality"),
    ("(2,\\infty)", "This holds exactly when $x > 2$.", True, "interval_as_inequality"),
    ("x=5", "\\boxed{x = 5}", True, "boxed"),
    ("\\frac{7}{4}", "Thus $\\boxed{\\frac74}$ is the answer.", True, "boxed"),
    ("\\frac{7}{4}", "Thus $\\boxed{\\frac47}$ is the answer.", False, "boxed"),
    ("12", "We get \\boxed{12} apples in total, not 13.", True, "boxed"),
    ("35", "First 7 * 5 = 35. But she ate 5, so 35 - 5 =", False, "truncated"),
    ("120", "The answer is 12", False, "truncated"),
    ("1.5", "It took 1,500 seconds.", False, "comma_thousands"),
    ("1500", "It took 1,500 seconds.", True, "comma_thousands"),
    ("10", "Let me think step by step.\n1. Count the boxes: there are 4.\n2. Each holds 2", False, "truncated"),
]


def blind_pairs(gsm: dict[str, dict], math: dict[str, dict], used: set[str]) -> list[dict]:
    rng = random.Random(SEED + 1)
    out = []
    free = sorted((r for r in gsm.values() if r["id"].rsplit("/", 1)[-1] not in used), key=lambda r: r["id"])
    small = [r for r in free if re.fullmatch(r"\d+", r["answer"]) and 10 <= int(r["answer"]) < 1000]
    big = [r for r in free if re.fullmatch(r"\d+", r["answer"]) and int(r["answer"]) >= 1000]
    picks = rng.sample(small, 2 * len(BLIND_GSM_TEMPLATES))
    for i, (kind, expected, tpl) in enumerate(BLIND_GSM_TEMPLATES * 2):
        row = picks[i]
        g = int(row["answer"])
        w = g + rng.choice([1, 2, 10, 11])
        pred = tpl.format(r=gsm_reasoning(row), g=g, w=w, d=w - g)
        out.append({"gold": row["answer"], "pred": pred, "expected": expected, "kind": kind,
                    "source": f"gsm8k:{row['id'].rsplit('/', 1)[-1]}"})
    picks = rng.sample(big, 2 * len(BLIND_GSM_BIG_TEMPLATES))
    for i, (kind, expected, tpl) in enumerate(BLIND_GSM_BIG_TEMPLATES * 2):
        row = picks[i]
        g = int(row["answer"])
        w = g + rng.choice([100, 1000, 10])
        pred = tpl.format(r=gsm_reasoning(row), gn=spaced(g, "\u00a0"), gnn=spaced(g, "\u202f"),
                          wnn=spaced(w, "\u202f"), gc=f"{g:,}", wc=f"{w:,}")
        out.append({"gold": row["answer"], "pred": pred, "expected": expected, "kind": kind,
                    "source": f"gsm8k:{row['id'].rsplit('/', 1)[-1]}"})
    for mid, kind, finals in BLIND_MATH_CASES:
        row = math[mid]
        reasoning = math_reasoning(row)
        for final, expected in finals:
            pred = f"{reasoning}\n\n{final}" if reasoning and rng.random() < 0.5 else final
            out.append({"gold": row["answer"], "pred": pred, "expected": expected, "kind": kind,
                        "source": f"math500:{mid}"})
    out += [{"gold": g, "pred": p, "expected": e, "kind": k, "source": "hand"} for g, p, e, k in BLIND_HAND]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", nargs="?", type=Path, default=DEFAULT_BENCH)
    ap.add_argument("-o", "--out", type=Path, default=HERE / "verify_freeform.jsonl")
    ap.add_argument("--blind-out", type=Path, default=HERE / "verify_freeform_blind.jsonl")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    gsm, math = load(args.bench / "gsm8k_test.jsonl"), load(args.bench / "math500_test.jsonl")
    pairs = gsm_pairs(rng, gsm) + math_pairs(rng, math) + gsm_boxed_pairs(rng, gsm) + hand_pairs()
    used = {p["source"].split(":", 1)[1] for p in pairs if p["source"].startswith("gsm8k:")}
    for out, rows in ((args.out, pairs), (args.blind_out, blind_pairs(gsm, math, used))):
        with out.open("w") as f:
            for p in rows:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        n_true = sum(p["expected"] for p in rows)
        print(f"{len(rows)} pairs ({n_true} true, {len(rows) - n_true} false) -> {out}")


if __name__ == "__main__":
    main()
