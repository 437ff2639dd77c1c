# Tests for verify.py. References are known-equivalent and known-different answers written by
# hand, never the code's own output. Run: python -m pytest test_verify.py -q
import builtins
import json
import os
import re
import subprocess
import sys
import time

import pytest
import sympy

import verify
from verify import is_equivalent, validate_gold

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


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent(verify_worker, pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_not_equivalent(verify_worker, pred, gold):
    assert not is_equivalent(pred, gold)


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
    assert accepted("0^2") and accepted("\\sqrt{0}") and not accepted("0^-1")
    assert not accepted("2/(3-3)")


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


@pytest.mark.parametrize("answer", ADVERSARIAL, ids=lambda a: a[:40])
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
    for answer in ADVERSARIAL + [p for p, _ in EQUIVALENT]:
        try:
            verify.full_verdict(answer, "5")
        except verify.Rejected:
            pass
    monkeypatch.undo()
    for answer in [a for a in ADVERSARIAL if len(a) >= 8] + ["(x+2)(x+3)", "x^2 + 5x + 6"]:
        assert not any(answer[:60] in source for source in calls), answer
    assert not os.path.exists(CANARY)


def test_source_never_calls_python_evaluation():
    with open(verify.__file__, encoding="utf-8") as f:
        source = f.read()
    assert not re.search(r"sympify\(|parse_expr\(|\beval\(|signal\.alarm", source)


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
            {"gold": "5", "pred": "__import__('os')"}]                       # reject
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    run = subprocess.run([sys.executable, os.path.join(HERE, "verify.py"), str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines[:5]] == [
        ["1", "yes"], ["2", "no"], ["3", "yes"], ["4", "no answer"], ["5", "reject"]]
    assert lines[5].startswith("2/5 equivalent (40.0%)")
    path.write_text('{"gold": "5"}\n', encoding="utf-8")  # neither pred nor completion
    run = subprocess.run([sys.executable, os.path.join(HERE, "verify.py"), str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and ":1:" in run.stderr
