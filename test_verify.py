# Tests for verify.py and the reader it uses (latex.py, parse.py). References are known-equivalent
# and known-different answers written by hand, never the code's own output.
# Run: python -m pytest test_verify.py -q
import builtins
import json
import os
import re
import subprocess
import sys
import time

import pytest
import sympy

import latex
import parse
import verify
from verify import answer_in_block, find_final_answer, is_equivalent, validate_gold

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------- equivalence
EQUIVALENT = [  # (prediction, gold) per answer kind of the toy world
    ("391", "391"), ("-17", "-17"), ("+391", "391"), ("391.", "391"), ("391。", "391"),
    ("3.0", "3"), ("2*3 + 1", "7"), ("(10-3)^2", "49"), ("$391$", "391"),
    ("x = 5", "x = 5"), ("x=5", "x = 5"), ("5", "x = 5"), ("x = 5", "5"), ("5 = x", "x = 5"),
    ("x = -1.5", "x = -3/2"), ("-\\frac{3}{2}", "x = -3/2"), ("x = \\frac{10}{2}", "x = 5"),
    ("x^2 + 5x + 6", "x^2 + 5x + 6"), ("(x+2)(x+3)", "x^2 + 5x + 6"), ("(x+1)^2", "x^2+2x+1"),
    ("x**2 + 2*x + 1", "x^2 + 2x + 1"), ("6 + 5x + x^{2}", "x^2 + 5x + 6"),
    ("(x-2)(x+2)", "x^2 - 4"), ("2x^2 - 16x - 18", "2(x-9)(x+1)"), ("x \\cdot x - 4", "x^2 - 4"),
    ("0.5x^2", "x^2/2"), ("(x^2-1)/(x-1)", "x + 1"),
    ("7/12", "7/12"), ("14/24", "7/12"), ("\\frac{7}{12}", "7/12"), ("\\dfrac{14}{24}", "7/12"),
    ("0.5", "1/2"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "0.5"), ("2^-1", "1/2"),
    ("0.333333333", "1/3"), ("13/12", "1 + 1/12"),
    ("\\sqrt{8}", "2\\sqrt{2}"), ("\\frac{\\sqrt{2}}{2}", "1/\\sqrt{2}"), ("8^{1/3}", "2"),
    ("(2, 1)", "(2,1)"), ("x = 3 or x = 2", "x = 2, x = 3"), ("{3, 2}", "x = 2 or x = 3"),
    # the Chinese keyboard: full-width comma, brackets and 或 ("or"); answers stay math
    ("x = 2 或 x = 3", "x = 3, x = 2"), ("（2，1）", "(2, 1)"), ("x = 5。", "x = 5"),
    ("3 or 3", "3"),  # repeating one value is not a hedge
    (".5x", "x/2"), ("x = .5", "1/2"), ("(1/2, 3)", "(0.5, 3)"), ("(2x, 1)", "(x + x, 1)"),
    ("2^33", "8589934592"), ("4^500", "2^1000"),
    # relative 1e-6 for numbers written with a point: 0.333333 is 1/3 to the last digit allowed
    ("0.333333", "1/3"), ("1.0000009", "1"), ("1000000.5", "1000000"),
    ("1.414213562", "\\sqrt{2}"), ("314.159265", "100\\pi"),
    ("(121x^2 - 49)/(11x - 7)", "11x + 7"),  # 0/0 at the point differs_somewhere tries (x = 7/11)
    ("(x^2 - 2)/(x - \\sqrt{2})", "x + \\sqrt{2}"),  # cancel cannot show it; simplify can
    ("((x+1)^2, 3)", "(x^2 + 2x + 1, 3)"),  # a tuple whose first member is bracketed
]
NOT_EQUIVALENT = [
    ("392", "391"), ("-391", "391"), ("17", "-17"), ("x = 6", "x = 5"), ("y = 5", "x = 5"),
    ("x = -5", "x = 5"), ("x^2 + 5x + 7", "x^2 + 5x + 6"), ("(x+2)(x-3)", "x^2 + 5x + 6"),
    ("x^2 + 2x", "x^2 + 2x + 1"), ("y^2 + 5y + 6", "x^2 + 5x + 6"), ("x^2 - 4", "x^2 + 4"),
    ("0.333", "1/3"), ("0.33333", "1/3"), ("7/13", "7/12"), ("12/7", "7/12"), ("0.58", "7/12"),
    ("(2,1)", "(1,2)"), ("(2, 1, 0)", "(2, 1)"), ("3 or 4", "3"), ("3, 4", "3"), ("3或4", "3"),
    ("x = 3 or x = 4", "x = 3"), ("x = 2, x = 3, x = 4", "x = 2, x = 3"), ("x = 2", "x = 2, x = 3"),
    ("2 3", "23"), ("1, 000", "1000"), ("0.333333333x", "x/3"), ("\\sqrt{2}", "1.41"),
    ("1.0000015", "1"), ("1000002", "1000000.5"), ("0.0000005", "0.0000006"), ("3.14", "\\pi"),
    ("(1/2, 3)", "(0.5, 4)"), ("3.1415974", "\\pi"),  # pi to 1.5e-6 relative: outside 1e-6
    ("x = 2 or x = 4", "x = 2, x = 3"),  # as many roots as the gold, one of them wrong
    ("(x+1)^2, 5", "x^2 + 2x + 1, (x+1)^2"),  # one predicted root cannot match two gold ones
    ("1/(11x - 7) + 1", "1/(11x - 7)"),  # a pole at the point differs_somewhere tries: no proof
    ("11x^2 - 7x + 5", "5"), ("(11x - 7)(13y - 10) + 1", "1"),  # equal at that point, only there
]


# ----------------------------------------------------------------------------- the public math sets' forms
# tests_data/real_forms.jsonl: gold/pred pairs written by hand in the conventions of GSM8K, MATH,
# MATH-500 and NuminaMath (units, separators, LaTeX, intervals, relations, matrices, text, choices),
# each with the verdict a careful grader gives; `pred` is what a model writes in its <answer> block.
with open(os.path.join(HERE, "tests_data", "real_forms.jsonl"), encoding="utf-8") as f:
    REAL_FORMS = [json.loads(line) for line in f]


def test_real_forms_corpus(verify_worker):
    wrong = [(row["pred"], row["gold"], row["expected"]) for row in REAL_FORMS
             if is_equivalent(answer_in_block(row["pred"]) or "", row["gold"]) != row["expected"]]
    assert len(REAL_FORMS) >= 600 and not wrong
    assert sum(row["expected"] for row in REAL_FORMS) < len(REAL_FORMS) - 100  # near misses too
    for row in REAL_FORMS:
        validate_gold(row["gold"])


ISSUE_GOLDS = [r"28\%", r"90^\circ", "[0,1)", r"(\frac{3}{5},\frac{8}{3}]", r"x \geq 5", r"x \neq 3",
               "2x+4y-3=0", r"\tan^2(y)+1", r"\infty", r"\text{Evelyn}", r"\begin{pmatrix}1\\2\end{pmatrix}",
               r"\{-1\} \cup [0,7)", "$125$ miles", "#### 1,000"]
ISSUE_EQUIVALENT = [  # (prediction, gold): right answers today's parser judged wrong
    ("7,425,000", "7425000"), ("1,000", "1000"), ("14{,}916", "14916"), ("1\\,000", "1000"),
    ("1 000", "1000"), ("10,\\!000", "10000"), (r"\frac13", "1/3"), (r"\frac94\pi", r"\frac{9\pi}{4}"),
    (r"\sqrt3", r"\sqrt{3}"), (r"\sqrt 2+\sqrt 5", r"\sqrt{5}+\sqrt{2}"), (r"\cfrac{1}{3}", "1/3"),
    (r"\tfrac{1}{3}", "1/3"), (r"\frac{1}{3} \text{ meters}", "1/3"), (r"x\approx 11", "11"),
    (r"5 \geq x", r"x \leq 5"), (r"\sec^2(y)", r"\tan^2(y)+1"), (r"28\%", r"28\%"), ("28", r"28\%"),
    ("28 percent", r"28\%"), (r"90^{\circ}", r"90^\circ"), ("90", r"90^\circ"), (r"\frac{\pi}{2}", r"90^\circ"),
    (r"\left( \frac35, \frac{8}{3} \right]", r"(\frac{3}{5},\frac{8}{3}]"), (r"5 \leq x", r"x \geq 5"),
    (r"-x > -1", "x < 1"), (r"y=-\frac{1}{2}x+\frac{3}{4}", "2x+4y-3=0"), ("x = 5+5+1 = 11", "11"),
    (r"\begin{bmatrix}1\\2\end{bmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"), (r"\text{Evelyn}", "Evelyn"),
    ("C", r"\text{(C)}"), ("1000", "#### 1,000"), (r"[0,7) \cup \{-1\}", r"\{-1\} \cup [0,7)"),
    (r"\{2, 1\}", r"\{1,2\}"), (r"x \ne 3", r"x \neq 3"), (r"+\infty", r"\infty"), ("125", "$125$ miles"),
    ("y = 2x + 3", "2x + 3"), ("2x + 3", "y = 2x + 3"),
    (r"\begin{pmatrix}1&2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
]
NEAR_MISSES = [  # (prediction, gold) that must stay unequal
    ("[0,1]", "[0,1)"), ("(0,1)", "[0,1)"), ("0.28", r"28\%"), ("x<5", "x>5"), ("x > 5", r"x \geq 5"),
    ("1,000", "(1, 0)"), ("(1, 0)", "1,000"), ("1, 000", "1000"), ("1,00", "1000"), ("y > 5", "x > 5"),
    (r"\frac{\pi}{2}", r"\frac{\pi}{2}x"), (r"-\infty", r"\infty"), (r"\text{Bob}", r"\text{Evelyn}"),
    ("B", r"\text{(C)}"), (r"(C) or (D)", "C"), (r"\tan^2(y)", r"\tan^2(y)+1"), ("x = 3", r"x \neq 3"),
    ("2x+4y+3=0", "2x+4y-3=0"), (r"[0,7)", r"\{-1\} \cup [0,7)"), (r"\begin{pmatrix}2\\1\end{pmatrix}",
    r"\begin{pmatrix}1\\2\end{pmatrix}"), ("2x + 3 > 13", "(5, \\infty)"), ("2x + 3 = 13", "x = 5"),
    ("y = 2x", "x = 2y"), (r"\{1,2,3\}", r"\{1,2\}"), ("x = 5 or x = 6", "5"), (r"5 \pm 1", "6"),
    (r"\frac{355}{113}", r"\pi"),  # 8.5e-8 apart, but no decimal point: exact
    ("5", r"\begin{pmatrix}5\end{pmatrix}"), ("(1, 2, 3)", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    (r"\begin{pmatrix}1&2&3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT + ISSUE_EQUIVALENT)
def test_equivalent(verify_worker, pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT + NEAR_MISSES)
def test_not_equivalent(verify_worker, pred, gold):
    assert not is_equivalent(pred, gold)


@pytest.mark.parametrize("gold", ISSUE_GOLDS)
def test_issue_golds_parse(gold):
    validate_gold(gold)


def test_thousands_separator_rule():
    """latex.py's stated rule: groups of 1-3 then exactly 3 digits, no space after a comma, not
    right after a bracket or a comma; a gold that lists items reads the prediction's commas as
    item separators."""
    joined = {"1,000": "1000", "-7,425,000": "-7425000", "x = 1,000": "x=1000", "1,234.5": "1234.5",
              "[0, 1,000]": "[0,1000]", "1 000 000": "1000000", "14{,}916": "14916", "1\\,000": "1000"}
    kept = ["(1,000)", "1,00", "0,100", "1,000,5", "12,34", "2,3", "{1,000}", "1,0000", "2 3", "12 3456"]
    for text, normal in joined.items():
        assert latex.normalize(text) == normal, text
    for text in kept:
        assert latex.normalize(text) == text, text
    assert latex.normalize("1,000", separators=False) == "1,000"
    assert latex.normalize("14{,}916", separators=False) == "14916"  # never a list
    assert [latex.is_list(g) for g in ("1,-2", "x=3 or x=4", "(1,0)", "[0,1)", "{1,2}", "1000")] == [
        True, True, False, False, False, False]
    assert is_equivalent("1,100", "1, 100") and is_equivalent("1,100", "1100")
    assert not is_equivalent("1,100", "1100, 5")


def test_text_answers_and_choices():
    assert latex.text_key(r"\text{(C)}") == latex.text_key("C") == latex.text_key("c.") == "c"
    assert latex.text_key(r"\textbf{Evelyn}") == "evelyn" and latex.text_key("Evelyn's dog") == "evelyn's dog"
    assert latex.text_key("5 apples") is None and latex.text_key("NaN") is None  # math; a non-number
    assert latex.text_answer(r"\text{odd}") == "odd" and latex.text_answer("Evelyn") == "evelyn"
    assert [latex.text_answer(t) for t in ("xy", "sqrt x", "x or y")] == [None, None, None]
    assert verify.cheap_verdict("Evelyn", "5") is False  # words against a number: decided without the worker
    assert verify.cheap_verdict("5", r"\text{Evelyn}") is False
    assert [latex.choice(t) for t in ("C", "(C)", r"\textbf{(C)}\ 12", "(C) or (D)", "(C), (D)", "12", "CD")] == [
        "c", "c", "c", None, None, None, None]
    assert is_equivalent("no", r"\text{No}") and not is_equivalent("yes", r"\text{No}")
    C = ("scalar", None, sympy.Symbol("C"))
    assert verify.answers_equal(("text", "c"), ("text", "c"), False) and verify.answers_equal(C, ("text", "c"), False)
    assert not verify.answers_equal(("text", "c"), ("text", "d"), False) and not verify.answers_equal(
        ("scalar", None, sympy.Symbol("D")), ("text", "c"), False)
    assert not is_equivalent("Evelyn", "5") and verify.verdict("nan", "5") == "reject"


x, y, n = sympy.symbols("x y n")
STRUCTURES = [  # (answer, the structure written out by hand)
    ("[0,1)", ("interval", 0, 1, True, False)), (r"(-\infty, 2]", ("interval", -sympy.oo, 2, False, True)),
    (r"[2, \infty]", ("interval", 2, sympy.oo, True, False)),  # an infinite end is open however written
    (r"\mathbb{R}", ("interval", -sympy.oo, sympy.oo, False, False)), (r"\emptyset", ("set", ())),
    ("(1, 2)", ("tuple", (1, 2))), ("[1, 2, 3]", ("tuple", (1, 2, 3))),
    (r"x \in [0, 1]", ("interval", 0, 1, True, True)),
    (r"x \geq 5", ("rel", ((">=", x - 5),), x)), (r"5 \geq x", ("rel", ((">=", 5 - x),), x)),
    ("-x > -1", ("rel", ((">", 1 - x),), None)), (r"x \neq 3", ("rel", (("!=", x - 3),), x)),
    ("-1 < x <= 2", ("rel", ((">", x + 1), (">=", 2 - x)), x)), (r"\{x \mid x > 2\}", ("rel", ((">", x - 2),), x)),
    ("2x+4y-3=0", ("eq", 2 * x + 4 * y - 3)), ("x = 5+5+1 = 11", ("scalar", x, 11)), ("2+3 = 5", ("scalar", None, 5)),
    (r"\sqrt{2} \approx 1.41", ("scalar", None, sympy.sqrt(2))), ("f(x) = 2x", ("scalar", None, 2 * x)),
    ("a_n = 2^{n-1}", ("scalar", sympy.Symbol("a_n"), 2 ** (n - 1))), ("(x, y) = (1, 2)", ("tuple", (1, 2))),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", ("matrix", ((1, 2), (3, 4)))),
    (r"1 \pm \sqrt{2}", ("set", (("scalar", None, 1 + sympy.sqrt(2)), ("scalar", None, 1 - sympy.sqrt(2))))),
    (r"\text{Evelyn}", ("text", "evelyn")), (r"\tan^2 y", ("scalar", None, sympy.tan(sympy.Symbol("y")) ** 2)),
    (r"\sin^{-1} x", ("scalar", None, sympy.asin(x))), (r"\log_2 8", ("scalar", None, 3)),
    (r"\ln e^2", ("scalar", None, 2)),
    (r"\sin 30^\circ", ("scalar", None, sympy.Rational(1, 2))), (r"\sin 2x", ("scalar", None, sympy.sin(2 * x))),
    (r"\sin x \cos x", ("scalar", None, sympy.sin(x) * sympy.cos(x))),
    ("|x - 1|", ("scalar", None, sympy.Abs(x - 1))),
    (r"\sqrt[3]{8}", ("scalar", None, 2)), (r"\sqrt13", ("scalar", None, sympy.sqrt(13))),
    (r"\frac94\pi", ("scalar", None, 9 * sympy.pi / 4)),
    (r"2\frac{1}{2}", ("scalar", None, sympy.Rational(5, 2))),
    (r"-2\frac12", ("scalar", None, sympy.Rational(-5, 2))),
    (r"2\frac{x}{3}", ("scalar", None, 2 * x / 3)), (r"0.1\overline{6}", ("scalar", None, sympy.Rational(1, 6))),
    (r"\binom{10}{3}", ("scalar", None, 120)), ("(1+i)^2", ("scalar", None, (1 + sympy.I) ** 2)),
    ("1011_2", ("scalar", None, sympy.Symbol("1011_2"))),
    ("xy", ("scalar", None, x * y)), ("2|x-1|", ("scalar", None, 2 * sympy.Abs(x - 1))),
    ("|x||y|", ("scalar", None, sympy.Abs(x) * sympy.Abs(y))),
    (r"0\frac{1}{2}", ("scalar", None, sympy.Rational(1, 2))),
    ("f(x, y) = x + y", ("scalar", None, x + y)), (r"x = \sqrt{10} \approx 3.162", ("scalar", x, sympy.sqrt(10))),
    (r"\binom{0}{0}", ("scalar", None, 1)), ("a_{1+2+3}", ("scalar", None, sympy.Symbol("a_1+2+3"))),
    (r"2\mathrm{e}", ("scalar", None, 2 * sympy.E)),
    ("(1,2),(3,4)", ("set", (("tuple", (1, 2)), ("tuple", (3, 4))))),
    (r"\mathbb{R} \setminus \{3\}", ("minus", ("interval", -sympy.oo, sympy.oo, False, False),
                                                                       ("set", (("scalar", None, 3),)))),
]


@pytest.mark.parametrize("answer,structure", STRUCTURES, ids=lambda a: str(a)[:30])
def test_parse_structures(answer, structure):
    assert verify.parse_answer(answer).structure == structure


def test_marks_and_what_they_equal():
    assert verify.parse_answer(r"28\%").marks == {"%"} and verify.parse_answer(r"90^\circ").marks == {"°"}
    assert verify.parse_answer(r"\sin 30^\circ").marks == set()  # an angle inside a function, not the answer
    assert verify.parse_answer("3.5").decimal and not verify.parse_answer("7/2").decimal
    assert is_equivalent(r"28\%", "0.28") and is_equivalent(r"28\%", "28") and not is_equivalent("0.28", r"28\%")
    assert is_equivalent(r"60^\circ", r"\frac{\pi}{3}") and not is_equivalent(r"60^\circ", r"\frac{\pi}{6}")
    assert not is_equivalent(r"28\%", "(0.28, 1)") and not is_equivalent(r"60^\circ", r"(\frac{\pi}{3}, 1)")


@pytest.mark.parametrize("answer", [
    "2x = 10", "2x + 3 = 13", "x = y = (1, 2)", r"5 \in [0, 1)", r"x \in 5", r"x + 1 \in [0, 1)", "5 < (1, 2)",
    "x < y = 3", r"\frac{1}{\infty}", r"\infty - \infty",
    r"\sin(\infty)", r"\log 0", r"\tan\frac{\pi}{2}", r"\log_1 5", r"\exp(\exp(x))", r"\exp(2^{64})", "x^{x^{x}}",
    "e^{e^{e^{2}}}", "2^{n+512}", r"\binom{1001}{3}", r"\binom{x}{2}", r"\sqrt[13]{2}", r"\sqrt[x]{2}", "1011_37",
    "129_2", "a_{1+2+3+4}", r"\log_0 5", "(1, 2}", r"\{1, 2)",
    r"\begin{pmatrix}" + r"\\".join("1" * 11) + r"\end{pmatrix}", r"\pm 1 \pm 2", r"\{1\} \cup (2)", "3 > 2",
    r"\begin{pmatrix}1&2\\3\end{pmatrix}",
    r"\begin{pmatrix}" + "&".join("1" * 11) + r"\end{pmatrix}", "[1, 2)(", "5!", "x!",
])
def test_refused_forms(answer):
    with pytest.raises(verify.Rejected):
        verify.parse_answer(answer)


def test_reader_details():
    assert verify.Parser("1,000").expr().expr == 1000  # thousands by default
    assert latex.tokenize("abc") == ["a", "b", "c"] and latex.is_list("(1,2),(3,4)")
    with pytest.raises(verify.Rejected):
        latex.tokenize("abcd")  # a word: read as text (`Evelyn`) or not at all
    assert latex.text_key("a" * 400) == "a" * 400 and latex.text_key("a" * 401) is None
    assert accepted(r"\begin{pmatrix}" + r"\\".join("1" * 10) + r"\end{pmatrix}")
    assert verify.parse_answer("1,000").structure == ("scalar", None, 1000)  # a gold's separators are read


def test_growth_limits_sit_where_documented():
    assert accepted(rf"\exp({2**64 - 1})") and not accepted(rf"\exp({2**64})")  # GROWTH_BITS = 64
    assert accepted("2^{n+511}") and not accepted("2^{n+512}")  # a symbolic exponent's estimate: 10 bits
    assert accepted(f"{2**64 - 1}^n") and not accepted(f"{2**64}^n")  # its base: GROWTH_BITS as well
    assert accepted("e^{e^{2}}") and not accepted("e^{e^{e^{2}}}")     # one level of growth, never two
    assert accepted(r"\binom{1000}{500}") and not accepted(r"\binom{1001}{500}")
    assert accepted("(x+y+z+1)^{n+16}") and not accepted("(x+y+z+1)^{n+17}")  # C(n+3, 3) terms, as for numbers
    deep = lambda k: r"\sin(" * k + "x" + ")" * k
    assert accepted(deep(16)) and not accepted(deep(17))  # a call nests like a bracket: MAX_DEPTH = 16


def test_solution_sets():
    """Relations, intervals and unions as pieces (lo, hi, lo_closed, hi_closed)."""
    pieces = lambda text: verify.pieces(verify.parse_answer(text).structure)
    oo = sympy.oo
    assert pieces("-1 < x <= 2") == [(-1, 2, False, True)] and pieces("x >= 5") == [(5, oo, True, False)]
    assert pieces("5 > x") == [(-oo, 5, False, False)]
    assert pieces(r"x \neq 3") == [(-oo, 3, False, False), (3, oo, False, False)]
    assert pieces("-x > -1") is None and pieces("1 < x > 3") is None  # not solved; a bound given twice
    assert pieces(r"\{-1\} \cup [0, 7)") == [(-1, -1, True, True), (0, 7, True, False)]
    assert pieces(r"[0, 2] \setminus \{0, 1\}") == [(0, 1, False, False), (1, 2, False, True)]
    assert pieces(r"[0, 2] \setminus \{2, 5\}") == [(0, 2, True, False)]  # an end; a point outside
    assert pieces("(1, 2)") == [(1, 2, False, False)] and pieces("(1, 2, 3)") is None
    assert is_equivalent(r"x \geq 5", "[5, \\infty)") and not is_equivalent("x > 5", "[5, \\infty)")
    assert is_equivalent("x > 2 or x < -1", r"(-\infty, -1) \cup (2, \infty)")


def test_equations_and_relations_up_to_a_factor():
    half, eq = sympy.Rational(1, 2), verify.proportional
    assert eq(2 * x + 4 * y - 3, y + x * half - 3 * half / 2, True) and eq(x, x, False)
    assert eq(2 * x + 4 * y - 3, -y - x * half + 3 * half / 2, False)
    assert not eq(2 * x + 4 * y - 3, -y - x * half + 3 * half / 2, True)  # x > 1 is not x < 1
    assert not eq(x - 5, y - 5, False) and not eq(sympy.Integer(0), x - y, False)
    assert not eq(x ** 2 - y, x - y, False) and not eq(x - 1, x + 1, False)
    assert is_equivalent("2x - y + 3 = 0", "y = 2x + 3") and is_equivalent("x = (y-3)/2", "y = 2x + 3")
    assert not is_equivalent("y = 2x - 3", "y = 2x + 3") and not is_equivalent("x - 5 = 0", "x = 5")


# ----------------------------------------------------------------------------- limits
def accepted(text):
    try:
        verify.parse_answer(text)
        return True
    except verify.Rejected:
        return False


def test_limits_sit_where_documented():
    """Each limit at its documented value, written out here: the last answer in, the first out."""
    assert verify.verdict("5" + " " * 399, "5") == "yes"        # 400 characters
    assert verify.verdict("5" + " " * 400, "5") == "reject"
    assert len(verify.tokenize("1 " * 200)) == 200
    with pytest.raises(verify.Rejected):
        verify.tokenize("1 " * 201)
    assert accepted("(" * 16 + "5" + ")" * 16) and not accepted("(" * 17 + "5" + ")" * 17)
    assert not accepted("(1)(2)" + "(" * 17 + "5" + ")" * 17)  # closed groups give no credit
    assert accepted("1" * 40) and accepted("0." + "1" * 39) and not accepted("1" * 41)
    assert accepted(", ".join("123456789a")) and not accepted(", ".join("123456789ab"))
    assert accepted("(" + ", ".join("1" * 10) + ")") and not accepted("(" + ", ".join("1" * 11) + ")")
    assert accepted("2^1000") and not accepted("2^1001")
    assert accepted("2^(1/12)") and not accepted("2^(1/13)")
    assert accepted("(x+1)^32") and not accepted("(x+1)^33") and accepted("2^33")
    # (a+b+c+1)^n has C(n+3, 3) monomials: 969 for n = 16, 1140 for n = 17 (the cap is 1000)
    assert accepted("(a+b+c+1)^16") and not accepted("(a+b+c+1)^17")
    # three sums of 10 distinct terms multiply out to exactly 1000 monomials: at the cap, allowed
    assert accepted("(a+b+c+d+e+f+g+h+i+1)(j+k+l+m+n+o+p+q+r+1)(s+t+u+v+w+y+z+A+B+1)")
    # a 40-digit number to the 200th power has 26,575 bits, over the 20,000-bit cap; to the 140th
    # it has 18,603
    assert accepted("9" * 40 + "^140") and not accepted("9" * 40 + "^200")
    assert accepted("262144^1000") and not accepted("524288^1000")  # 19 bits: (19 + 1) * 1000 = 20,000, at the cap
    assert accepted("0^2") and accepted("\\sqrt{0}") and accepted("0^0") and not accepted("0^-1")  # 0^0: sympy's 1
    assert not accepted("2/(3-3)")


def test_size_estimates_follow_their_formulas():
    """Each operation's estimate (terms after expansion, bits of its largest number, tower) is the
    formula beside it in parse.sized_op, sized_function and sized_binomial, worked out here by hand."""
    estimate = lambda text: tuple(verify.Parser(text).expr()[1:])
    assert estimate("2^3") == (1, 9, False)         # one term: (2 bits + bit_length(1 term)) * 3
    assert estimate("(x+1)^3") == (4, 12, False)    # C(2 + 3 - 1, 3) terms, (2 + bit_length(2)) * 3 bits
    assert estimate("2^{1/2}") == (1, 3, False)     # a root counts as a first power
    assert estimate("2^n") == (1, 3, True)          # a symbolic exponent: (2 bits + 1) * max(0, 1)
    assert estimate("(x+1)^{n+3}") == (4, 9, True)  # its constant part expands: C(4, 3), (2 + 1) * 3
    assert estimate(r"\sin(x+1)") == (1, 4, False) and estimate(r"\log_{2}(x)") == (1, 3, False)  # bits + 2
    assert estimate(r"\exp(x)") == (1, 3, True) and estimate(r"\binom{5}{2}") == (1, 4, False)  # 10: 4 bits


@pytest.mark.parametrize("text", ["(x+1)^32", "(2x+3)^20", "(x+y+1)^10", "(x+1)(x+2)(x+3)",
                                  "2^100", "(x/3+1)^5", "3^50x + 7", "(x-1)^2(x+1)^2 - 1/7"])
def test_size_estimate_bounds_the_expansion(text):
    """The cost estimate is an upper bound of what sympy's full expansion really holds."""
    sized = verify.Parser(text).expr()
    terms = sympy.Add.make_args(sympy.expand(sized.expr))
    coefficients = [term.as_coeff_Mul()[0] for term in terms]
    bits = max(max(abs(c.p).bit_length(), c.q.bit_length()) for c in coefficients)
    assert sized.terms >= len(terms) and sized.bits >= bits


# ----------------------------------------------------------------------------- adversarial answers
CANARY = "/tmp/nanor1_rewards_canary"
ADVERSARIAL = [
    f"__import__('os').system('touch {CANARY}')", f"exec(\"open('{CANARY}','w')\")",
    "().__class__.__bases__[0].__subclasses__()", "lambda: 5", "(lambda x: x)(5)",
    "Symbol('x')", "__builtins__", "os.system", "5; import os",
    "9^9^9^9", "9**9**9**9", "2^(2^(2^(2^10)))", "10^1000000", "(x+1)^100000", "(x+y+z+1)^60",
    "(a+b+c+d+e+f+g+1)^6",
    "((x+1)^50)^50", "1000000!", "5!", "factorial(1000000)", "1" * 100_000, "x" * 100_000,
    "(" * 500 + "5" + ")" * 500, "(" * 30 + "5" + ")" * 30, "-" * 150 + "5",
    "nan", "NaN", "zoo", "inf", "oo", "-oo", "\\infty", "∞", "1/0", "0^-1", "x/(x-x)",
    "５", "x = ５", "１/２", "5 or 6", "5, 6", "x = 5 or x = 6", "{5, 6}", "5 \\pm 1",
]
HOSTILE_FORMS = [  # the forms the public math sets brought in, used as weapons (issue 17)
    r"\sin(" * 20 + "x" + ")" * 20, r"\exp(\exp(\exp(100)))", r"e^{e^{e^{e^{10}}}}", r"2^{2^{2^{2^{x}}}}",
    r"x^{x^{x}}", r"(x^x)^x", r"\log 0", r"\tan(\pi/2)", r"\csc 0", r"\infty - \infty", r"0\cdot\infty",
    r"\infty^0", r"\sin(\infty)", r"1^\infty", r"\log_{1} 5", r"10^{10^{10}}", r"\binom{1000000}{500000}",
    ",".join(["1"] + ["000"] * 50), r"\sqrt[100]{2}", r"(x+1)^{n+1000}", r"(x+y+z+1)^{n+30}", r"\sin^{x}(x)",
    r"\exp(10^{40})", r"(\sin x + \cos x + \tan x + 1)^{16}", "|" * 50 + "x" + "|" * 50, r"\pm\pm 1",
    r"\{x|" * 20 + "x>1" + r"\}" * 20, r"\begin{pmatrix}" + "&".join("1" * 11) + r"\end{pmatrix}",
    r"0.\overline{9999999999999}", r"(1+i)^{1000}", "Evelyn " * 100, r"\text{" + "a" * 390 + "}",
    r"\text{nan}", r"\mathrm{zoo}", r"5 \text{ or } 6", "$5$ or $6$", r"\boxed{5} \boxed{6}", "(C) or (D)",
    r"x > 5 \text{ or } x < 5", r"\{5, 6\}", "5,000", r"\frac{12}{2} \approx 5",  # the exact side is the answer
]


@pytest.mark.parametrize("answer", ADVERSARIAL + HOSTILE_FORMS, ids=lambda a: a[:40])
def test_adversarial_answer_is_refused_fast(verify_worker, answer):
    t0 = time.perf_counter()
    assert verify.verdict(answer, "5") in ("reject", "no")
    assert not is_equivalent(answer, "5")
    assert time.perf_counter() - t0 < 0.5  # well inside the 1 s deadline: refused, not timed out
    assert not os.path.exists(CANARY)


def test_parser_runs_no_python(monkeypatch):
    """In-process, with eval/exec/compile watched: no answer text is ever evaluated as Python.
    (sympy compiles some code templates of its own, e.g. monomial helpers; those are not ours.)"""
    calls = []
    for name in ("eval", "exec", "compile"):
        def watch(source, *args, _real=getattr(builtins, name), **kwargs):
            if isinstance(source, str):
                calls.append(source)
            return _real(source, *args, **kwargs)
        monkeypatch.setattr(builtins, name, watch)
    for answer, gold in ([(a, "5") for a in ADVERSARIAL + HOSTILE_FORMS] + EQUIVALENT + ISSUE_EQUIVALENT
                         + [(row["pred"], row["gold"]) for row in REAL_FORMS]):
        try:
            verify.full_verdict(answer, gold)
        except verify.Rejected:
            pass
    monkeypatch.undo()
    for answer in [a for a in ADVERSARIAL if len(a) >= 8] + ["(x+2)(x+3)", "x^2 + 5x + 6"]:
        assert not any(answer[:60] in source for source in calls), answer
    assert not os.path.exists(CANARY)


@pytest.mark.parametrize("module", [verify, latex, parse])
def test_source_never_calls_python_evaluation(module):
    with open(module.__file__, encoding="utf-8") as f:
        source = f.read()
    assert not re.search(r"sympify\(|parse_expr\(|\beval\(|\bexec\(|signal\.alarm", source)


# ----------------------------------------------------------------------------- the worker
def test_deadline_kills_and_recovers(verify_worker):
    restarts = verify_worker.restarts
    t0 = time.perf_counter()
    assert verify_worker.ask("sleep", (30,), deadline_s=0.3) == "timeout"  # never ends
    assert time.perf_counter() - t0 < 2.0
    assert verify_worker.restarts == restarts + 1
    assert is_equivalent("(x+1)^3", "x^3 + 3x^2 + 3x + 1")  # a new worker took over


def test_heavy_whitelisted_answers_are_cheap(verify_worker):
    # inside every limit, but expanding them would take sympy tenths of a second
    for pred, gold in [("(a+b+c+1)^14", "x^2 + 5x + 6"), ("(x+y+1)^32", "(x+y+2)^32"),
                       ("(a+b+c+1)^14", "391")]:
        t0 = time.perf_counter()
        assert not is_equivalent(pred, gold)
        assert time.perf_counter() - t0 < 0.2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_worker_memory_is_capped(verify_worker):
    assert verify_worker.ask("alloc", (8 << 30,), deadline_s=10) == "oom"  # 8 GiB refused
    assert is_equivalent("(x-1)^2", "x^2 - 2x + 1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_worker_memory_cap_is_one_gib(verify_worker):
    assert verify_worker.ask("alloc", (768 << 20,), deadline_s=10) == "yes"  # room to work in
    assert verify_worker.ask("alloc", (1100 << 20,), deadline_s=10) == "oom"


def test_worker_answers_without_unbuffered_env(monkeypatch):
    """The worker flushes each line itself: a pipe is block-buffered unless PYTHONUNBUFFERED."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    worker = verify.Worker()
    try:
        assert worker.ask("eq", ("(x+2)(x+3)", "x^2 + 5x + 6"), deadline_s=120) == "yes"
    finally:
        worker.close()


def test_worker_imports_no_trainer():
    """The worker runs `import verify`; that must not pull in rewards.py, torch or a trainer."""
    code = "import sys, verify; print(sorted({'rewards', 'torch', 'data'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


# ----------------------------------------------------------------------------- finding the answer
@pytest.mark.parametrize("block,answer", [
    ("5", "5"), (r" \boxed{x = 7}. ", "x = 7"), (r"The answer is \boxed{\frac{1}{2}} cm", r"\frac{1}{2}"),
    (r"\boxed{5} \boxed{6}", None), (r"\boxed{5", None), (r"\boxed{}", None), (r"\boxed{\boxed{5}}", None),
    (r"So $2x = 10$, hence $x = 5$.", "x = 5"), (r"$x = 3$ and $x = 4$", "x = 3, x = 4"),
    (r"$3$ or $4$", "3, 4"), (r"\(3\), \(4\)", "3, 4"), (r"$1$ is too small. $3$ or $4$", "3, 4"),
    (r"$3$, so $4$", "4"), (r"\[ \frac{7}{2} \]", r"\frac{7}{2}"), (r"$$5$$", "5"), (r"It costs \$5, i.e. $5$", "5"),
    ("The answer is 42.", "42"), ("answer: 3.5 meters", "3.5 meters"), ("   ", None),
    ("x" * 5000 + " then $7$", "7"),  # the searches look at the block's end only
    ("$7$" + " and so on" * 200, "$7$" + " and so on" * 200),  # a span 4 * MAX_CHARS from the end is not seen
], ids=lambda a: str(a)[:30])
def test_answer_in_block(block, answer):
    assert answer_in_block(block) == answer


@pytest.mark.parametrize("text,answer", [
    (r"Step 1 gives \boxed{3}. Finally \boxed{5}.", "5"), (r"\boxed{3} or \boxed{4}", "3, 4"),
    ("Natalia sold 48 clips.\n#### 72", "72"), ("#### 1,000", "1,000"),
    ("So the answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
    ("The final answer is 18. I hope it is correct.", "18"), ("Answer: (C)", "(C)"), ("No answer here: just 5", None),
])
def test_find_final_answer(text, answer):
    assert find_final_answer(text) == answer


def test_finders_are_fast_on_long_text():
    for text in ["answer is " * 20000, "\\boxed{" * 20000, "$" * 100_000, "\\(" * 50000, "#### " * 20000]:
        t0 = time.perf_counter()
        found = find_final_answer(text), answer_in_block(text)
        assert time.perf_counter() - t0 < 0.5 and (found[0] is None or len(found[0]) <= latex.MAX_CHARS)


# ----------------------------------------------------------------------------- golds and the CLI
def test_validate_gold():
    for gold in ["391", "-17", "x = 5", "x = -3/2", "x^2 + 5x + 6", "3x^2 - 8x - 3", "7/12",
                 "x = 2, x = 3", "(2, 1)", "\\frac{1}{2}"]:
        validate_gold(gold)
    for gold in ["", "nan", "x ==", "5!", "９", "x = (", "2x = 10", "1/0"]:
        with pytest.raises(ValueError):
            validate_gold(gold)


def test_bad_gold_is_a_failure_not_a_yes(verify_worker):
    assert verify.verdict("x + 1", "x ++ ? 1") == "fail"


def test_cli_prints_verdicts_and_summary(tmp_path):
    rows = [{"gold": "x^2 + 5x + 6", "pred": "(x+2)(x+3)"},                 # yes, in the worker
            {"gold": "7/12", "pred": "0.58"},                                # no
            {"gold": "x = 5", "completion": "<think>a</think><answer>5</answer>"},  # yes
            {"gold": "5", "completion": "<think>a</think> 5"},               # no answer block
            {"gold": "5", "pred": "__import__('os')"},                       # reject
            {"gold": "2x = ?", "pred": "5", "expected": False},              # the gold is unreadable
            {"gold": "72", "completion": "so 8 * 9 = 72\n#### 72", "expected": True},  # free text
            {"gold": "28\\%", "pred": "The answer is $0.28$.", "expected": True}]  # disagrees
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    run = subprocess.run([sys.executable, os.path.join(HERE, "verify.py"), str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines[:8]] == [
        ["1", "yes"], ["2", "no"], ["3", "yes"], ["4", "no answer"], ["5", "reject"],
        ["6", "unreadable gold"], ["7", "yes"], ["8", "no"]]
    assert lines[8].startswith("3/8 equivalent (37.5%)")
    assert lines[9].startswith(f"{path}:5: reject") and lines[10].startswith(f"{path}:6: unreadable gold")
    assert lines[11] == "agreement with 'expected': 2/3 (66.7%)"
    assert lines[12].startswith(f"{path}:8: no, expected True")
    for bad, where in [('{"gold": "5"}\n', ":1:"), ('{"gold": "5", "pred": "5"}\n[1, 2]\n', ":2:"),
                       ('\n{"gold": "5", "pred": 5}\n{"gold": 5, "pred"\n', ":3:")]:
        path.write_text(bad, encoding="utf-8")  # neither pred nor completion; not an object; not JSON
        run = subprocess.run([sys.executable, os.path.join(HERE, "verify.py"), str(path)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and where in run.stderr, run.stderr
