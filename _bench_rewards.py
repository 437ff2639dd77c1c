# bench.py group `rewards`: how fast rule rewards judge a GRPO-sized batch.
# Run: python _bench_rewards.py   (bench.py imports bench_rewards())
import random
import time
from fractions import Fraction

import rewards

ADVERSARIAL = ["__import__('os').system('ls')", "9^9^9^9", "1000000!", "(x+1)^100000", "nan",
               "1" * 100_000, "(" * 500 + "1" + ")" * 500, "lambda: 1", "５", "zoo", "3 or 4"]
THINK = {"en": "First work out each part step by step, then combine the partial results.",
         "zh": "先逐步算出每一部分，再把中间结果合起来。"}


def _problem(rng):
    """(gold, [equivalent forms], [wrong answers]) in the toy world's formats."""
    kind = rng.choice(["arith", "linear", "poly", "frac"])
    if kind == "arith":
        v = rng.randint(10, 99) * rng.randint(2, 9) + rng.randint(-50, 50)
        return str(v), [f"{v}.", f"\\boxed{{{v}}}", f"{v}。"], [str(v + rng.choice([-10, -1, 1, 2]))]
    if kind == "linear":
        q = rng.randint(-20, 20)
        return f"x = {q}", [str(q), f"x={q}", f"\\boxed{{x = {q}}}"], [f"x = {q + 1}", f"y = {q}"]
    if kind == "poly":
        c, a, b = rng.randint(1, 5), rng.randint(-9, 9), rng.randint(-9, 9)
        gold = f"{c}x^2 + {c * (a + b)}x + {c * a * b}".replace("+ -", "- ")
        factored = f"{c}(x + {a})(x + {b})".replace("+ -", "- ")
        wrong = [f"{c}x^2 + {c * (a + b) + 1}x + {c * a * b}", f"{c}(x + {a})(x - {b + 1})"]
        return gold, [factored, gold.replace(" ", "")], wrong
    f = Fraction(rng.randint(1, 30), rng.randint(2, 30))
    p, q = f.numerator, f.denominator  # the gold is reduced
    forms = [f"{2 * p}/{2 * q}", f"\\frac{{{p}}}{{{q}}}"]
    if 10**6 % q == 0:
        forms.append(str(p / q))  # a terminating decimal: 0.5 for 1/2
    return f"{p}/{q}", forms, [f"{p}/{q + 1}", f"{p + 1}/{q}"]


def make_batch(n=1000, seed=0):
    """n completions of independent problems: right, right in another form, wrong, badly
    formatted and adversarial, in both languages."""
    rng = random.Random(seed)
    completions, golds, langs = [], [], []
    for _ in range(n):
        gold, same, wrong = _problem(rng)
        lang, r = rng.choice(["en", "zh"]), rng.random()
        answer = (gold if r < 0.35 else rng.choice(same) if r < 0.55 else rng.choice(wrong)
                  if r < 0.8 else rng.choice(ADVERSARIAL) if r < 0.9 else gold)
        text = f" <think> {THINK[lang]} </think> <answer> {answer} </answer>"
        if r >= 0.9:  # badly formatted: no think block, trailing text, or two answers
            text = rng.choice([f"<answer>{answer}</answer>", text + " Done.",
                               text + f"<answer>{answer}</answer>"])
        completions.append(text)
        golds.append(gold)
        langs.append(lang)
    return completions, golds, langs


def bench_rewards(n=1000, seed=0) -> dict:
    """rewards.verdicts_per_s: a 1,000-completion batch through score_batch (worker already
    running, as in training); rewards.p99_ms: 99th percentile of one completion scored alone."""
    completions, golds, langs = make_batch(n, seed)
    rewards.score_batch(completions[:20], golds[:20], langs[:20])  # start the worker (once per run)
    t0 = time.perf_counter()
    rewards.score_batch(completions, golds, langs, stage="rl1")
    batch_s = time.perf_counter() - t0
    times = []  # one completion at a time, no batch cache: the latency of a single verdict
    for c, g, lang in zip(completions, golds, langs):
        t = time.perf_counter()
        rewards.score_batch([c], [g], [lang], stage="rl1")
        times.append(time.perf_counter() - t)
    times.sort()
    return {"rewards.verdicts_per_s": round(n / batch_s, 1),
            "rewards.p99_ms": round(1000 * times[int(0.99 * (n - 1))], 3),
            "rewards.batch_s": round(batch_s, 3)}


if __name__ == "__main__":
    for key, value in bench_rewards().items():
        print(f"{key:24s} {value}")
