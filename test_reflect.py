"""
Tests of reflect.py and of the checks data.py writes with it: every check is true arithmetic,
a check catches exactly the slips a chain holds, the controls never fix, and reading a response
back counts each kind of check. References: exact arithmetic and hand-written responses.

    python -m pytest test_reflect.py -q
"""
import random
import re
import statistics
import types
from collections import Counter

import pytest

import data
import evaluate
import reflect
import tokenizer

KINDS = [(k, d) for k in data.KINDS for d in (1, 2, 3)]


def problem(kind, d, seed, slip=None, lang="en"):
    return data.make_problem(random.Random(seed), kind, d, lang, "corpus", slip)


def checks_of(text):
    return list(reflect.CHECK_RE.finditer(text))


def stripped(text, lang="en"):
    """A checked chain with its checks taken out: the chain as it reads without them."""
    end, comma = reflect.END[lang], reflect.COMMA[lang]
    return re.sub(re.escape(end + reflect.SEP[lang]) + reflect.CHECK_RE.pattern + "(?:" + re.escape(comma) + ")?",
                  lambda m: comma if m.group(0).endswith(comma) else "", text)


@pytest.mark.parametrize("kind,d", KINDS)
def test_clean_chains_pass_every_check(kind, d):
    for seed in range(20):
        for lang in ("en", "zh"):
            p = problem(kind, d, seed, lang=lang)
            text, answer = data.worked(p, lang, "fix")
            assert answer == p.answer
            steps = [s[lang == "zh"] for s in p.steps]
            assert stripped(text, lang) == " ".join(steps)  # the checks are inserted, nothing else changes
            cs = checks_of(text)
            checked = [reflect.checkable(s)[0] for s in steps if reflect.checkable(s)]
            assert len(cs) == len(checked) >= 1 and (kind != "arith" or len(cs) == len(steps))
            for c, m in zip(cs, checked):  # each check reaches its step's (true) value
                assert int(c[5]) == int(m[5]) == reflect.true_value(*reflect.fact_of(m)[:3])
            assert reflect.check_outcomes(f"<think> {text} </think>") == {"confirmed": len(cs)}


@pytest.mark.parametrize("kind,d", KINDS)
def test_a_check_catches_each_slip_and_the_chain_goes_on_from_it(kind, d):
    noop = 0
    for code in data.SLIP_CODES[kind](d):
        for seed in range(10):
            p = problem(kind, d, seed, slip=code)
            clean_steps, clean_answer = p.clean
            if p.steps == clean_steps:  # 0 + 0 cannot slip below 0 (gen_arith): nothing to catch
                noop += 1
                continue
            # the clean problem is this one done right: every checked fact true
            for s in clean_steps:
                for m in reflect.checkable(s[0]):
                    assert reflect.true_value(*reflect.fact_of(m)[:3]) == int(m[5])
            text, answer = data.worked(p, "en", "fix")
            assert answer == clean_answer
            assert reflect.check_outcomes(text) == Counter(fixed=1, confirmed=len(checks_of(text)) - 1)
            # the slipped step up to its sum, the check, then the clean step's rest and the clean chain
            i = next(i for i, (s, c) in enumerate(zip(p.steps, clean_steps)) if s != c)
            slipped, clean = p.steps[i][0], clean_steps[i][0]
            m, mc = reflect.checkable(slipped)[0], reflect.checkable(clean)[0]
            assert int(m[5]) != int(mc[5])
            head, tail = text.split(slipped[:m.end()] + ". Check: ")
            before = [s[0] for s in clean_steps[:i]]  # (the steps before the slip are its clean twin's)
            assert head == reflect.checked_chain(before, before, "en", "fix")[0] + " " * (i > 0)
            check = reflect.CHECK_RE.match("Check: " + tail)
            assert int(check[5]) == int(mc[5])  # the check reaches the clean value...
            after, rest = ("Check: " + tail)[check.end():], clean[mc.end():]
            # ...and the step goes on from it
            assert after.startswith(rest if rest.startswith(".") else ", " + rest.lstrip(", "))
            assert stripped(after).endswith(" ".join(s[0] for s in clean_steps[i:])[len(clean):])  # so does the chain
            # the control: the same document restated never catches, and keeps the slipped answer
            text_r, answer_r = data.worked(p, "en", "restate")
            assert answer_r == p.answer and stripped(text_r) == " ".join(s[0] for s in p.steps)
            assert len(checks_of(text_r)) == len(checks_of(text))
            assert reflect.check_outcomes(text_r)["missed"] == 1 and reflect.check_outcomes(text_r)["fixed"] == 0
    assert noop <= 2


def test_columns_are_table_facts_that_compose_the_result():
    rng = random.Random(0)
    pairs = [(rng.randint(0, 999), rng.randint(0, 999)) for _ in range(300)] + [(100, 1), (13, 8), (95, 7), (4, 12)]
    for a, b in pairs:
        for op in "+-":
            x, y = (a, b) if op == "+" or a >= b else (b, a)
            cols = reflect.columns(x, op, y, "en").split(", ")
            digits = []
            for col in cols:  # each column a true fact of one-digit terms (a borrowed ten, a carry of 1)
                lhs, r = col.split(" = ")
                terms = [int(v) for v in re.split(r" [-+] ", lhs)]
                assert int(r) == (sum(terms) if op == "+" else terms[0] - sum(terms[1:]))
                assert all(v <= 9 for v in terms[1:]) and terms[0] <= (9 if op == "+" else 19)
                digits.append(int(r) % 10)
            carry = int(cols[-1].split(" = ")[1]) // 10 if op == "+" else 0
            assert int(str(carry) + "".join(map(str, digits[::-1]))) == reflect.true_value(x, op, y)
    assert reflect.columns(35, "+", 28, "en") == "5 + 8 = 13, 3 + 2 + 1 = 6"
    assert reflect.columns(100, "-", 1, "zh") == "10 - 1 = 9，10 - 0 - 1 = 9，1 - 0 - 1 = 0"


def test_check_text_by_hand():
    fix = lambda fact, lang="en": reflect.check_text(fact, lang, "fix")
    assert fix((40, "+", 6, 48, "x")) == ("Check: 40x + 6x: 0 + 6 = 6, 4 + 0 = 4, so 46x", 46)
    assert fix((-14, "-", 5, -21, "x")) == ("Check: 14x + 5x: 4 + 5 = 9, 1 + 0 = 1, so -19x", -19)  # one sign
    assert fix((20, "-", 4, 16, "x")) == ("Check: 20x - 4x: 10 - 4 = 6, 2 - 0 - 1 = 1, so 16x", 16)
    assert fix((3, "+", -8, 5, "x")) == ("Check: 8x - 3x: 8 - 3 = 5, so -5x", -5)  # the larger term's sign
    assert fix((3, "-", -8, 11, "")) == ("Check: 3 + 8: 8 + 3 = 11, so 11", 11)  # 3 - -8 is 3 + 8
    assert fix((8, "-", 8, 1, "x")) == ("Check: 8x - 8x: 8 - 8 = 0, so 0x", 0)
    assert fix((42, "+", 0, 43, "")) == ("Check: 42 + 0 = 42", 42)  # nothing to do in columns
    assert fix((0, "+", 7, 7, "")) == ("Check: 0 + 7: 7 + 0 = 7, so 7", 7)  # (a carry onto a 0 product, gen_arith)
    assert fix((-6, "+", 0, -6, "x")) == ("Check: -6x + 0x = -6x", -6)
    # 0 goes with the positive numbers: 42 + 0 adds, -6 + 0 takes 0 away from 6 (so a check that
    # writes "6x - 0x" is the check of -6x + 0x, and "6x + 0x" is not)
    assert reflect.recompute((42, "+", 0, 42, "")) == (42, "+", 0, 42)
    assert reflect.recompute((-6, "+", 0, -6, "")) == (6, "-", 0, -6)
    assert reflect.recompute((0, "-", 5, -5, "")) == (5, "-", 0, -5)
    assert fix((53, "-", 13, 41, ""), "zh") == ("验算：53 - 13：3 - 3 = 0，5 - 1 = 4，所以 40", 40)
    assert reflect.check_text((12, "+", 4, 15, ""), "en", "restate") == ("Check: 12 + 4 = 15", 15)
    assert reflect.check_text((3, "+", -8, 5, "x"), "en", "restate") == ("Check: 3x - 8x = 5x", 5)


def test_check_outcomes_by_hand():
    text = (" <think> 12 + 4 = 15. Check: 12 + 4: 2 + 4 = 6, 1 + 0 = 1, so 16, so 27 * 6 = 162. "  # fixed
            "5 + 9 = 14. Check: 5 + 9: 5 + 9 = 14, so 14. "                                        # confirmed
            "8 + 1 = 10. Check: 8 + 1: 8 + 1 = 10, so 10. "                                        # missed
            "3x - 8x = -5x. Check: 8x - 3x: 8 - 3 = 6, so -6x. "                                   # broke
            "7 + 7 = 14. Check: 7 + 7 = 14. Check: 7 + 7: 7 + 7 = 14, so 14. Check: 7 + 7 = 14. "  # 2 confirmed, looped
            "Check: 1 + 1 = 2. 6 * 6 = 36. Check: 6 * 6 = 36. </think> <answer> 1 </answer> Check: 6 + 7 = 13.")
    assert reflect.check_outcomes(text) == {"fixed": 1, "confirmed": 3, "missed": 1, "broke": 1, "looped": 1,
                                            "unmatched": 2}  # 1 + 1 is no step, a product is never checked
    assert reflect.has_check(text) and not reflect.has_check(" <think> 7 + 6 = 13. </think> Check: 6 + 7 = 13.")
    assert reflect.has_check(" <think> 我一步一步来算。验算：6 + 7：6 + 7 = 13，所以 13。</think>")


def test_reflection_summary():
    texts = [" <think> 7 + 6 = 14. Check: 7 + 6: 7 + 6 = 13, so 13. </think>",
             " <think> 7 + 6 = 13. Check: 7 + 6: 7 + 6 = 13, so 13. </think>", " <think> I know this one. </think>",
             " <think> 7 + 6 = 12. </think>"]
    res = evaluate.reflection_summary(texts, [1.0, 0.0, 1.0, 0.0])
    assert res["reflection_rate"] == 0.5 and res["n_with_reflection"] == 2
    assert res["accuracy_with_reflection"] == 0.5 and res["accuracy_without_reflection"] == 0.5
    assert (res["checks_fixed"], res["checks_confirmed"], res["checks_missed"]) == (1, 1, 0)
    none = evaluate.reflection_summary(texts[2:], [1.0, 1.0])
    assert none["reflection_rate"] == 0 and none["accuracy_with_reflection"] is None


def test_corpus_without_checks_is_the_world_before_them():
    """check_mode none draws nothing: its corpus does not depend on the check settings, and no
    document holds a check; the other modes write the same documents apart from the checks."""
    base = dict(n_docs=2000, seed=3)
    none = data.build_corpus(data.DataConfig(**base))
    assert none == data.build_corpus(data.DataConfig(**base, p_check=0.9, p_template_check=0.9, p_check_slip=0.9))
    assert not any(reflect.has_check(f"<think>{d}") for d in none)
    fix = data.build_corpus(data.DataConfig(**base, check_mode="fix"))
    restate = data.build_corpus(data.DataConfig(**base, check_mode="restate"))
    question = lambda d: d.split("\n")[:2] if "<think>" in d else d.split("\n")[0]
    assert list(map(question, fix)) == list(map(question, restate))  # the same problems, in the same order
    marked = lambda d: any(m in d for m in reflect.CHECK.values())
    assert [marked(d) for d in fix] == [marked(d) for d in restate] and sum(map(marked, fix)) > 100


def test_checks_are_rare_under_the_template():
    cfg = data.DataConfig(n_docs=20_000, check_mode="fix")
    docs = data.build_corpus(cfg)
    chains = [d for d in docs if "<think>" in d and any(o in d for o in data.CHAIN_OPENER.values())]
    plain = [d for d in docs if "<think>" not in d and ("Solution: " in d or "解答：" in d)]
    marked = lambda d: any(m in d for m in reflect.CHECK.values())  # (the template's own text holds </think>)
    rate = lambda ds: sum(map(marked, ds)) / len(ds)
    assert abs(rate(chains) - cfg.p_template_check) < 0.03
    careful = cfg.p_chain / (cfg.p_chain + cfg.p_slip + cfg.p_switch)  # the plain chains that may check
    assert abs(rate(plain) - cfg.p_check * careful) < 0.02
    response = lambda d: re.split("Assistant:|助手：", d)[-1]  # (the template's prompt holds a </think>)
    slipped = [d for d in docs if reflect.check_outcomes(response(d))["fixed"]]  # a check reaching another value
    assert abs(len(slipped) / sum(map(marked, docs)) - cfg.p_check_slip) < 0.05



def test_reading_edges_by_hand():
    """The edges of check_outcomes: a negative operand folds into the sign, a fact written inside
    a check is not a step, a third check of one fact is a loop, and a check is paired with the
    nearest step before it whose terms it works with."""
    assert reflect.binary(5, "+", -8, "x") == "5x - 8x" and reflect.binary(5, "-", -8, "") == "5 + 8"
    assert reflect.binary(5, "+", 0, "") == "5 + 0" and reflect.binary(5, "-", 8, "") == "5 - 8"
    # a sum with a negative term: the check works with magnitudes and is found
    text = "<think> 3x + -8x = -5x. Check: 8x - 3x: 8 - 3 = 5, so -5x. </think>"
    assert reflect.check_outcomes(text) == {"confirmed": 1}
    # "7 + 6 = 13" inside the first check is not a step the second check could be the check of
    text = "<think> 7 + 6 = 12. Check: 7 + 6: 7 + 6 = 13, so 13. Check: 7 + 6: 7 + 6 = 13, so 13. </think>"
    assert reflect.check_outcomes(text) == {"fixed": 2}
    # two checks of one fact are not a loop; the third is
    two = "<think> 7 + 6 = 13. Check: 7 + 6 = 13. Check: 7 + 6 = 13."
    assert reflect.check_outcomes(two) == {"confirmed": 2}
    assert reflect.check_outcomes(two + " Check: 7 + 6 = 13. </think>") == {"confirmed": 2, "looped": 1}
    # paired with the nearest fact before it that it can be the check of
    text = "<think> 9 + 1 = 11. 7 * 6 = 44. 9 + 1 = 10. Check: 9 + 1: 9 + 1 = 10, so 10. </think>"
    assert reflect.check_outcomes(text) == {"confirmed": 1}
    # a check written right against its step (no full stop between) is still its check
    text = "<think> 12 + 4 = 15Check: 12 + 4: 2 + 4 = 6, 1 + 0 = 1, so 16. </think>"
    assert reflect.check_outcomes(text) == {"fixed": 1}
    # a check is never of a fact after it
    assert reflect.check_outcomes("<think> Check: 9 + 1 = 10. 9 + 1 = 10. </think>") == {"unmatched": 1}


def checked_encoding():
    """A BPE trained on checked chains of both languages, so that the marker's words become tokens
    (in context: " Check", "。验算：")."""
    texts = [data.worked(problem(kind, d, seed, lang=lang), lang, "fix")[0]
             for kind, d in KINDS for seed in range(3) for lang in ("en", "zh")]
    return tokenizer.make_encoding(tokenizer.train_bpe(texts, 400)), texts


def test_marker_tokens_are_the_tokens_that_write_a_marker():
    enc, texts = checked_encoding()
    ban = reflect.marker_tokens(enc)
    words = ("Check".encode(), "验算".encode())
    assert ban and all(any(w in enc.decode_single_token_bytes(i) for w in words) for i in ban)
    assert enc.eot_token not in ban
    for text in texts:  # every checked chain, as the corpus tokenizes it, writes its markers with banned tokens
        ids = enc.encode_ordinary(text)
        n_markers = sum(text.count(m) for m in reflect.CHECK.values())
        assert n_markers >= 1 and sum(i in ban for i in ids) == n_markers
    assert not any(i in ban for i in enc.encode_ordinary(" <think> 7 + 6 = 13. Chess is checked. </think>"))


class Scripted:
    """A stand-in model. On the problems it checks it writes a checked chain and the right answer,
    unless the tokens of that chain are banned: then it answers wrong, without a check (as a
    model that needs its check). On the others it answers right without a check."""
    training = False

    def __init__(self, enc, problems, checks):
        self.enc, self.by_prompt = enc, {p.prompt: (p, c) for p, c in zip(problems, checks)}

    def eval(self):
        pass

    def train(self, mode=True):
        pass

    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, ban=(), generator=None):
        assert temperature == 0  # greedy
        out = []
        for ids in prompts:
            p, check = self.by_prompt[self.enc.decode(ids)]
            chain = " 7 + 6 = 13. Check: 7 + 6: 7 + 6 = 13, so 13." if check else " 7 + 6 = 13."
            text = f" <think>{chain} </think> <answer> {p.answer} </answer>"
            if set(self.enc.encode_ordinary(text)) & set(ban):
                text = " <think> 7 + 6 = 13. </think> <answer> 12345678 </answer>"
            out.append(self.enc.encode_ordinary(text) + [eot])
        return out


def test_checks_banned_answers_the_same_problems_without_checks():
    enc, _ = checked_encoding()
    problems = data.rl_problems(data.DataConfig(n_docs=100, seed=5), 8, seed=6)
    checks = [True, True, True, False] * 2
    model = Scripted(enc, problems, checks)
    texts, _ = evaluate.respond(model, enc, problems, 64)
    free = evaluate.reflection_summary(texts, evaluate.score(texts, problems)["accuracy"])
    assert free["reflection_rate"] == 0.75 and free["accuracy_with_reflection"] == 1.0
    got = evaluate.checks_banned(model, enc, problems, 64, [reflect.has_check(t) for t in texts])
    assert got == {"accuracy_checks_banned": 0.25, "accuracy_with_reflection_checks_banned": 0.0,
                   "format_rate_checks_banned": 1.0, "reflection_rate_checks_banned": 0.0}


KIND_SUFFIXES = tuple(f"_{k}{d}" for k in data.KINDS for d in (1, 2, 3))


class Sampler(Scripted):
    """A stand-in sampler: sample j of problem i answers bare when bare[i](j), else writes a chain
    that checks when checks[i](j); it is right when right[i](j)."""

    def __init__(self, enc, problems, checks, right, bare):
        self.enc, self.by_prompt, self.seen = enc, {p.prompt: (i, p) for i, p in enumerate(problems)}, Counter()
        self.checks, self.right, self.bare = checks, right, bare

    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, ban=(), generator=None):
        assert temperature == 1.0 and generator is not None  # sampled, not greedy
        out = []
        for ids in prompts:
            i, p = self.by_prompt[self.enc.decode(ids)]
            j = self.seen[i]
            self.seen[i] += 1
            chain = " 7 + 6 = 13. Check: 7 + 6: 7 + 6 = 13, so 13." if self.checks[i](j) else " 7 + 6 = 13."
            think = " I know this one." if self.bare[i](j) else chain
            answer = p.answer if self.right[i](j) else "12345678"
            out.append(self.enc.encode_ordinary(f" <think>{think} </think> <answer> {answer} </answer>") + [eot])
        return out


def test_checks_sampled_compares_chains_of_the_same_problems():
    enc, _ = checked_encoding()
    problems = data.rl_problems(data.DataConfig(n_docs=100, seed=5), 5, seed=6)
    checks = [lambda j: j % 2 == 0, lambda j: j == 0, lambda j: True, lambda j: False, lambda j: j == 0]
    right = [lambda j: j != 3, lambda j: j > 0, lambda j: True, lambda j: False, lambda j: True]
    bare = [lambda j: j == 3, lambda j: False, lambda j: False, lambda j: j > 0, lambda j: j > 0]
    model = Sampler(enc, problems, checks, right, bare)
    got = evaluate.checks_sampled(model, enc, problems, 64, k=4)
    # problem 0: its checked chains (samples 0, 2) right, its unchecked chain (1) right, and a bare wrong
    # answer (3) that is no chain; problem 1: its one checked chain wrong, its 3 unchecked ones right.
    # Problems 2 (all check), 3 (none checks) and 4 (its only unchecked samples are bare) are not compared.
    # Each problem weighs the same.
    # The gaps (with - without) are 0 and -1: standard error stdev / sqrt(2) = 0.5.
    assert {k: v for k, v in got.items() if not k.endswith(KIND_SUFFIXES)} == {
        "reflection_rate_sampled": 8 / 20, "n_mixed_sampled": 2, "accuracy_with_reflection_sampled": 0.5,
        "accuracy_without_reflection_sampled": 1.0, "accuracy_gain_sampled_se": pytest.approx(0.5)}
    assert model.seen == {i: 4 for i in range(5)}
    # per kind: the same figures over the problems of that kind alone
    kind = [f"{p.kind}{p.difficulty}" for p in problems]
    for kd in set(kind):
        compared = [(w, wo) for i, (w, wo) in ((0, (1.0, 1.0)), (1, (0.0, 1.0))) if kind[i] == kd]
        assert got[f"n_mixed_sampled_{kd}"] == len(compared)
        assert got[f"accuracy_with_reflection_sampled_{kd}"] == (evaluate.mean(w for w, _ in compared) if compared else None)
        assert got[f"accuracy_without_reflection_sampled_{kd}"] == (evaluate.mean(wo for _, wo in compared)
                                                                  if compared else None)
    assert len(got) == 5 + 3 * len(set(kind))
    one = evaluate.checks_sampled(Sampler(enc, problems[1:], checks[1:], right[1:], bare[1:]), enc, problems[1:], 64, k=4)
    assert one["n_mixed_sampled"] == 1 and one["accuracy_gain_sampled_se"] is None  # no spread from one problem
    three = [lambda j: j % 2 == 0, lambda j: j == 0, lambda j: j < 2]  # gaps 0, -1 and 1 - 1/2
    got = evaluate.checks_sampled(Sampler(enc, problems[:3], three, [lambda j: True, lambda j: j > 0, lambda j: j < 3],
                                          [lambda j: False] * 3), enc, problems[:3], 64, k=4)
    assert got["accuracy_gain_sampled_se"] == pytest.approx(statistics.stdev([0, -1, 0.5]) / 3 ** 0.5)
    never = [lambda j: False] * 5
    none = evaluate.checks_sampled(Sampler(enc, problems, never, right, never), enc, problems, 64, k=4)
    assert {k: v for k, v in none.items() if not k.endswith(KIND_SUFFIXES)} == {
        "reflection_rate_sampled": 0.0, "n_mixed_sampled": 0, "accuracy_with_reflection_sampled": None,
        "accuracy_without_reflection_sampled": None, "accuracy_gain_sampled_se": None}
    assert all(none[f"n_mixed_sampled_{kd}"] == 0 for kd in kind)


def test_checks_sampled_draws_32_samples_from_a_seed_of_its_own_per_rank(monkeypatch):
    enc, _ = checked_encoding()
    problems = data.rl_problems(data.DataConfig(n_docs=100, seed=5), 2, seed=6)
    seeds = []

    class Seeded(Sampler):
        def generate(self, prompts, *args, generator=None, **kw):
            seeds.append(generator.initial_seed())
            return super().generate(prompts, *args, generator=generator, **kw)

    real = evaluate.dist  # rank 3 for the seed; the sharding and gathering of one process
    monkeypatch.setattr(evaluate, "dist", types.SimpleNamespace(rank=lambda: 3, my_share=real.my_share, gather=real.gather))
    model = Seeded(enc, problems, [lambda j: j % 2] * 2, [lambda j: True] * 2, [lambda j: False] * 2)
    evaluate.checks_sampled(model, enc, problems, 64)
    assert model.seen == {0: 32, 1: 32} and set(seeds) == {3}  # seed 0 + rank 3
    evaluate.checks_sampled(model, enc, problems, 64, seed=10)
    assert set(seeds) == {3, 13}


def test_full_eval_samples_the_checks_of_probed_stages_in_a_world_with_checks(monkeypatch):
    enc, _ = checked_encoding()

    class Fixed(Scripted):  # one checked chain for every prompt
        def __init__(self):
            pass

        def generate(self, prompts, max_new_tokens, eot, temperature=1.0, ban=(), generator=None):
            assert temperature == 0  # greedy
            text = " <think> 7 + 6 = 13. Check: 7 + 6: 7 + 6 = 13, so 13. </think> <answer> 13 </answer>"
            return [enc.encode_ordinary(text) + [eot] for _ in prompts]

    calls, banned = [], []
    monkeypatch.setattr(evaluate, "forced_openings", lambda *a: {})
    monkeypatch.setattr(evaluate, "checks_banned", lambda *a: banned.append(a[2]) or {})
    monkeypatch.setattr(evaluate, "checks_sampled", lambda *a, **kw: calls.append(a[2]) or {"n_mixed_sampled": 0})
    for mode, probes, sampled in (("none", True, 0), ("fix", False, 0), ("restate", True, 1), ("fix", True, 1)):
        cfgs = {"data": data.DataConfig(n_heldout=8, n_heldout_general=4, check_mode=mode),
                "train": types.SimpleNamespace(eval_new_tokens=32)}
        calls.clear(), banned.clear()
        res = evaluate.full_eval(Fixed(), enc, cfgs, probes=probes)
        assert res["reflection_rate"] == 1.0 and len(calls) == sampled and ("n_mixed_sampled" in res) == bool(sampled)
        assert len(banned) == probes  # every response checks: the ban probe runs wherever probes do
        assert all(len(c) == 8 for c in calls + banned)  # the held-out problems


def test_the_reports_sampled_line():
    ev = {"reflection_rate_sampled": 0.3, "n_mixed_sampled": 20, "accuracy_with_reflection_sampled": 0.75,
          "accuracy_without_reflection_sampled": 0.5, "accuracy_gain_sampled_se": 0.125,
          "n_mixed_sampled_arith1": 0, "accuracy_with_reflection_sampled_arith1": None,
          "accuracy_without_reflection_sampled_arith1": None, "n_mixed_sampled_frac1": 5,
          "accuracy_with_reflection_sampled_frac1": 0.2, "accuracy_without_reflection_sampled_frac1": 0.6,
          "n_mixed_sampled_poly2": 15, "accuracy_with_reflection_sampled_poly2": 0.9,
          "accuracy_without_reflection_sampled_poly2": 0.8}
    assert evaluate.sampled_line("zero", ev) == (
        "zero, sampled at temperature 1: 30.0% of samples check a step; on the 20 problems where some of its chains "
        "check and some do not, right 75.0% with a check, 50.0% without (the gap's standard error: 12.5 points); by kind, "
        "with / without (problems): frac1 20.0% / 60.0% (5), poly2 90.0% / 80.0% (15).")
    # an eval.json of before the standard error and the kinds, or of one problem compared
    old = {k: ev[k] for k in list(ev)[:4]}
    assert evaluate.sampled_line("base", old) == (
        "base, sampled at temperature 1: 30.0% of samples check a step; on the 20 problems where some of its chains "
        "check and some do not, right 75.0% with a check, 50.0% without.")
    assert evaluate.sampled_line("base", dict(old, accuracy_gain_sampled_se=None)) == evaluate.sampled_line("base", old)


def test_reasoning_summary_has_an_accuracy_per_kind_of_problem():
    problems = [problem(kind, d, seed, lang=("en", "zh", "en")[seed]) for kind, d in (("arith", 1), ("poly", 2))
                for seed in range(3)]
    right = [True, False, True, True, False, False]  # en (problems 0, 2, 3, 5): 3 of 4 right, zh: 0 of 2
    texts = [f" <think> x </think> <answer> {p.answer if r else '12345678'} </answer>" for p, r in zip(problems, right)]
    got = evaluate.reasoning_summary(problems, texts, [5] * 6)
    assert got["accuracy"] == 0.5 and evaluate.kind_label(problems[3]) == "poly2"
    assert got["accuracy_en"] == 0.75 and got["accuracy_zh"] == 0.0
    assert {k: v for k, v in got.items() if k.startswith("accuracy_") and k[-1].isdigit()} == {
        "accuracy_arith1": pytest.approx(2 / 3), "accuracy_poly2": pytest.approx(1 / 3)}
