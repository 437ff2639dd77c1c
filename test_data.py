"""
Tests of data.py: the toy world (problems, splits, corpus, general tasks, cold start) and the
tokenizer. References: exact arithmetic, the writers' inverse readers, hand-written answers.

    python -m pytest test_data.py -q
"""
import base64
import dataclasses
import random
import re
from collections import Counter
from fractions import Fraction

import pytest

import data
import reflect
import rewards
import tokenizer


@pytest.fixture(scope="module")
def small_world():
    cfg = data.DataConfig(n_docs=1500, bpe_docs=300, vocab_size=512, n_heldout=100)
    corpus = data.build_corpus(cfg)
    return cfg, corpus, data.build_tokenizer(cfg, corpus)


def test_same_seed_same_corpus():
    a = data.build_corpus(data.DataConfig(n_docs=300, seed=5))
    b = data.build_corpus(data.DataConfig(n_docs=300, seed=5))
    c = data.build_corpus(data.DataConfig(n_docs=300, seed=6))
    assert a == b and a != c


def test_heldout_never_in_training_data(small_world):
    cfg, corpus, _ = small_world
    text = "\n".join(corpus)
    held = data.heldout_problems(cfg)
    rl = data.rl_problems(cfg, 300, seed=3)
    assert {p.key for p in held}.isdisjoint({p.key for p in rl})
    for p in held:  # the question, in either language, never occurs in the pretraining corpus
        assert p.question not in text, p.question
        assert data.split_of(p.kind, p.key) == "heldout"
    # both phrasings of every held-out problem are absent too (the key decides, not the language)
    for p in held[:50]:
        other = data.make_problem(random.Random(1), p.kind, p.difficulty, "zh" if p.lang == "en" else "en", "heldout")
        assert other.question not in text
    cold = data.cold_start_set(cfg, 200, seed=4)
    assert {p.key for p, _ in cold}.isdisjoint({p.key for p in held} | {p.key for p in rl})


def test_heldout_sets_are_distinct_and_balanced(small_world):
    cfg, corpus, _ = small_world
    held, general = data.heldout_problems(cfg), data.heldout_general(data.DataConfig(n_heldout_general=100))
    assert len(held) == cfg.n_heldout == len({(p.kind, p.key) for p in held})
    assert len(general) == 100 == len({(p.kind, p.key) for p in general})
    assert 0.35 < sum(p.lang == "zh" for p in held) / len(held) < 0.65  # rl_p_zh = 0.5
    assert Counter(p.kind for p in general) == {"words": 50, "compare": 50}
    assert Counter(p.kind for p in data.general_problems(cfg, 5, seed=0)) == {"words": 3, "compare": 2}
    assert all(data.split_of(p.kind, p.key) == "heldout" for p in general)
    text = "\n".join(corpus)
    assert all(p.question not in text for p in general)
    with pytest.raises(RuntimeError, match="distinct"):  # arith:1 has ~70 held-out keys
        data.rl_problems(data.DataConfig(rl_mix="arith:1"), 500, seed=0, split="heldout", distinct=True)


def test_problem_answers_are_right():
    """The solution writers' gold answers agree with exact arithmetic (sympy-free reference)."""
    assert (data.poly_str(1, -1, 0), data.poly_str(2, 0, -4), data.poly_str(-1, 1, 1)) == ("x^2 - x", "2x^2 - 4", "-x^2 + x + 1")
    rng = random.Random(0)
    for _ in range(200):
        key, q, _, steps, ans = data.gen_arith(rng, rng.randint(1, 3))
        assert int(ans) == key[0] * key[1] and ans in steps[-1][0]
        (a, b, c), _, _, steps, ans = data.gen_linear(rng, rng.randint(1, 3))
        assert Fraction(int(ans.split("=")[1]) * a + b) == c
        (op, a, b, c, e), _, _, steps, ans = data.gen_frac(rng, rng.randint(1, 2))
        assert Fraction(ans) == Fraction(a, b) + (1 if op == "+" else -1) * Fraction(c, e)
        (c, a, b), _, _, steps, ans = data.gen_poly(rng, rng.randint(1, 2))
        assert ans == data.poly_str(c, c * b + a, a * b)  # (cx + a)(x + b) = cx^2 + (cb + a)x + ab


# facts per chain (arith: two per digit, and the last step states a * b)
N_FACTS = {"arith": lambda d: 2 * (d + 1) + 1, "linear": lambda d: 2, "poly": lambda d: 2, "frac": lambda d: 4}
EXACT = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": Fraction}
# an arith step's carry: its sum, the digit kept, the carry, the digits so far
CARRY = {"en": r"\+ \d+ = (\d+), keep (\d+), carry (\d+), so far (\d+)",
         "zh": r"\+ \d+ = (\d+)，留 (\d+)，进 (\d+)，目前 (\d+)"}


def false_facts(steps):
    """The facts ("x op y = z", reflect.FACT) of a chain's steps that exact arithmetic
    contradicts, and how many were read."""
    facts = [reflect.fact_of(m) for s in steps for m in reflect.FACT.finditer(s)]
    return [f for f in facts if EXACT[f[1]](f[0], f[2]) != f[3]], len(facts)


def test_generators_draw_their_documented_ranges():
    rng = random.Random(0)
    for d in (1, 2, 3):  # gen_arith: a (d + 1)-digit number times a digit 2-9
        a, b = zip(*(data.gen_arith(rng, d)[0] for _ in range(3000)))
        assert all(len(str(x)) == d + 1 for x in a) and set(b) == set(range(2, 10))
    assert min(a := [data.gen_arith(rng, 1)[0][0] for _ in range(3000)]) == 10 and max(a) == 99
    for d, op in ((1, "+"), (2, "-")):  # gen_frac: proper fractions over 2-9, a sum at d=1, a difference at d=2
        keys = [data.gen_frac(rng, d)[0] for _ in range(3000)]
        assert {k[0] for k in keys} == {op}
        assert {k[2] for k in keys} == {k[4] for k in keys} == set(range(2, 10))
        assert all(1 <= k[1] < k[2] and 1 <= k[3] < k[4] for k in keys)
        assert {k[1] for k in keys if k[2] == 9} == {k[3] for k in keys if k[4] == 9} == set(range(1, 9))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_fact_of_a_clean_chain_is_true(lang):
    """Each "x op y = z" of a chain, products and the carries' digits included, not only the sums
    and differences a check recomputes (test_reflect.py)."""
    rng, i = random.Random(1), lang == "zh"
    for kind in data.KINDS:
        for d in (1, 2, 3):
            for _ in range(40):
                _, _, _, steps, ans = data.GENERATORS[kind](rng, d)
                wrong, n = false_facts([s[i] for s in steps])
                assert not wrong and n == N_FACTS[kind](d), (kind, steps)
                if kind == "arith":  # keep s % 10, carry s // 10, and the digits so far are the product's last
                    carried = [re.search(CARRY[lang], s[i]).groups() for s in steps[:-1]]
                    assert len(carried) == d
                    for j, (total, keep, carry, sofar) in enumerate(carried):
                        assert (int(carry), int(keep)) == divmod(int(total), 10) and ans.endswith(sofar)
                        assert len(sofar) == j + 1


def test_a_slip_makes_a_step_wrong_in_every_kind():
    """A slip document's code (0 .. N_STEPS - 1, the first always a slip) and a checked chain's
    (SLIP_CODES) each write a false fact, unless a slip below 0 stays at 0 (gen_arith's max)."""
    rng, quiet, n = random.Random(2), 0, 0
    for kind in data.KINDS:
        for d in (1, 2, 3):
            for code in {0, *data.SLIP_CODES[kind](d)}:
                for _ in range(20):
                    p = data.make_problem(rng, kind, d, "en", "corpus", code)
                    steps, clean = p.steps, p.clean[0]  # the slipped chain and its twin done right
                    wrong, _ = false_facts([s[0] for s in steps])
                    assert bool(wrong) == (steps != clean)
                    quiet, n = quiet + (steps == clean), n + 1
    assert quiet <= 0.03 * n, (quiet, n)


def test_documents_keep_their_language():
    """A plain-template answer is written in the prompt's language; a switching chain changes
    language half way through its steps (here 4 steps: after the second)."""
    docs = data.build_corpus(data.DataConfig(n_docs=3000, seed=4, corpus_mix="arith:3"))
    plain = [d for d in docs if corpus_style(d) == "template-plain"]
    assert len(plain) > 20
    for d in plain:
        zh = d.startswith(data.ZERO_TEMPLATE["zh"][:8])
        assert d.endswith("。") == zh and (" 答案是 " in d) == zh and (" The answer is " in d) != zh
    switched = [d.split("\n")[1] for d in docs if corpus_style(d) == "switch"]
    assert len(switched) > 20
    for sol in switched:
        en_first = sol.startswith(data.LABELS["en"][1])
        body = sol[len(data.LABELS["en" if en_first else "zh"][1]):]
        first = re.search(r"[\u4e00-\u9fff]" if en_first else r"[a-z]{2}", body).start()  # the other language
        assert body[:first].count("so far" if en_first else "目前") == 2, sol


def corpus_style(doc):
    """The style a corpus document was written in, read back from its text."""
    if any(m in doc for m in ("in words.", "Which is larger", "用汉字写出", "哪个大")):
        return "general"
    if doc.startswith((data.ZERO_TEMPLATE["en"][:20], data.ZERO_TEMPLATE["zh"][:8])):
        if data.BARE_OPENER["en"] in doc or data.BARE_OPENER["zh"] in doc:
            return "template-bare"
        return "template-chain" if "<think>" in doc.split("\n")[-1] else "template-plain"
    if "Solution: " not in doc and "解答：" not in doc:
        return "bare"
    solution = doc.split("\n")[1]
    if re.search(r"[a-z]{2}", solution) and re.search(r"[\u4e00-\u9fff]", solution):
        return "switch"
    a, b = map(int, re.search(r"(\d+) \* (\d+)", doc).groups())
    return "chain" if int(re.search(r"(\d+)$", doc).group(1)) == a * b else "slip"


def test_corpus_mixes_the_styles_at_the_configured_rates():
    cfg = data.DataConfig(n_docs=8000, seed=2, corpus_mix="arith:1,arith:2")
    docs = data.build_corpus(cfg)
    share = {s: n / len(docs) for s, n in Counter(map(corpus_style, docs)).items()}
    rest = 1 - cfg.p_general
    template = rest * (1 - cfg.p_chain - cfg.p_bare - cfg.p_slip - cfg.p_switch)
    want = {"general": cfg.p_general, "chain": rest * cfg.p_chain, "bare": rest * cfg.p_bare,
            "slip": rest * cfg.p_slip, "switch": rest * cfg.p_switch,
            "template-plain": template * (1 - cfg.p_template_tagged),
            "template-chain": template * cfg.p_template_tagged * cfg.p_template_chain,
            "template-bare": template * cfg.p_template_tagged * (1 - cfg.p_template_chain)}
    for style, p in want.items():
        assert abs(share.get(style, 0) - p) < 0.015, (style, share.get(style), p)
    problems = [d for d in docs if corpus_style(d) != "general"]
    zh = sum(bool(re.search(r"[\u4e00-\u9fff]", d.split("\n")[0 if not d.startswith("The") else 1]))
             for d in problems) / len(problems)
    assert abs(zh - cfg.p_zh) < 0.02


def test_template_chains_on_chinese_prompts_are_mostly_english():
    """The cause of zero's language mixing lies in the corpus: R1-template chains on Chinese
    prompts are English at the configured rate, and never on English prompts."""
    docs = data.build_corpus(data.DataConfig(n_docs=6000, seed=3))
    zh = [d for d in docs if "助手： <think>" in d]  # tagged responses to the Chinese template
    en = [d for d in docs if "Assistant: <think>" in d]
    zh_chains = [d for d in zh if data.BARE_OPENER["zh"] not in d]
    share_en = sum(data.CHAIN_OPENER["en"] in d for d in zh_chains) / len(zh_chains)
    assert 0.7 < share_en < 0.9  # p_template_en_on_zh = 0.8
    assert not any(data.CHAIN_OPENER["zh"] in d for d in en)
    none = data.build_corpus(data.DataConfig(n_docs=3000, seed=3, p_template_en_on_zh=0.0))
    assert not any(d.startswith(data.ZERO_TEMPLATE["zh"][:8]) and data.CHAIN_OPENER["en"] in d for d in none)


# ----------------------------------------------------------------------------------------------
# general tasks

def test_number_writers_by_hand():
    cases = {1: ("one", "一"), 10: ("ten", "十"), 15: ("fifteen", "十五"), 20: ("twenty", "二十"),
             47: ("forty-seven", "四十七"), 100: ("one hundred", "一百"), 110: ("one hundred ten", "一百一十"),
             115: ("one hundred fifteen", "一百一十五"), 200: ("two hundred", "二百"),
             305: ("three hundred five", "三百零五"), 340: ("three hundred forty", "三百四十"),
             999: ("nine hundred ninety-nine", "九百九十九")}
    for n, (en, zh) in cases.items():
        assert (data.words_en(n), data.words_zh(n)) == (en, zh)


def test_readers_invert_the_writers():
    for n in range(1, 1000):
        assert data.read_words_en(data.words_en(n)) == n
        assert data.read_words_zh(data.words_zh(n)) == n


@pytest.mark.parametrize("text,n", [("Three Hundred and Forty-Seven", 347), ("three hundred forty seven", 347),
                                    ("THREE-HUNDRED FORTY-SEVEN", 347), ("  forty-seven ", 47), ("ten", 10),
                                    ("one hundred and five", 105)])
def test_english_reader_accepts_every_spelling(text, n):
    assert data.read_words_en(text) == n


@pytest.mark.parametrize("text", ["three hundred seven forty", "forty-seven hundred", "347", "fortyseven",
                                  "three hundred forty-seven hundred", "seventeen two", "twenty ten", "and",
                                  "hundred", "three hundred and", "zero", "one hundred zero", "ten hundred",
                                  "", "one two", "twenty-one-two", "eleventy", "three hundred and and five",
                                  "eleventy hundred", "forty zzz", "zzz seven"])
def test_english_reader_rejects_near_misses(text):
    assert data.read_words_en(text) is None


@pytest.mark.parametrize("text,n", [("三百四十七", 347), ("叁佰肆拾柒", 347), ("两百", 200), ("二百", 200),
                                    ("一十五", 15), ("十五", 15), ("三百零七", 307), ("一百一十五", 115), ("十", 10)])
def test_chinese_reader_accepts_every_form(text, n):
    assert data.read_words_zh(text) == n


@pytest.mark.parametrize("text", ["三四七", "三百七", "一百十五", "两十", "零", "三百零", "347", "三百四十七十",
                                  "二十零", "三百零十", "十十", "百", "三千", "", "两", "三百零零七", "四十两"])
def test_chinese_reader_rejects_near_misses(text):
    assert data.read_words_zh(text) is None


def test_general_check():
    assert data.general_correct("words", "en", "Three hundred and forty-seven.", "three hundred forty-seven")
    assert not data.general_correct("words", "en", "three hundred forty-six", "three hundred forty-seven")
    assert not data.general_correct("words", "en", "347", "three hundred forty-seven")
    assert data.general_correct("words", "zh", "三百零七。", "三百零七")
    assert not data.general_correct("words", "zh", "three hundred seven", "三百零七")  # the prompt's language
    assert data.general_correct("compare", "en", " 374 ", "374")
    assert not data.general_correct("compare", "en", "347", "374")
    assert not data.general_correct("compare", "en", "374 or 347", "374")
    assert not data.general_correct("words", "en", "one " * 100, "one")


def test_general_tasks_by_construction():
    rng = random.Random(0)
    lengths = Counter()
    for _ in range(300):
        for lang in ("en", "zh"):
            w = data.make_general(rng, "words", lang, "corpus")
            n = w.key[0]
            assert w.answer == (data.words_en(n) if lang == "en" else data.words_zh(n)) and str(n) in w.question
            assert 1 <= n <= 999 and (lang == "zh") == bool(re.search(r"[\u4e00-\u9fff]", w.question))
            c = data.make_general(rng, "compare", lang, "corpus")
            assert int(c.answer) == max(c.key) and c.key[0] != c.key[1] and all(10 <= k <= 999 for k in c.key)
            assert data.general_correct(c.kind, lang, c.answer, c.answer)
            assert (lang == "zh") == bool(re.search(r"[\u4e00-\u9fff]", c.question))
            lengths.update([("words", len(str(n))), ("compare", len(str(c.key[0])))])
    for d in (1, 2, 3):  # every length of number equally likely (the split keeps 70% of each)
        assert 150 < lengths["words", d] < 250, lengths
    assert 250 < lengths["compare", 2] < 350 and 250 < lengths["compare", 3] < 350
    resp = data.general_response(w)
    assert resp == f" <think> {data.GENERAL_THINK[w.lang]} </think> <answer> {w.answer} </answer>"


# ----------------------------------------------------------------------------------------------
# cold start

def test_cold_start_is_clean_and_single_language():
    cfg = data.DataConfig()
    pairs = data.cold_start_set(cfg, 60, seed=1)
    assert sum(p.lang == "zh" for p, _ in pairs) == 30
    texts = [r for _, r in pairs]
    s = rewards.score_batch(texts, [p.answer for p, _ in pairs], [p.lang for p, _ in pairs],
                            terms=("accuracy", "format", "lang"))
    assert s["accuracy"] == [1.0] * 60 and s["format"] == [1.0] * 60 and s["lang"] == [1.0] * 60
    for (p, r) in pairs:
        assert r.startswith(f" <think> {data.CHAIN_OPENER[p.lang]} ") and p.steps[-1][p.lang == "zh"] in r


def test_cold_start_checks_in_a_world_with_checks():
    # R1 §2.3.1: the cold start keeps the sources' verification. In the fix world the share p_check of the
    # chains check their steps and p_check_slip of those catch a slip; every response still reaches the gold.
    cfg = data.DataConfig(check_mode="fix", p_check=0.5, p_check_slip=0.5)
    pairs = data.cold_start_set(cfg, 200, seed=1)
    texts, golds = [r for _, r in pairs], [p.answer for p, _ in pairs]
    s = rewards.score_batch(texts, golds, [p.lang for p, _ in pairs], terms=("accuracy", "format", "lang"))
    assert s["accuracy"] == [1.0] * 200 and s["format"] == [1.0] * 200 and s["lang"] == [1.0] * 200
    checked = [r for r in texts if reflect.has_check(r)]
    assert 70 < len(checked) < 130  # p_check = 0.5
    outcomes = sum((reflect.check_outcomes(r) for r in checked), Counter())
    assert 15 < sum(reflect.check_outcomes(r)["fixed"] > 0 for r in checked) < 50  # p_check_slip = 0.5 of them
    assert outcomes["fixed"] + outcomes["confirmed"] == sum(outcomes.values())  # no check misses or breaks
    for p, _ in pairs:  # the pair's problem is the one asked: its steps and gold without the slip
        facts = [reflect.fact_of(m) for m in reflect.checkable(data.chain_text(p.steps, p.lang))]
        assert p.clean is None and all(z == reflect.true_value(x, op, y) for x, op, y, z, _ in facts)
    none = data.cold_start_set(data.DataConfig(), 200, seed=1)  # no checks: the cold start of the world without them
    assert not any(reflect.has_check(r) for _, r in none)
    restate = data.cold_start_set(dataclasses.replace(cfg, check_mode="restate"), 200, seed=1)
    assert [p.key for p, _ in restate] == [p.key for p, _ in pairs]
    assert sum(reflect.has_check(r) for _, r in restate) == len(checked)


def test_encode_sft_appends_eot(small_world):
    _, _, enc = small_world
    [(p, r)] = data.encode_sft(enc, [("Q: 1+1?", " <answer> 2 </answer>")])
    assert enc.decode(p) == "Q: 1+1?" and r[-1] == enc.eot_token and enc.decode(r[:-1]) == " <answer> 2 </answer>"


# ----------------------------------------------------------------------------------------------
# the tokenizer

def test_tokenizer_roundtrip(small_world):
    _, _, enc = small_world
    samples = ["Compute 347 * 6.", "计算 347 * 6。所以结果是 -5/12。", "<think> x </think> <answer> 2082 </answer>",
               "  leading and trailing  \n\n\t", "emoji 🙂 and ünïcödé", "１２３ full-width", "", "a<|endoftext|>b"]
    rng = random.Random(0)
    chars = [c for c in map(chr, range(0x80, 0x10FFF)) if not 0xD800 <= ord(c) <= 0xDFFF]  # no lone surrogates
    samples += ["".join(rng.choice([chr(rng.randint(32, 126)), chr(rng.randint(0x4E00, 0x9FFF)), rng.choice(chars)])
                        for _ in range(rng.randint(1, 40))) for _ in range(200)]
    for s in samples:
        assert enc.decode(enc.encode_ordinary(s)) == s
    ids = enc.encode("a<|endoftext|>b", allowed_special="all")
    assert enc.eot_token in ids and enc.decode(ids) == "a<|endoftext|>b"
    for tok in enc.encode_ordinary("12345 + 67890 = 80235"):  # digits are one per token
        assert sum(ch.isdigit() for ch in enc.decode([tok])) <= 1


def test_bpe_merges_the_most_frequent_pair_worked_by_hand():
    """Each merge takes the pair seen most often, a chunk counted as often as it occurs; a tie goes
    to the larger pair; training stops one id short of vocab_size (<|endoftext|>'s) or when nothing
    is left to merge; digits are chunks of their own and never merge."""
    merged = lambda ranks: {token: rank for token, rank in ranks.items() if rank >= 256}
    assert merged(tokenizer.train_bpe(["aaab"], 260)) == {b"aa": 256, b"aaa": 257, b"aaab": 258}  # (aa, a) ties (a, b)
    assert merged(tokenizer.train_bpe(["aaab"], 259)) == {b"aa": 256, b"aaa": 257}
    assert merged(tokenizer.train_bpe(["abaa"], 258)) == {b"ba": 256}  # three pairs tie: the largest, not the first
    assert merged(tokenizer.train_bpe(["ab"] * 3 + ["aaa"], 300)) == {b"ab": 256, b"aa": 257, b"aaa": 258}  # 3 > 2
    assert merged(tokenizer.train_bpe(["ab ab", "12"], 300)) == {b"ab": 256, b" ab": 257}


def test_tokenizer_rank_file(small_world, tmp_path):
    _, _, enc = small_world
    path = tmp_path / "tok.tiktoken"
    tokenizer.save_tokenizer(enc, str(path))
    lines = path.read_text().splitlines()
    tok, rank = lines[300].split()
    assert int(rank) == 300 and enc._mergeable_ranks[base64.b64decode(tok)] == 300
    enc2 = tokenizer.load_tokenizer(str(path))
    s = "题目：计算 1/4 + 2/3。 Expand (x + 3)(x - 5)."
    assert enc2.encode_ordinary(s) == enc.encode_ordinary(s) and enc2.eot_token == enc.eot_token
