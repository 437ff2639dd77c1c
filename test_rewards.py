# Tests for rewards.py. References are hand-computed reward values, never the code's own output;
# verify.py's equivalence has its own suite (test_verify.py). Run: python -m pytest test_rewards.py -q
import json
import os
import re
import subprocess
import sys
import time

import pytest

import rewards
from rewards import (TERMS, RewardWeights, accuracy_reward, extract_answer, format_reward,
                     language_consistency, needless_chain, score_batch)


HERE = os.path.dirname(os.path.abspath(__file__))


def wrap(answer, think="Let me compute step by step."):
    return f" <think> {think} </think> <answer> {answer} </answer>"


# ----------------------------------------------------------------------------- accuracy
def test_accuracy_in_both_languages(verify_worker):
    zh = "先把括号展开：2x*x = 2x^2，2x*1 = 2x，然后合并同类项。"
    assert accuracy_reward(wrap("2x^2 + x - 1", zh), "2x^2 + x - 1") == 1.0
    assert accuracy_reward(wrap("(2x - 1)(x + 1)", zh), "2x^2 + x - 1") == 1.0
    assert accuracy_reward(wrap("x = 7。", "移项得 3x = 21，所以 x = 7。"), "x = 7") == 1.0
    assert accuracy_reward(wrap("\\boxed{\\frac{7}{15}}"), "7/15") == 1.0
    assert accuracy_reward(wrap("The answer is \\boxed{x = 7}."), "x = 7") == 1.0
    assert accuracy_reward(wrap("8"), "7") == 0.0
    assert accuracy_reward("<think>no answer block</think>", "7") == 0.0


@pytest.mark.parametrize("block,gold,reward", [
    (r"The final answer is $\boxed{\frac{1}{2}}$.", "1/2", 1.0), (r"So $x = 5$.", "x = 5", 1.0),
    (r"Since $2x = 10$, we get $x = 5$", "5", 1.0), (r"$5$ or $6$", "5", 0.0), (r"$5$, $6$", "6", 0.0),
    (r"$x = 3$ or $x = 4$", "x = 3, x = 4", 1.0), ("The answer is 1,080.", "1080", 1.0),
    (r"\boxed{28\%}", r"28\%", 1.0), ("0.28", r"28\%", 0.0), (r"\(\left[0, 1\right)\)", "[0,1)", 1.0),
    (r"\[ [0, 1] \]", "[0,1)", 0.0), (r"\boxed{\text{(C)}}", "C", 1.0), (r"\textbf{(C)}\ 12", "C", 1.0),
])
def test_accuracy_reads_the_public_sets_forms(verify_worker, block, gold, reward):
    """R1 §2.2.2's rule on the answer block: a lone box, else the last math span, else the block."""
    assert accuracy_reward(wrap(block), gold) == reward


@pytest.mark.parametrize("answer", ["__import__('os').system('ls')", "9^9^9^9", "1" * 100_000,
                                    "nan", "５", "5 or 6", "5</answer><answer>5"])
def test_adversarial_answer_scores_zero_fast(verify_worker, answer):
    t0 = time.perf_counter()
    assert accuracy_reward(wrap(answer), "5") == 0.0
    assert time.perf_counter() - t0 < 0.5  # refused, not timed out


def test_several_or_empty_answer_blocks(verify_worker):
    for completion in ["<think>a</think><answer>5</answer><answer>5</answer>",
                       "<think>a</think><answer>5</answer> <answer>6</answer>",
                       "<think>a</think><answer></answer>", "<think>a</think><answer>  </answer>",
                       "<think>a</think><answer>\\boxed{5} \\boxed{6}</answer>",
                       "<think>a</think><answer>\\boxed{}</answer>", "</answer>5<answer>",
                       "<think>a</think><answer>5</answer><answer>5",   # an unclosed second block
                       "<think>a</think><answer>5</answer></answer>"]:
        assert extract_answer(completion) is None
        assert accuracy_reward(completion, "5") == 0.0


def test_source_never_calls_python_evaluation():
    with open(rewards.__file__, encoding="utf-8") as f:
        source = f.read()
    assert not re.search(r"sympify\(|parse_expr\(|\beval\(|signal\.alarm", source)


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
    assert language_consistency("café déjà naïve 先算", "en") == 0.6  # accented Latin words are Latin words
    with pytest.raises(ValueError):
        language_consistency("hello", "fr")


# ----------------------------------------------------------------------------- batches
def test_score_batch_terms_and_counters(verify_worker):
    completions = [wrap("x = 5", "Subtract 3 from both sides, then divide by 2."),  # right, en
                   wrap("x = 5", "两边减三，再除以二。"),                               # right, zh text
                   "<think>x</think><answer>6</answer> extra",      # wrong, no format
                   wrap("__import__('os')"), wrap("(x+1)^2")]       # rejected; symbolic
    answers, langs = ["x = 5", "x = 5", "x = 5", "x = 5", "x^2 + 2x + 1"], ["en"] * 5
    out = score_batch(completions, answers, langs, terms=("accuracy", "format"))
    assert out["accuracy"] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert out["format"] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert out["reward"] == [2.0, 2.0, 0.0, 1.0, 2.0]  # accuracy + format, R1 §2.2.2
    assert (out["n_rejected"], out["n_failed"], out["n_timeout"]) == (1, 0, 0)
    out = score_batch(completions, answers, langs, terms=TERMS,
                      weights=RewardWeights(accuracy=1.0, format=0.5, lang=0.25))
    assert out["lang"][:2] == [1.0, 0.0]
    assert out["reward"][:2] == [1.75, 1.5]  # 1 + 0.5 + 0.25 * 1, then 1 + 0.5 + 0.25 * 0
    general = score_batch([wrap("Three hundred and ninety-one.", "No working needed."),
                           wrap("391", "No working needed."), wrap("三百九十一", "3 * 100 + 91 = 391")],
                          ["three hundred ninety-one", "three hundred ninety-one", "三百九十一"],
                          ["en", "en", "zh"], terms=TERMS, kinds=["words", "words", "words"])
    assert general["accuracy"] == [1.0, 0.0, 1.0]  # the world's reader: any spelling, never digits
    assert general["needless"] == [0.0, 0.0, 1.0]
    assert general["reward"] == [3.0, 2.0, 1.0 + 1.0 + 0.0 - 0.5]  # the zh chain has no Chinese words
    math = score_batch([wrap("391", "3 * 100 + 91 = 391")], ["391"], ["en"], terms=TERMS)
    assert math["needless"] == [0.0]  # only a general task is charged for a chain
    with pytest.raises(ValueError):
        score_batch(completions, answers[:2], langs)


def test_needless_chain():
    assert needless_chain(wrap("forty-seven", "No working needed.")) == 0.0
    assert needless_chain(wrap("forty-seven", "这题不用计算。")) == 0.0
    assert needless_chain(wrap("47", "4 * 10 + 7 = 47")) == 1.0  # a computation
    assert needless_chain(wrap("47", "Let me work it out step by step and then write the number down in words")) == 1.0
    assert needless_chain(wrap("47", "我一步一步来算，先看十位再看个位然后写下来")) == 1.0  # 20 CJK words
    assert needless_chain("<answer> 47 </answer>") == 0.0
    words = lambda n: wrap("47", " ".join(["word"] * n))
    assert needless_chain(words(12)) == 0.0 and needless_chain(words(13)) == 1.0  # NEEDLESS_WORDS is allowed
    assert needless_chain("4 * 10 = 40 so <answer> 47 </answer>") == 1.0  # no <think>: the text before the answer


def test_score_batch_sums_only_the_named_terms(verify_worker):
    # right answer, good format, half the words Chinese: accuracy 1, format 1, lang 0.5
    completion = wrap("7", "先算 then add")
    weights = RewardWeights(accuracy=1.0, format=0.5, lang=0.25)
    for terms, reward in [(("accuracy",), 1.0), (("format",), 0.5), (("lang",), 0.125),
                          (("format", "lang"), 0.625), (("accuracy", "format", "lang"), 1.625)]:
        out = score_batch([completion], ["7"], ["zh"], terms=terms, weights=weights)
        assert out["reward"] == [reward], terms
        assert (out["accuracy"], out["format"], out["lang"]) == ([1.0], [1.0], [0.5])
    assert score_batch([completion], ["7"], ["zh"])["reward"] == [2.0]  # default: accuracy + format
    assert score_batch([completion], ["7"], ["zh"], terms=TERMS)["reward"] == [2.5]  # weights 1, 1, 1


@pytest.mark.parametrize("terms", [("accuracy", "length"), ("zero",), "accuracy", ()])
def test_score_batch_refuses_unknown_terms(terms):
    with pytest.raises(ValueError, match="accuracy, format, lang, needless"):
        score_batch([wrap("5")], ["5"], ["en"], terms=terms)


def test_cli_scores_one_completion_with_every_term():
    completion = "<think>先算 2*3 then add</think><answer>6</answer>"
    run = subprocess.run([sys.executable, os.path.join(HERE, "rewards.py"), completion, "2*3", "zh"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"answer": "6", "reward": 2.5, "accuracy": 1.0, "format": 1.0,
                                      "lang": 0.5, "needless": 0.0, "n_failed": 0, "n_timeout": 0, "n_rejected": 0}


def test_timeout_counted_in_score_batch(verify_worker, monkeypatch):
    # route score_batch's worker requests to a verdict that never ends: the worker is killed
    real_ask = verify_worker.ask
    monkeypatch.setattr(verify_worker, "ask",
                        lambda op, args, deadline_s: real_ask("sleep", (30,), deadline_s))
    t0 = time.perf_counter()
    out = score_batch([wrap("(x+2)(x+3)")] * 3, ["x^2 + 5x + 6"] * 3, ["en"] * 3, deadline_s=0.2)
    assert out["n_timeout"] == 1 and out["accuracy"] == [0.0] * 3  # judged once per batch
    assert time.perf_counter() - t0 < 2.0
    monkeypatch.undo()
    out = score_batch([wrap("(x+2)(x+3)")], ["x^2 + 5x + 6"], ["en"])
    assert out["accuracy"] == [1.0] and out["n_timeout"] == 0


def test_bad_gold_is_a_failure_not_a_reward(verify_worker):
    out = score_batch([wrap("x + 1")], ["x ++ ? 1"], ["en"])
    assert out["accuracy"] == [0.0] and out["n_failed"] == 1
