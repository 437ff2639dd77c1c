# Tests for rewards.py. References are known-equivalent answers written by hand, never the code's
# own output. Run: python -m pytest tests_rewards.py -q (also run by test_all.py)
import builtins
import os
import re
import sys
import time

import pytest

import rewards
from rewards import (STAGE_TERMS, RewardWeights, accuracy_reward, extract_answer, format_reward,
                     is_equivalent, language_consistency, score_batch, validate_gold)


@pytest.fixture(scope="module")
def worker():
    """The shared worker process, started once for the whole module."""
    assert rewards._WORKER.ask("sleep", (0,), deadline_s=120) == "no"  # a no-op round trip
    yield rewards._WORKER


def wrap(answer, think="Let me compute step by step."):
    return f" <think> {think} </think> <answer> {answer} </answer>"


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
]
NOT_EQUIVALENT = [
    ("392", "391"), ("-391", "391"), ("17", "-17"), ("x = 6", "x = 5"), ("y = 5", "x = 5"),
    ("x = -5", "x = 5"), ("x^2 + 5x + 7", "x^2 + 5x + 6"), ("(x+2)(x-3)", "x^2 + 5x + 6"),
    ("x^2 + 2x", "x^2 + 2x + 1"), ("y^2 + 5y + 6", "x^2 + 5x + 6"), ("x^2 - 4", "x^2 + 4"),
    ("0.333", "1/3"), ("0.33333", "1/3"), ("7/13", "7/12"), ("12/7", "7/12"), ("0.58", "7/12"),
    ("(2,1)", "(1,2)"), ("(2, 1, 0)", "(2, 1)"), ("3 or 4", "3"), ("3, 4", "3"), ("3或4", "3"),
    ("x = 3 or x = 4", "x = 3"), ("x = 2, x = 3, x = 4", "x = 2, x = 3"), ("x = 2", "x = 2, x = 3"),
    ("2 3", "23"), ("1,000", "1000"), ("0.333333333x", "x/3"), ("\\sqrt{2}", "1.41"),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent(worker, pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_not_equivalent(worker, pred, gold):
    assert not is_equivalent(pred, gold)


def test_accuracy_in_both_languages(worker):
    zh = "先把括号展开：2x*x = 2x^2，2x*1 = 2x，然后合并同类项。"
    assert accuracy_reward(wrap("2x^2 + x - 1", zh), "2x^2 + x - 1") == 1.0
    assert accuracy_reward(wrap("(2x - 1)(x + 1)", zh), "2x^2 + x - 1") == 1.0
    assert accuracy_reward(wrap("x = 7。", "移项得 3x = 21，所以 x = 7。"), "x = 7") == 1.0
    assert accuracy_reward(wrap("\\boxed{\\frac{7}{15}}"), "7/15") == 1.0
    assert accuracy_reward(wrap("The answer is \\boxed{x = 7}."), "x = 7") == 1.0
    assert accuracy_reward(wrap("8"), "7") == 0.0
    assert accuracy_reward("<think>no answer block</think>", "7") == 0.0


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
def test_adversarial_answer_scores_zero_fast(worker, answer):
    t0 = time.perf_counter()
    assert accuracy_reward(wrap(answer), "5") == 0.0
    assert time.perf_counter() - t0 < 0.5  # well inside the 1 s deadline: refused, not timed out
    assert rewards._verdict(answer, "5") in ("reject", "no")
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
            rewards._ladder(answer, "5")
        except rewards._Reject:
            pass
    monkeypatch.undo()
    for answer in [a for a in ADVERSARIAL if len(a) >= 8] + ["(x+2)(x+3)", "x^2 + 5x + 6"]:
        assert not any(answer[:60] in source for source in calls), answer
    assert not os.path.exists(CANARY)


def test_several_or_empty_answer_blocks(worker):
    for completion in ["<think>a</think><answer>5</answer><answer>5</answer>",
                       "<think>a</think><answer>5</answer> <answer>6</answer>",
                       "<think>a</think><answer></answer>", "<think>a</think><answer>  </answer>",
                       "<think>a</think><answer>\\boxed{5} \\boxed{6}</answer>",
                       "<think>a</think><answer>\\boxed{}</answer>", "</answer>5<answer>"]:
        assert extract_answer(completion) is None
        assert accuracy_reward(completion, "5") == 0.0


def test_source_never_calls_python_evaluation():
    with open(rewards.__file__, encoding="utf-8") as f:
        source = f.read()
    assert not re.search(r"sympify\(|parse_expr\(|\beval\(|signal\.alarm", source)


# ----------------------------------------------------------------------------- the deadline
def test_deadline_kills_and_recovers(worker):
    restarts = worker.restarts
    t0 = time.perf_counter()
    assert worker.ask("sleep", (30,), deadline_s=0.3) == "timeout"  # a verdict that never ends
    assert time.perf_counter() - t0 < 2.0
    assert worker.restarts == restarts + 1
    assert is_equivalent("(x+1)^3", "x^3 + 3x^2 + 3x + 1")  # a new worker took over


def test_timeout_counted_in_score_batch(worker, monkeypatch):
    # route score_batch's worker requests to a verdict that never ends: the worker is killed
    real_ask = worker.ask
    monkeypatch.setattr(worker, "ask", lambda op, args, deadline_s: real_ask("sleep", (30,),
                                                                             deadline_s))
    t0 = time.perf_counter()
    out = score_batch([wrap("(x+2)(x+3)")] * 3, ["x^2 + 5x + 6"] * 3, ["en"] * 3, deadline_s=0.2)
    assert out["n_timeout"] == 1 and out["accuracy"] == [0.0] * 3  # judged once per batch
    assert time.perf_counter() - t0 < 2.0
    monkeypatch.undo()
    out = score_batch([wrap("(x+2)(x+3)")], ["x^2 + 5x + 6"], ["en"])
    assert out["accuracy"] == [1.0] and out["n_timeout"] == 0


def test_heavy_whitelisted_answers_are_cheap(worker):
    # inside every limit, but expanding them would take sympy tenths of a second
    for pred, gold in [("(a+b+c+1)^14", "x^2 + 5x + 6"), ("(x+y+1)^32", "(x+y+2)^32"),
                       ("(a+b+c+1)^14", "391")]:
        t0 = time.perf_counter()
        assert not is_equivalent(pred, gold)
        assert time.perf_counter() - t0 < 0.2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_worker_memory_is_capped(worker):
    assert worker.ask("alloc", (8 << 30,), deadline_s=10) == "oom"  # 8 GiB refused, not swapped
    assert is_equivalent("(x-1)^2", "x^2 - 2x + 1")


# ----------------------------------------------------------------------------- format
@pytest.mark.parametrize("completion,score", [
    ("<think>reason</think><answer>5</answer>", 1.0),
    (" <think> reason </think> <answer> 5 </answer>", 1.0),  # data.py's own spacing
    ("\n<think>\nline 1\nline 2\n</think>\n\n<answer>5</answer>\n  ", 1.0),
    ("<think>推理：2+3=5</think><answer>5</answer>", 1.0),
    ("<think>reason</think><answer>5</answer> and more", 0.0),  # trailing text
    ("Sure! <think>reason</think><answer>5</answer>", 0.0),     # leading text
    ("<think></think><answer>5</answer>", 0.0),                 # empty think
    ("<think>  </think><answer>5</answer>", 0.0),
    ("<think>reason</think><answer></answer>", 0.0),            # empty answer
    ("reason</think><answer>5</answer>", 0.0),                  # as if <think> were pre-filled
    ("<answer>5</answer>", 0.0), ("<think>reason</think>", 0.0), ("5", 0.0), ("", 0.0),
    ("<answer>5</answer><think>reason</think>", 0.0),           # wrong order
    ("<think>a <think>b</think> c</think><answer>5</answer>", 0.0),  # nested
    ("<think>a</think><think>b</think><answer>5</answer>", 0.0),     # repeated
    ("<think>a</think><answer>5</answer><answer>5</answer>", 0.0),
    ("<think>a</think>text<answer>5</answer>", 0.0),            # text between the blocks
    ("<think>a<answer>5</answer></think><answer>5</answer>", 0.0),
    ("<THINK>a</THINK><ANSWER>5</ANSWER>", 0.0),
])
def test_format_reward(completion, score):
    assert format_reward(completion) == score


# ----------------------------------------------------------------------------- language
def test_language_consistency():
    en = "First multiply 23 by 4, which gives 92, then add 7."
    zh = "先算 23 乘 4 得 92，再加 7。"
    assert language_consistency(en, "en") == 1.0 and language_consistency(en, "zh") == 0.0
    assert language_consistency(zh, "zh") == 1.0 and language_consistency(zh, "en") == 0.0
    # 先 算 (2 CJK words) + "then add" (2 Latin words): half each
    assert language_consistency("先算 23 * 4 = 92, then add 7", "zh") == 0.5
    # tags, numbers, math, one-letter variables, LaTeX commands and the answer block are not words
    math_only = "<think>2x + 3 = 7, \\frac{1}{2} x = 2</think><answer>x = 2 答案</answer>"
    assert language_consistency(math_only, "en") == 0.0
    assert language_consistency("<think>so x = 2</think><answer>答案 x = 2</answer>", "en") == 1.0
    assert language_consistency("", "zh") == 0.0  # no words: no reward (see the docstring)
    assert language_consistency("Сначала потом 先算", "zh") == 0.5  # other scripts count for neither
    with pytest.raises(ValueError):
        language_consistency("hello", "fr")


# ----------------------------------------------------------------------------- batches and golds
def test_score_batch_stages_and_counters(worker):
    completions = [wrap("x = 5", "Subtract 3 from both sides, then divide by 2."),  # right, en
                   wrap("x = 5", "两边减三，再除以二。"),                               # right, zh text
                   "<think>x</think><answer>6</answer> extra",      # wrong, no format
                   wrap("__import__('os')"), wrap("(x+1)^2")]       # rejected; symbolic
    answers, langs = ["x = 5", "x = 5", "x = 5", "x = 5", "x^2 + 2x + 1"], ["en"] * 5
    out = score_batch(completions, answers, langs, stage="zero")
    assert out["accuracy"] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert out["format"] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert out["reward"] == [2.0, 2.0, 0.0, 1.0, 2.0]  # accuracy + format, R1 §2.2.2
    assert (out["n_rejected"], out["n_failed"], out["n_timeout"]) == (1, 0, 0)
    out = score_batch(completions, answers, langs, stage="rl1",
                      weights=RewardWeights(accuracy=1.0, format=0.5, lang=0.25))
    assert out["lang"][:2] == [1.0, 0.0]
    assert out["reward"][:2] == [1.75, 1.5]
    assert set(STAGE_TERMS) == {"zero", "rl1", "rl2"}
    general = score_batch([wrap("Three hundred  ninety-one.")], ["three hundred ninety-one"],
                          ["en"], stage="rl2", general=[True])
    assert general["accuracy"] == [1.0]
    with pytest.raises(ValueError):
        score_batch(completions, answers, langs, stage="sft")
    with pytest.raises(ValueError):
        score_batch(completions, answers[:2], langs)


def test_bad_gold_is_a_failure_not_a_reward(worker):
    out = score_batch([wrap("x + 1")], ["x ++ ? 1"], ["en"])
    assert out["accuracy"] == [0.0] and out["n_failed"] == 1


def test_validate_gold():
    for gold in ["391", "-17", "x = 5", "x = -3/2", "x^2 + 5x + 6", "3x^2 - 8x - 3", "7/12",
                 "x = 2, x = 3", "(2, 1)", "\\frac{1}{2}"]:
        validate_gold(gold)
    for gold in ["", "nan", "x ==", "5!", "９", "x = (", "2x = 10", "1/0"]:
        with pytest.raises(ValueError):
            validate_gold(gold)
