"""
Tests of reflect.py and of the checks data.py writes with it: every check is true arithmetic,
a check catches exactly the slips a chain holds, the controls never fix, and reading a response
back counts each kind of check. References: exact arithmetic and hand-written responses.

    python -m pytest test_reflect.py -q
"""
import random

import pytest

import data
import evaluate
import reflect

KINDS = [(k, d) for k in data.KINDS for d in (1, 2, 3)]


def problem(kind, d, seed, slip=None, lang="en"):
    return data.make_problem(random.Random(seed), kind, d, lang, "corpus", slip)


def checks_of(text):
    return list(reflect.CHECK_RE.finditer(text))


@pytest.mark.parametrize("kind,d", KINDS)
def test_clean_chains_pass_every_check(kind, d):
    for seed in range(20):
        for lang in ("en", "zh"):
            p = problem(kind, d, seed, lang=lang)
            text, answer = data.worked(p, lang, "fix")
            assert answer == p.answer
            cs = checks_of(text)
            n_facts = sum(reflect.first_fact(s[0]) is not None for s in p.steps)
            assert len(cs) == n_facts >= len(p.steps) - 1
            for c in cs:  # each check is a true computation that agrees with its step
                a, op, b, r = int(c[1]), c[3], int(c[4]), int(c[5])
                assert reflect.true_value(a, op, b) == r and c[6] is None
            assert reflect.REDO[lang] not in text
            assert dict(reflect.check_outcomes(f"<think> {text} </think>")) == {"confirmed": n_facts}


@pytest.mark.parametrize("kind,d", KINDS)
def test_a_check_catches_each_slip_and_redoes_it(kind, d):
    noop = 0
    for code in data.SLIP_CODES[kind](d):
        for seed in range(10):
            p = problem(kind, d, seed, slip=code)
            clean_steps, clean_answer = p.clean
            if p.steps == clean_steps:  # 0 * 6 cannot slip below 0 (gen_arith): nothing to catch
                noop += 1
                assert data.worked(p, "en", "fix")[0] == data.worked(data.Problem(**{**vars(p), "clean": None}),
                                                                     "en", "fix")[0]
                continue
            # the clean problem is this one done right: every key fact true (a slip may leave the answer:
            # 66 // 8 is 8 as 64 // 8 is, gen_linear)
            for s in clean_steps:
                fact = reflect.first_fact(s[0])
                assert fact is None or reflect.true_value(*fact[:3]) == fact[3]
            text, answer = data.worked(p, "en", "fix")
            assert answer == clean_answer
            assert text.count(": wrong") == 1 and text.count("Redo:") == 1
            # the redone step is the clean one, and the chain goes on from the clean values
            after = text.split("Redo: ")[1]
            i = next(i for i, (s, c) in enumerate(zip(p.steps, clean_steps)) if s != c)
            assert after.startswith(clean_steps[i][0])
            for s in clean_steps[i + 1:]:
                assert s[0] in after
            assert dict(reflect.check_outcomes(text)) == {"fixed": 1, "confirmed": len(checks_of(text)) - 1}
            # the control: the same document restated never catches, and keeps the slipped answer
            text_r, answer_r = data.worked(p, "en", "restate")
            assert answer_r == p.answer and ": wrong" not in text_r and "Redo:" not in text_r
            assert len(checks_of(text_r)) == len(checks_of(text))  # one check per checked step
            assert reflect.check_outcomes(text_r)["missed"] >= 1  # a slip can make a later fact false too
    assert noop <= 2


def test_check_text_by_hand():
    fix = lambda fact, lang="en": reflect.check_text(fact, lang, "fix")
    assert fix((7, "*", 6, 44, "")) == ("Check: 6 * 7 = 42, against 44: wrong.", True)
    assert fix((7, "*", 6, 42, "")) == ("Check: 6 * 7 = 42, against 42: right.", False)
    assert fix((40, "+", 6, 48, "x")) == ("Check: 48x - 6x = 42x, against 40x: wrong.", True)
    assert fix((28, "-", 6, 22, "x")) == ("Check: 22x + 6x = 28x, against 28x: right.", False)
    assert fix((3, "+", -8, -5, "x")) == ("Check: -5x + 8x = 3x, against 3x: right.", False)  # -8 folds into the sign
    assert fix((18, "/", 3, 6, "")) == ("Check: 6 * 3 = 18, against 18: right.", False)
    assert fix((53, "-", 13, 41, ""), "zh") == ("验算：41 + 13 = 54，对照 53：错。", True)
    assert reflect.check_text((7, "*", 6, 44, ""), "en", "restate") == ("Check: 7 * 6 = 44, against 44: right.", False)


def test_check_outcomes_by_hand():
    text = (" <think> 7 * 6 = 42. Check: 6 * 7 = 42, against 42: right. 5 + 9 = 15. Check: 15 - 9 = 6, against 5: "
            "wrong. Redo: 5 + 9 = 14. 3 * 4 = 13. Check: 4 * 3 = 12, against 13: wrong. Redo: 3 * 4 = 11. 2 * 2 = 5. "
            "Check: 2 * 2 = 4, against 5: wrong. Redo: 2 * 2 = 4. 8 + 1 = 9. Check: 9 - 1 = 7, against 8: wrong. "
            "Redo: 8 + 1 = 9. 6 * 6 = 37. Check: 6 * 6 = 37. 9 * 9 = 81. Check: 9 * 9 = 81. Check: 9 * 9 = 81, "
            "against 81: right. Check: 9 * 9 = 81. Check: 1 + 1 = 2. </think> <answer> 1 </answer> "
            "Check: 6 * 7 = 42.")
    assert reflect.check_outcomes(text) == {"confirmed": 3, "fixed": 2, "failed": 1, "broke": 1, "missed": 1,
                                            "looped": 1, "unmatched": 1}
    assert reflect.has_check(text) and not reflect.has_check(" <think> 7 * 6 = 42. </think> Check: 6 * 7 = 42.")
    assert reflect.has_check(" <think> 我一步一步来算。验算：6 * 7 = 42，对照 42：对。</think>")


def test_reflection_summary():
    texts = [" <think> 7 * 6 = 44. Check: 6 * 7 = 42, against 44: wrong. Redo: 7 * 6 = 42. </think>",
             " <think> 7 * 6 = 42. Check: 6 * 7 = 42, against 42: right. </think>", " <think> I know this one. </think>",
             " <think> 7 * 6 = 41. </think>"]
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
    slipped = [d for d in docs if ": wrong" in d or "：错" in d]
    assert abs(len(slipped) / sum(map(marked, docs)) - cfg.p_check_slip) < 0.05


def test_reading_edges_by_hand():
    """The edges of check_outcomes: a negative operand folds into the sign of a sum's check, a
    fact written inside a check is not a step, a third check of one fact is a loop, and a redo
    is the first fact after the check, never one before it."""
    assert reflect.binary(5, "+", -8, "x") == "5x - 8x" and reflect.binary(5, "-", -8, "") == "5 + 8"
    assert reflect.binary(5, "+", 0, "") == "5 + 0" and reflect.binary(5, "-", 8, "") == "5 - 8"
    # a sum with a negative term: the check is found and the step confirmed
    text = "<think> 3x + -8x = -5x. Check: -5x + 8x = 3x, against 3x: right. </think>"
    assert reflect.check_outcomes(text) == {"confirmed": 1}
    # "6 * 7 = 42" inside the first check is not a step the second check could be the check of
    text = "<think> 7 * 6 = 44. Check: 6 * 7 = 42, against 44: wrong. Check: 7 * 6 = 42, against 42: right. </think>"
    assert reflect.check_outcomes(text) == {"failed": 1, "missed": 1}
    # two checks of one fact are not a loop; the third is
    two = "<think> 7 * 6 = 42. Check: 6 * 7 = 42, against 42: right. Check: 6 * 7 = 42, against 42: right."
    assert reflect.check_outcomes(two) == {"confirmed": 2}
    assert reflect.check_outcomes(two + " Check: 6 * 7 = 42. </think>") == {"confirmed": 2, "looped": 1}
    # the redo must follow the check: a right fact before it does not count as the fix
    text = "<think> 2 * 3 = 6. 7 * 6 = 44. Check: 6 * 7 = 42, against 44: wrong. Redo: 7 * 6 = 43. </think>"
    assert reflect.check_outcomes(text) == {"failed": 1}
    text = "<think> 7 * 6 = 42. 7 * 6 = 44. Check: 6 * 7 = 42, against 44: wrong. 1 + 1 = 2. </think>"
    assert reflect.check_outcomes(text) == {"failed": 1}
    # a check is paired with the nearest fact before it, the one whose recomputation it is
    text = "<think> 7 * 6 = 44. 9 + 1 = 10. Check: 10 - 1 = 9, against 9: right. </think>"
    assert reflect.check_outcomes(text) == {"confirmed": 1}
