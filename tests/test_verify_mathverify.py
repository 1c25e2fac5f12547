"""Our verifier on Math-Verify's own test cases: where it agrees with Math-Verify's expectations, where it does not.

Source: github.com/huggingface/Math-Verify at commit 5d148cfaaf99214c2e4ffb4bc497ab042c592a7a (main, 2025-07-02:
release 0.8.0 plus PR #45), files tests/test_all.py, test_boxed.py, test_numina_cases.py, test_open_thoughts.py,
test_strict.py and test_yujianll.py: 269 (gold, prediction, expected) cases, each run as its test runs it
(``compare_strings(gold, pred, match_types=..., precision=...)`` or ``verify(parse(gold), parse(pred))``). Left out:
the 3 cases that set an option we never use (``strict=False``, ``allow_set_relation_comp=False`` twice: we always
compare strictly and always allow set/relation comparison), and the files that compare no answer pairs
(test_configs, test_string_extraction, test_timeout, test_raise_on_error, and test_all's sympy-level test_precision).

Our side: ``verify_answer(pred, gold)`` when the prediction is a completion (prose, a box with other text, several
LaTeX environments; "AZYUK2A" too, the text a number-extraction test reads), ``is_equivalent(pred, gold)`` when
it is a bare answer (one test's matrix, the same malformed string on both sides, counts as bare). A gold that is
a whole solution with no box is first reduced with ``extract_answer`` (4 cases; a boxed one is reduced by
``normalize_answer`` itself). Measured with math-verify 0.9.0 (the installed version):

- Math-Verify as its tests call it meets all 266 expectations;
- our verifier met 248 of the 266 (93.2%) when first compared, 250 (94.0%) once two of the bugs it showed were
  fixed (the last two cases of ``AGREE``); the 18 where it differed are all below, with the reason:
  4 are options of those tests we do not use (LaTeX-only extraction, ``float_rounding=2``), 1 is an expectation
  that records a Math-Verify parse failure (1 - 1/e "equals" 1 + 1/e), 5 follow our documented box rules,
  4 were bugs in our normalisation (2 fixed; 2 left in ``BUGS``, strict xfails: fix verify.py and move them to
  ``AGREE``), and
  4 are open questions (decimal commas in bare answers, a digit inside a word, a function answer with renamed
  variables) where we keep our verdict for now.

``AGREE`` is a sample (one or more cases of each kind of answer those tests exercise) of the 248 where we agree.
"""

from __future__ import annotations

import math

import pytest

from r1distill.verify import is_equivalent, verify_answer

TEXT, ANSWER = "text", "answer"  # graded with verify_answer (a completion) / is_equivalent (a bare answer)


def ours(gold: str, pred: str, entry: str) -> bool:
    return verify_answer(pred, gold).correct if entry == TEXT else is_equivalent(pred, gold)


# (Math-Verify test and case index, gold, prediction, how we grade it, the verdict Math-Verify's test expects)
AGREE = [
    # numbers: thousands separators, decimals, a decimal comma and a currency/unit inside a sentence
    ("test_all::test_number_extraction-1", "7425000", "7,425,000", ANSWER, True),
    ("test_all::test_number_extraction-2", "1000", "1 000", ANSWER, True),
    ("test_all::test_number_extraction-8", "0.4", ".4", ANSWER, True),
    ("test_all::test_number_extraction-7", "2.74", "Soucis : 2,74 $ a..", TEXT, True),
    ("test_all::test_number_extraction-13", "1000.99", "the number is not 10 which is 1,000.99€", TEXT, True),
    ("test_all::test_number_extraction-15", "1000.99", "so the number is 10 which is 1,000.99m²", TEXT, True),
    ("test_all::test_simple_fraction_notation-1", "-10/9", "-\\frac{10}{9}", ANSWER, True),
    ("test_all::test_complex_math_expressions-0", "$\\frac{1}{12}$", "$0.0833333333333333$", ANSWER, True),
    ("test_all::test_float_precision-0", f"{math.sqrt(17):.15f}", "$\\sqrt{17}$", ANSWER, True),
    ("test_all::test_sqrt_precision-0", "$4$", "$4\\sqrt{2}$", ANSWER, False),
    ("test_all::test_math_extraction_additional_cases-23", r" So the answer is: \[ \boxed{32349} \]",
     r"is $\boxed{32,\! 349}$", TEXT, True),
    # LaTeX delimiters, malformed and variant fractions, styling, "k = "
    ("test_all::test_latex_notation-0", "$9$", "Answer \\[ 9 \\]", TEXT, True),
    ("test_all::test_latex_notation-8", "$9$", "Answer $$ \n 9 \n $$", TEXT, True),
    ("test_all::test_latex_notation-9", "$10/9$", "Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", TEXT, True),
    ("test_all::test_latex_notation-10", "$1/3$", "$\\frac13 $", ANSWER, True),
    ("test_all::test_latex_notation-12", "$\\sqrt{3}$", "$\\sqrt3 $", ANSWER, True),
    ("test_all::test_latex_notation-17", "$1/3$", "$\\left( \\frac{1}{3} \\right)$", ANSWER, True),
    ("test_all::test_latex_notation-21", "$1/3$", "$k = \\frac{1}{3}$", ANSWER, True),
    # percentages: "%" is kept and Math-Verify decides (verify.py's percent policy)
    ("test_all::test_percent_notation-0", "$28\\%$", "28 percent", TEXT, True),
    ("test_all::test_percent_notation-2", "$28\\%$", "28 %", ANSWER, True),
    ("test_all::test_percent_notation-5", "$28\\%$", "$\\boxed{28}$ pct", TEXT, True),
    # units: dropped from a number
    ("test_all::test_latex_notation-19", "$1/3$", "$\\frac{1}{3} \\text{meters}$", ANSWER, True),
    ("test_open_thoughts-8", r"$$0.06 \text{ yuan}$$", r"$$\boxed{0.06 \text{ yuan}}$$", TEXT, True),
    ("test_all::test_latex_notation_math-15", "$90^\\circ$",
     "Therefore, \\begin{align*} \\angle BAC &= \\angle BAD + \\angle DAC \\\\ &= 50^\\circ+40^\\circ \\\\ "
     "&= \\boxed{90^\\circ}. \\end{align*}", TEXT, True),
    # text answers: words are case-insensitive, \text{} is presentation
    ("test_numina_cases-14", r"$\text{odd}$", r"$odd$", ANSWER, True),
    ("test_numina_cases-17", r"$d$", r"$\text{E}$", ANSWER, False),
    ("test_all::test_math_extraction_additional_cases-21", r"\(\boxed{\text{C}}\).", r"$\boxed{\text{(C)}}.$",
     TEXT, True),
    ("test_open_thoughts-3", r"$$\text{The midpoints form a regular hexagon}$$",
     r"$$\text{The midpoints form a regular hexagon}$$", ANSWER, True),
    ("test_all::test_math_extraction_additional_cases-4", "$34$", "Final Answer: The largest $n$ is 34.", TEXT, True),
    # sets, intervals, tuples; a relation against an interval
    ("test_all::test_sets_handling-0", "$[0,1)$", "$[0,1)$", ANSWER, True),
    ("test_all::test_sets_handling-3", "$(0,9)$", "$[0,9)$", ANSWER, False),
    ("test_all::test_math_extraction_additional_cases-6", "$(3,1)$", "${1,3}$", ANSWER, False),
    ("test_all::test_math_extraction_additional_cases-7", "$(1,3)$", "${1,3}$", ANSWER, True),
    ("test_numina_cases-3", r"$1\leq|z|\leq \frac{3}{2}$",
     r"$z \in \left[-\frac{3}{2}, -1\right] \cup \left[1, \frac{3}{2}\right]$", ANSWER, True),
    ("test_numina_cases-9", r"$p=5,q=2;p=7,q=2$", r"$(5,2),(7,2)$", ANSWER, True),
    ("test_numina_cases-27", r"$0<f(x)<1$", r"$(0,1)$", ANSWER, True),
    ("test_open_thoughts-2", r"$$-793 < a < 10$$", r"$$(-793, 10)$$", ANSWER, True),
    ("test_all::test_set_rel_assymetry-2", r"$x \in [-2,7]$", r"$-2 \\le x \\le 7$", ANSWER, True),
    ("test_yujianll-10", "$\\pm 2021$", "$2021$", ANSWER, False),
    ("test_yujianll-11", "$\\pm 2021$", "${-2021, 2021}$", ANSWER, True),
    ("test_numina_cases-0", r"$(37,3,3,13),(17,3,3,7),(3,37,3,13),(3,17,3,7),(3,3,2,3)$",
     r"$\boxed{(3, 37, 3, 13), (3, 17, 3, 7), (3, 3, 2, 3), (3,17,3,7), (17,3,3,7), (37,3,3,13)}$", TEXT, True),
    # equations and relations: flipped sides, negated, scaled; "x = 11" against 11; strict function variables
    ("test_all::test_relations_math-0", "$x >= 5$", "Therefore $x \\geq 5$ is the solution.", TEXT, True),
    ("test_all::test_relations_math-5", "$x > 5$", "Therefore $x < 5$ is the solution.", TEXT, False),
    ("test_all::test_relations_math-17", "$x < 1$", "$-x > -1$", ANSWER, True),
    ("test_all::test_relations_math-18", "$x < 1$", "$x > -1$", ANSWER, False),
    ("test_all::test_relations_math-14", "$11$", "$x=11$", ANSWER, True),
    ("test_all::test_relations_math-11", "$7 = 11a+c$", "$11a+c$", ANSWER, False),
    ("test_all::test_relations_math-29", "$x^2/4 + y^2/3 = 1$", "$x^2/16 + y^2/12 = 1/4$", ANSWER, True),
    ("test_all::test_complex_math_expressions-6", "$34x+45y-20z+100=0$", "$-34x-45y+20z-100=0$", ANSWER, True),
    ("test_strict-0", r"$f(x)$", r"$f(y)$", ANSWER, False),
    # matrices: array vs pmatrix, an unevaluated sum, one wrong entry
    ("test_all::test_matrix_extraction-3", "$\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}$",
     "Special matrix: $ \\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right] $", TEXT, True),
    ("test_all::test_matrix_extraction-5", "$\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}$",
     "The sum is $\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}$",
     TEXT, True),
    ("test_all::test_matrix_extraction-7", "$\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}$",
     "The matrix is $\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}$", TEXT, False),
    # symbolic equality
    ("test_all::test_complex_math_expressions-3", "$\\tan^2(y)+1$", "$\\sec^2(y)$", ANSWER, True),
    ("test_all::test_complex_math_expressions-9", "$(a+5)(b+2)$", "$(+5)(b+2)$", ANSWER, False),
    # boxes: several boxes with only "," / "and" / \quad between them are one list; with other text, the last
    ("test_open_thoughts-12", r"$$(2, 2), (6, 2)$$", r"$$\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}$$",
     TEXT, True),
    ("test_open_thoughts-19", r"$${1,2,3}$$", r"\boxed{1},\boxed{2},\boxed{3}", TEXT, True),
    ("test_all::test_math_extraction_additional_cases-27", r"$\boxed{1}\boxed{2}$", r"$\boxed{1,2}$", TEXT, True),
    ("test_numina_cases-13", r"\(\boxed{1}\) and \(\boxed{-2}\).", r"$\boxed{-2,1}$.", TEXT, True),
    ("test_open_thoughts-28", r"\boxed{1} no no no no no \boxed{2}", r"$\boxed{1,2}$", TEXT, False),
    # fixed after this comparison found it (verify.VERSION 2): the list "32, 349" was read as the number 32349, as
    # every space between non-letters was dropped; a space after a comma before a digit is kept now
    ("test_all::test_math_extraction_additional_cases-24", r" So the answer is: \[ \boxed{32349} \]",
     r"is $\boxed{32, 349}$", TEXT, False),
    # fixed likewise: "\ " (a LaTeX space) was kept, and dropping the space after it made "x = -5,\ p = ..." into a
    # bogus command "\p" (reading every "\ " as a space broke matrices: their row break is "\\ ")
    ("test_numina_cases-22", r"\boxed{x = -5,\ p = \frac{14}{3}} ", r"$\boxed{-5, \frac{14}{3}}$", TEXT, True),
]

# Where our verdict is not the one Math-Verify's test expects, and we keep ours (for now): (case, gold, prediction,
# how we grade it, OUR verdict). Math-Verify's expectation is the opposite.
DIFFER = [
    # Options of Math-Verify's tests that we do not use. LaTeX-only extraction: inline math cannot span lines, so
    # that test finds nothing; with Math-Verify's default extraction (LaTeX + expressions) it reads 9, and so do
    # we (the last number). Our answer stands: the 9 is there.
    ("test_all::test_latex_notation-5", "$9$", "Answer $ \n 9 \n $", TEXT, True),
    ("test_all::test_latex_notation-6", "$9$", "Answer \\( \n 9 \n \\)", TEXT, True),
    # ``float_rounding=2``: we grade at Math-Verify's default precision, where 0.33 is not 1/3
    ("test_all::test_complex_math_expressions-7", "$(\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5} \\end{pmatrix})$",
     "$\\begin{pmatrix}0.33\\\\0.2 \\end{pmatrix}$", ANSWER, False),
    ("test_all::test_complex_math_expressions-13", "$(\\frac{3}{5},\\frac{8}{3}]$", "$(0.6,2.6667]$", ANSWER, False),
    # The expectation records a Math-Verify parse failure: it cannot read \mathrm{e}, cuts both sides to "1" and
    # calls 1 - 1/e and 1 + 1/e equal. We are right.
    ("test_yujianll-9", "$1 - \\frac{1}{\\mathrm{e}}$", "$1 + \\frac{1}{\\mathrm{e}}$", ANSWER, False),
    # Our documented box rules (verify.py's docstring and extract_answer): a box beats "the final answer is", even
    # an earlier box; boxes are one list answer only with commas, "and", "or" or spacing between them, and
    # otherwise the last box is the answer. Math-Verify is right on these particular texts; the rules are kept
    # because they are right on the R1-style completions we grade (a box at the end, earlier boxes superseded).
    ("test_all::test_math_extraction_additional_cases-17", "$10455$",
     r"First, let's calculate the interest earned on the first CD after six months. The interest rate is 4% "
     r"compounded semi-annually, so the interest earned is 4% of $10,000 divided by 2 (since it's compounded twice "
     r"a year): $0.04 \cdot 10,000 \cdot \frac{1}{2} = \boxed{200}$ So, after six months, Dr. Zaius has $10,000 + "
     r"$200 = $10,200. Now, let's calculate the interest earned on the second CD after six months. The interest "
     r"rate is 5% compounded semi-annually, so the interest earned is 5% of $10,200 divided by 2: $0.05 \cdot "
     r"10,200 \cdot \frac{1}{2} = \boxed{255}$ So, after six months in the second CD, Dr. Zaius has $10,200 + $255 "
     r"= $10,455. Final Answer: The final answer is $10,455$. I hope it is correct.", TEXT, False),
    ("test_open_thoughts-14", r"$$(3, 3), (1, 1)$$",
     r"$$\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}$$", TEXT, False),
    ("test_open_thoughts-24", r"$y_{1}=-2 x^{2}+4 x+3, y_{2}=3 x^{2}+12 x+10$",
     r"\($y_1 = \boxed{-2(x - 1)^2 + 5} \) and \( y_2 = \boxed{3(x + 2)^2 - 2} \) ", TEXT, False),
    ("test_open_thoughts-27", r"\boxed{1} papers and \boxed{2} bins", r"$\boxed{1,2}$", TEXT, False),  # gold: 2
    ("test_boxed-0", r"$\\boxed{35 cm} ++++++ \\boxed{4}$", r"${35 cm,4}$", ANSWER, False),  # gold: 4
    # Open questions: our verdict is kept for now, but it is not clearly the right one.
    # A decimal comma: our extraction reads "2,5" in prose as 2.5, but a bare answer is read as LaTeX, where
    # Math-Verify itself reads \boxed{1,22} as the set {1, 22} (and plain "1,22" as 1.22). So verify_answer("1000,99",
    # "1000.99") is True while is_equivalent says False, and a gold "1,22" is a list.
    ("test_all::test_number_extraction-5", "1000.99", "1000,99", ANSWER, False),
    ("test_all::test_number_extraction-6", "1,22", "1.22", ANSWER, False),
    # A digit inside a word: our last-number fallback reads the 2 in "AZYUK2A"; Math-Verify wants a number that
    # stands alone. Math-Verify is probably right (only texts with no box or marker reach this rule).
    ("test_all::test_number_extraction-18", "2", "AZYUK2A", TEXT, True),
    # Math-Verify passes this only by accident (it parses both sides to -1: the gold is an unclosed box with
    # doubled backslashes). We keep that gold unreduced, compare W(x) with W(n) strictly (as Math-Verify's strict
    # mode does for f(x) vs f(y)) and do not read the glued "1orW" as a list; each of these alone makes it False.
    ("test_numina_cases-24", r"\\boxed{W(n) = 1 \\text{ and } W(n) = -1", r"W(x)=1orW(x)=-1", ANSWER, False),
]

# Bugs in our normalisation that these cases show: (case, gold, prediction, how we grade it, the RIGHT verdict,
# which is Math-Verify's). Strict xfails: fixing verify.py makes them pass, and then they belong in AGREE.
BUGS = [
    # "y = ..." is stripped like "x = 3" even when the value holds other variables: the equation of a line becomes
    # an expression, and no longer equals 2x+4y-3=0 (also "y = 2x+1" vs "y-2x-1=0")
    ("test_all::test_relations_math-28", "$2x+4y-3=0$", "$y=-\\frac{1}{2}x+\\frac{3}{4}$", ANSWER, True,
     "'y = <expression in x>' is stripped to the expression, losing the equation"),
    # "0,111" matches the thousands pattern and becomes 111; no number is written with a leading "0," group
    ("test_all::test_number_extraction-17", "0,111", "0.111", ANSWER, True, "'0,111' is read as thousands (111)"),
]


@pytest.mark.parametrize(("case", "gold", "pred", "entry", "expected"), AGREE, ids=[c[0] for c in AGREE])
def test_agrees_with_math_verify(case: str, gold: str, pred: str, entry: str, expected: bool) -> None:
    assert ours(gold, pred, entry) is expected


@pytest.mark.parametrize(("case", "gold", "pred", "entry", "verdict"), DIFFER, ids=[c[0] for c in DIFFER])
def test_differs_from_math_verify_on_purpose(case: str, gold: str, pred: str, entry: str, verdict: bool) -> None:
    assert ours(gold, pred, entry) is verdict


@pytest.mark.parametrize(
    ("case", "gold", "pred", "entry", "expected"),
    [pytest.param(*c[:5], marks=pytest.mark.xfail(reason=c[5], strict=True), id=c[0]) for c in BUGS],
)
def test_known_bugs_against_math_verify(case: str, gold: str, pred: str, entry: str, expected: bool) -> None:
    assert ours(gold, pred, entry) is expected


def test_every_disagreement_is_listed() -> None:
    # the docstring's counts: 18 disagreements of 266 cases, each in DIFFER or BUGS exactly once
    cases = [c[0] for c in DIFFER + BUGS + AGREE[-2:]]
    assert len(cases) == len(set(cases)) == 18
    assert not {c[0] for c in DIFFER + BUGS} & {c[0] for c in AGREE}
