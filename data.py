"""
The toy world: seeded math problems, their worked solutions, general tasks, the datasets of
every stage, and the training of its tokenizer.

    python data.py                 # print a few problems, documents and the split sizes

Why this world (see shared/DESIGN.md): R1-Zero's result is that RL on verifiable rewards alone
makes a base model reason better. That only happens if reasoning *pays*: a tiny transformer
cannot multiply 347 * 6 in one forward pass, but it can do it one digit at a time, where every
step is a times-table fact plus a small addition. So every solution here is written as a chain
of steps that are each easy in one forward pass, while the bare answer needs several of them
composed. The pretraining corpus mixes careful chains, bare answers, chains with a slip, chains
that switch language half way, and a share of documents that already use the R1-Zero template
with <think>/<answer> tags (mostly with a bare "I know this one." inside <think>). The base model
therefore knows both habits; under the template it mostly answers bare and is mostly wrong, and
RL has to discover that the chain is right more often.

Language mixing, with a cause. R1-Zero mixed languages because nothing rewarded staying in one
(R1 §2.3.2). Here the web is half Chinese (p_zh), but its R1-style traces are mostly English,
Chinese questions included (p_template_en_on_zh): the one asymmetry between the languages, so
under the template an English chain on a Chinese prompt is the habit, and RL from the base
keeps it; no reward asks for it. Its price, the base's accuracy on Chinese prompts with the
chain forced to open in Chinese against English, is small but real (README: with p_zh = 0.3
it was large enough to sink the R1 pipeline below R1-Zero).

General tasks (R1 §2.3.3's non-reasoning data): write a number in words (English words for an
English prompt, Chinese numerals for a Chinese one) and name the larger of two numbers. They need
no chain of thought, and each has an exact reader of its answer (`general_correct`). The corpus
holds a few of them as plain question and answer, never in the template, so the base and R1-Zero
are poor at them there: teaching them is sft2's job.

The cold start (R1 §2.3.1) is written by the world's own solution writer (`cold_start_set`), not
collected from the zero stage: the writer's chains are right by construction, single-language
and readable (an opener, one sentence per step, the last one the result), which is what the
paper's post-processing of collected outputs achieves; collecting zero's outputs would need the
same rewrite into one language, and would tie sft1 to one zero run.

Problems are keyed by their parameters (language-free). A stable hash of the key splits the
world into three disjoint parts: the pretraining corpus, the RL prompts, and the held-out set;
general tasks are split the same way. Held-out problems are never trained on by any stage, and
each appears in the held-out set once.

Checks (reflect.py; check_mode "fix" in the cpu preset, "none" in the dataclass and the other
presets). A chain may check each step's sum or difference in columns and go on from the checked
number, which fixes a slip: the world of the README's R1-Zero "aha moment". "restate" is its
control, checks that never fix; "none" the world before checks (`--preset nocheck`). The cold
start's chains check as the corpus's careful ones do.

The tokenizer (tokenizer.py) is a byte-level BPE trained here on the corpus, digits one per
token so that the model sees numbers digit by digit. No network is ever touched.
"""
import random
import zlib
from dataclasses import dataclass, replace
from fractions import Fraction

import reflect
import tokenizer
from verify import validate_gold

KINDS = ("arith", "linear", "poly", "frac")

# ----------------------------------------------------------------------------------------------
# Prompt templates. The R1-Zero template (R1 paper, Table 1) in our own words. The prompt ends
# with "Assistant:"; the model must itself open <think> (the template does not pre-fill it).

ZERO_TEMPLATE = {
    "en": ("The Assistant solves the User's problem. It first reasons inside <think> </think>, then "
           "gives the answer inside <answer> </answer>.\nUser: {q}\nAssistant:"),
    "zh": "助手解答用户的问题。先在 <think> </think> 中推理，再在 <answer> </answer> 中给出答案。\n用户：{q}\n助手：",
}
BARE_OPENER = {"en": "I know this one.", "zh": "这题我会。"}
CHAIN_OPENER = {"en": "Let me work it out step by step.", "zh": "我一步一步来算。"}
LABELS = {"en": ("Problem: ", "Solution: ", "Answer: "), "zh": ("题目：", "解答：", "答案：")}


def zero_prompt(question, lang):
    return ZERO_TEMPLATE[lang].format(q=question)


def tagged(think, answer):
    """The response format the R1-Zero template asks for."""
    return f" <think> {think} </think> <answer> {answer} </answer>"


# ----------------------------------------------------------------------------------------------
# Problems. Each generator returns (key, question_en, question_zh, steps, answer) where steps is a
# list of (english, chinese) sentences. `slip` (step index or None) makes one step's result wrong
# by a small amount and carries the error to the end, like a careless human.

@dataclass
class Problem:
    question: str   # the bare question in `lang`
    answer: str     # the gold answer (sympy-checkable string)
    kind: str       # one of KINDS
    lang: str       # 'en' | 'zh'
    difficulty: int
    key: tuple      # the problem's parameters; the unit of the train/held-out split
    steps: list     # worked solution, list of (en, zh) sentences
    clean: tuple = None  # a slipped problem's (steps, answer) without the slip

    @property
    def prompt(self):
        return zero_prompt(self.question, self.lang)


def _bump(rng, v):
    return v + rng.choice([-2, -1, 1, 2])


SUM_SLIP = 10  # gen_arith's slip code 10 + i: the sum of digit i slips, not its product


def gen_arith(rng, d, slip=None):
    """n-digit times 1-digit by long multiplication (d=1: 2 digits, d=2: 3, d=3: 4)."""
    a, b = rng.randint(10 ** d, 10 ** (d + 1) - 1), rng.randint(2, 9)
    digits = [int(c) for c in str(a)][::-1]
    steps, carry, sofar = [], 0, ""
    for i, dig in enumerate(digits):
        p = dig * b
        if i == slip:
            p = max(0, _bump(rng, p))
        s = p + carry
        if slip == SUM_SLIP + i:  # a slip in the carry's sum (checked chains only: SLIP_CODES)
            s = max(0, _bump(rng, s))
        last = i == len(digits) - 1
        if last:
            sofar = str(s) + sofar
            en = f"{dig} * {b} = {p}, {p} + {carry} = {s}, so {a} * {b} = {sofar}."
            zh = f"{dig} * {b} = {p}，{p} + {carry} = {s}，所以 {a} * {b} = {sofar}。"
        else:
            sofar = str(s % 10) + sofar
            en = f"{dig} * {b} = {p}, {p} + {carry} = {s}, keep {s % 10}, carry {s // 10}, so far {sofar}."
            zh = f"{dig} * {b} = {p}，{p} + {carry} = {s}，留 {s % 10}，进 {s // 10}，目前 {sofar}。"
            carry = s // 10
        steps.append((en, zh))
    return (a, b), f"Compute {a} * {b}.", f"计算 {a} * {b}。", steps, sofar if slip is not None else str(a * b)


def gen_linear(rng, d, slip=None):
    """a x + b = c with a whole solution; d scales b and x."""
    a = rng.randint(2, 9)
    x = rng.randint(2, 9) if d < 3 else rng.randint(10, 19)
    b = rng.randint(1, 9) if d == 1 else rng.randint(10, 49)
    c = a * x + b
    k = c - b if slip != 0 else _bump(rng, c - b)
    q = k // a if slip != 1 else _bump(rng, k // a)
    eq = f"{a}x + {b} = {c}"
    steps = [(f"Subtract {b} from both sides: {c} - {b} = {k}, so {a}x = {k}.",
              f"两边减去 {b}：{c} - {b} = {k}，所以 {a}x = {k}。"),
             (f"Divide both sides by {a}: {k} / {a} = {q}, so x = {q}.",
              f"两边除以 {a}：{k} / {a} = {q}，所以 x = {q}。")]
    return (a, b, c), f"Solve {eq} for x.", f"解方程 {eq}。", steps, f"x = {q}"


def poly_str(c2, c1, c0):
    """x^2-style polynomial text: 2x^2 - x + 6, x^2 - 4."""
    out = ""
    for coef, mono in ((c2, "x^2"), (c1, "x"), (c0, "")):
        if coef == 0:
            continue
        mag = abs(coef)
        body = (str(mag) if (mag != 1 or not mono) else "") + mono
        out += (body if coef > 0 else "-" + body) if not out else (" + " if coef > 0 else " - ") + body
    return out or "0"


def _lin(c, a):  # "2x + 3" / "x - 5"
    return f"{'' if c == 1 else c}x {'+' if a > 0 else '-'} {abs(a)}"


def gen_poly(rng, d, slip=None):
    """Expand (c x + a)(x + b); d=1 has c=1."""
    c = 1 if d == 1 else rng.randint(2, 5)
    a, b = rng.choice([i for i in range(-9, 10) if i]), rng.choice([i for i in range(-9, 10) if i])
    cb, s, ab = c * b, c * b + a, a * b
    if slip == 0:
        s = _bump(rng, s)
    if slip == 1:
        ab = _bump(rng, ab)
    lhs = f"({_lin(c, a)})({_lin(1, b)})"
    first = f"{'' if c == 1 else c}x * x = {poly_str(c, 0, 0)}"
    steps = [(f"{first}.", f"{first}。"),
             (f"{cb}x + {a}x = {s}x.".replace("+ -", "- "), f"{cb}x + {a}x = {s}x。".replace("+ -", "- ")),
             (f"{a} * {b} = {ab}, so the result is {poly_str(c, s, ab)}.",
              f"{a} * {b} = {ab}，所以结果是 {poly_str(c, s, ab)}。")]
    return (c, a, b), f"Expand {lhs}.", f"展开 {lhs}。", steps, poly_str(c, s, ab)


def gen_frac(rng, d, slip=None):
    """a/b + c/e (d=1) or a/b - c/e (d=2) over the common denominator b*e (left unreduced)."""
    b, e = rng.randint(2, 9), rng.randint(2, 9)
    a, c = rng.randint(1, b - 1), rng.randint(1, e - 1)
    op = "+" if d == 1 else "-"
    den, n1, n2 = b * e, a * e, c * b
    if slip == 0:
        n1 = _bump(rng, n1)
    num = n1 + n2 if op == "+" else n1 - n2
    if slip == 3:  # code 3 slips the sum, a step that slip documents never touch: checks only (SLIP_CODES)
        num = _bump(rng, num)
    steps = [(f"The common denominator is {b} * {e} = {den}.", f"公分母是 {b} * {e} = {den}。"),
             (f"{a} * {e} = {n1} and {c} * {b} = {n2}.", f"{a} * {e} = {n1}，{c} * {b} = {n2}。"),
             (f"{n1} {op} {n2} = {num}, so the result is {num}/{den}.",
              f"{n1} {op} {n2} = {num}，所以结果是 {num}/{den}。")]
    q = f"{a}/{b} {op} {c}/{e}"
    gold = Fraction(num, den) if slip is not None else Fraction(a, b) + (Fraction(c, e) if op == "+" else -Fraction(c, e))
    return (op, a, b, c, e), f"Compute {q}.", f"计算 {q}。", steps, str(gold)


GENERATORS = {"arith": gen_arith, "linear": gen_linear, "poly": gen_poly, "frac": gen_frac}
N_STEPS = {"arith": lambda d: d + 1, "linear": lambda d: 2, "poly": lambda d: 3, "frac": lambda d: 3}
# the slips of a checked chain: in the facts a check recomputes (reflect.checkable: sums and
# differences), one per step that has one
SLIP_CODES = {"arith": lambda d: range(SUM_SLIP, SUM_SLIP + d + 1), "linear": lambda d: (0,),
              "poly": lambda d: (0,), "frac": lambda d: (3,)}


def split_of(kind, key):
    """Stable split by the problem's parameters: 'heldout' (10%), 'rl' (20%) or 'corpus'."""
    h = zlib.crc32(repr((kind, key)).encode()) % 10
    return "heldout" if h == 0 else "rl" if h <= 2 else "corpus"


def make_problem(rng, kind, difficulty, lang, split, slip=None):
    """Draw a problem of `kind` whose key lies in `split` (rejection sampling on the hash)."""
    for _ in range(10_000):
        state = rng.getstate()
        key, q_en, q_zh, steps, ans = GENERATORS[kind](rng, difficulty, slip)
        if split_of(kind, (difficulty,) + key) == split:
            p = Problem(q_en if lang == "en" else q_zh, ans, kind, lang, difficulty, (difficulty,) + key, steps)
            if slip is not None:  # the same problem done right, for a check's redo (the rng goes on as before)
                after = rng.getstate()
                rng.setstate(state)
                p.clean = GENERATORS[kind](rng, difficulty)[3:]
                rng.setstate(after)
            return p
    raise RuntimeError(f"no {split} problem of kind {kind} difficulty {difficulty}")


# ----------------------------------------------------------------------------------------------
# Documents of the pretraining corpus ("the web" of this world).

@dataclass
class DataConfig:
    n_docs: int = 40_000          # pretraining documents (each ends with <|endoftext|>)
    p_zh: float = 0.5             # share of Chinese documents (both languages equally common)
    p_chain: float = 0.40         # careful step-by-step solution
    p_bare: float = 0.15          # bare answer, no work
    p_slip: float = 0.08          # step-by-step with one wrong step
    p_switch: float = 0.07        # switches language half way
    # the rest (0.30) uses the R1-Zero template:
    p_template_tagged: float = 0.75  # ...with <think>/<answer> tags (else a plain sentence)
    p_template_chain: float = 0.45   # ...and a chain inside <think> (else "I know this one.")
    p_template_en_on_zh: float = 0.8  # ...a chain on a Chinese prompt is in English this often
    p_general: float = 0.06       # share of documents that are general (non-reasoning) tasks
    check_mode: str = "none"      # chains with checks (reflect.py): none | fix | restate (a control: never fixes)
    p_check: float = 0.15         # ...share of careful chains ("Solution: ...") that check their steps
    p_template_check: float = 0.2  # ...share of chains under the template that do (the base rarely chains)
    p_check_slip: float = 0.3     # ...share of checked chains with a slip for the check to catch
    corpus_mix: str = "arith:1,arith:2,linear:1,linear:2,poly:1,poly:2,frac:1,frac:2"  # kind:difficulty
    rl_mix: str = "arith:1,arith:2,poly:2,frac:1"  # RL prompts & held-out: where the chain wins
    vocab_size: int = 1024        # BPE vocabulary incl. 256 bytes and <|endoftext|>
    bpe_docs: int = 4000          # documents the tokenizer is trained on
    rl_p_zh: float = 0.5          # share of Chinese prompts in the RL and held-out sets
    n_heldout: int = 200          # held-out reasoning problems (distinct keys)
    n_heldout_general: int = 100  # held-out general tasks (distinct keys)
    seed: int = 1337              # same seed -> same world


def parse_mix(mix):
    """'arith:1,poly:2' -> [('arith', 1), ('poly', 2)], with a clear error on bad input."""
    out = []
    for item in mix.split(","):
        kind, _, d = item.partition(":")
        if kind not in GENERATORS or not d.isdigit() or not 1 <= int(d) <= 3:
            raise ValueError(f"bad mix item {item!r}: expected kind:difficulty with kind in {KINDS} and difficulty 1-3")
        out.append((kind, int(d)))
    return out


def chain_text(steps, lang, switch_at=None):
    """Join steps in `lang`, switching to the other language from step `switch_at` on."""
    other = "zh" if lang == "en" else "en"
    parts = [s[0 if (lang if switch_at is None or i < switch_at else other) == "en" else 1]
             for i, s in enumerate(steps)]
    return " ".join(parts)


def draw_check(rng, cfg, kind, d, p):
    """Whether a chain checks its steps (probability p) and the slip its check catches, if any
    (p_check_slip of the checked chains; SLIP_CODES). A world without checks draws nothing, so
    its corpus and cold start are the ones they were before checks existed."""
    check = cfg.check_mode != "none" and rng.random() < p
    return check, rng.choice(SLIP_CODES[kind](d)) if check and rng.random() < cfg.p_check_slip else None


def make_document(rng, cfg, kind, d, split="corpus"):
    lang = "zh" if rng.random() < cfg.p_zh else "en"
    r = rng.random()
    style = ("chain" if r < cfg.p_chain else "bare" if r < cfg.p_chain + cfg.p_bare
             else "slip" if r < cfg.p_chain + cfg.p_bare + cfg.p_slip
             else "switch" if r < cfg.p_chain + cfg.p_bare + cfg.p_slip + cfg.p_switch else "template")
    slip = rng.randrange(N_STEPS[kind](d)) if style == "slip" else None
    check = False
    if style in ("chain", "template"):
        check, slip = draw_check(rng, cfg, kind, d, cfg.p_check if style == "chain" else cfg.p_template_check)
    p = make_problem(rng, kind, d, lang, split, slip)
    answer = p.clean[1] if check and p.clean else p.answer  # what a document without its chain shows
    qlab, slab, alab = LABELS[lang]
    if style == "template":
        if rng.random() < cfg.p_template_tagged:
            if rng.random() < cfg.p_template_chain:
                # The web's R1-style traces are mostly English, Chinese questions included: the
                # cause of R1-Zero's language mixing in this world (R1 §2.3.2).
                chain_lang = "en" if lang == "zh" and rng.random() < cfg.p_template_en_on_zh else lang
                chain, answer = worked(p, chain_lang, cfg.check_mode if check else "none")
                think = CHAIN_OPENER[chain_lang] + " " + chain
            else:
                think = BARE_OPENER[lang]
            return p.prompt + tagged(think, answer)
        return p.prompt + (f" The answer is {answer}." if lang == "en" else f" 答案是 {answer}。")
    if style == "bare":
        return f"{qlab}{p.question}\n{alab}{p.answer}"
    if check:
        chain, answer = worked(p, lang, cfg.check_mode)
        return f"{qlab}{p.question}\n{slab}{chain}\n{alab}{answer}"
    switch_at = max(1, len(p.steps) // 2) if style == "switch" else None
    return f"{qlab}{p.question}\n{slab}{chain_text(p.steps, lang, switch_at)}\n{alab}{p.answer}"


def worked(p, lang, check_mode):
    """p's chain in `lang` and the answer it reaches; with checks unless check_mode is "none"
    (a check that catches the slip redoes the step, and the chain reaches the right answer)."""
    if check_mode == "none":
        return chain_text(p.steps, lang), p.answer
    i = 0 if lang == "en" else 1
    clean_steps, clean_answer = p.clean or (p.steps, p.answer)
    text, fixed = reflect.checked_chain([s[i] for s in p.steps], [s[i] for s in clean_steps], lang, check_mode)
    return text, clean_answer if fixed else p.answer


def general_document(rng, cfg):
    """A general task as the web has it: question and answer, never in the R1 template."""
    p = make_general(rng, rng.choice(GENERAL_KINDS), "zh" if rng.random() < cfg.p_zh else "en", "corpus")
    qlab, _, alab = LABELS[p.lang]
    return f"{qlab}{p.question}\n{alab}{p.answer}"


def build_corpus(cfg):
    """The pretraining documents: a list of strings, deterministic in cfg.seed."""
    rng, mix = random.Random(cfg.seed), parse_mix(cfg.corpus_mix)
    return [general_document(rng, cfg) if rng.random() < cfg.p_general else make_document(rng, cfg, *rng.choice(mix))
            for _ in range(cfg.n_docs)]


def rl_problems(cfg, n, seed, split="rl", distinct=False):
    """n reasoning problems from the RL distribution (rl_mix), drawn from `split`, a share
    rl_p_zh of them in Chinese. distinct=True draws without replacement (no key twice)."""
    rng, mix = random.Random(seed), parse_mix(cfg.rl_mix)
    draw = lambda: make_problem(rng, *rng.choice(mix), "zh" if rng.random() < cfg.rl_p_zh else "en", split)
    problems = _draw(draw, n, distinct)
    for p in problems:
        validate_gold(p.answer)  # gold answers are parsed once, when a set is built
    return problems


def general_problems(cfg, n, seed, split="rl", distinct=False):
    """n general tasks, as many of each kind (GENERAL_KINDS) as n allows, a share rl_p_zh of
    them in Chinese."""
    rng, out = random.Random(seed), []
    for i, kind in enumerate(GENERAL_KINDS):
        count = n // len(GENERAL_KINDS) + (i < n % len(GENERAL_KINDS))
        out += _draw(lambda: make_general(rng, kind, "zh" if rng.random() < cfg.rl_p_zh else "en", split),
                     count, distinct)
    return out


def _draw(draw, n, distinct):
    if not distinct:
        return [draw() for _ in range(n)]
    out, seen = [], set()
    for _ in range(100 * n):
        p = draw()
        if (p.kind, p.key) not in seen:
            seen.add((p.kind, p.key))
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError(f"the split holds fewer than {n} distinct problems (found {len(out)})")


def heldout_problems(cfg):
    """The fixed evaluation set: the RL distribution, disjoint keys, its own seed, each once."""
    return rl_problems(cfg, cfg.n_heldout, cfg.seed + 1, split="heldout", distinct=True)


def heldout_general(cfg):
    """The general tasks' own held-out set, each once."""
    return general_problems(cfg, cfg.n_heldout_general, cfg.seed + 2, split="heldout", distinct=True)


# ----------------------------------------------------------------------------------------------
# General (non-reasoning) tasks, for the R1 pipeline's sft2 and rl2 (R1 §2.3.3): short answers
# that need no chain of thought, in both languages, each checked exactly by its own reader.
# `words`: write a number in words (English words for an English prompt, Chinese numerals for
# a Chinese one); `compare`: name the larger of two numbers.

GENERAL_KINDS = ("words", "compare")
GENERAL_THINK = {"en": "No working needed.", "zh": "这题不用计算。"}  # the short <think> of a general answer
_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "- - twenty thirty forty fifty sixty seventy eighty ninety".split()
_ZH_DIGITS = "零一二三四五六七八九"


def words_en(n):
    """1..999 in English words: 347 -> 'three hundred forty-seven'."""
    hundreds, rest = divmod(n, 100)
    parts = [f"{_EN_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        parts.append(_EN_TENS[rest // 10] + (f"-{_EN_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest:
        parts.append(_EN_ONES[rest])
    return " ".join(parts)


def words_zh(n):
    """1..999 in Chinese numerals: 347 -> 三百四十七, 307 -> 三百零七, 15 -> 十五, 115 -> 一百一十五."""
    hundreds, rest = divmod(n, 100)
    tens, ones = divmod(rest, 10)
    out = _ZH_DIGITS[hundreds] + "百" if hundreds else ""
    if tens:
        out += ("" if tens == 1 and not hundreds else _ZH_DIGITS[tens]) + "十"
    elif hundreds and ones:
        out += "零"
    return out + (_ZH_DIGITS[ones] if ones else "")


def _number(rng, lengths):
    """A whole number whose count of digits is drawn uniformly from `lengths` (so that short
    numbers are not a rare case the model never learns)."""
    d = rng.choice(lengths)
    return rng.randint(10 ** (d - 1), 10 ** d - 1)


def make_general(rng, kind, lang, split):
    """A general task whose key lies in `split`; its gold answer is written in `lang`."""
    for _ in range(10_000):
        if kind == "words":
            n = _number(rng, (1, 2, 3))
            key, question = (n,), (f"Write {n} in words." if lang == "en" else f"用汉字写出 {n}。")
            answer = words_en(n) if lang == "en" else words_zh(n)
        else:
            a, b = _number(rng, (2, 3)), _number(rng, (2, 3))
            if a == b:
                continue
            key, question = (a, b), (f"Which is larger, {a} or {b}?" if lang == "en" else f"{a} 和 {b} 哪个大？")
            answer = str(max(a, b))
        if split_of(kind, key) == split:
            return Problem(question, answer, kind, lang, 1, key, [])
    raise RuntimeError(f"no {split} task of kind {kind}")


def general_response(problem):
    return tagged(GENERAL_THINK[problem.lang], problem.answer)


# Readers of the answers, for the exact checks. They accept every correct spelling (any case,
# "forty-seven" or "forty seven", "and" after "hundred"; 两百 for 200, 一十五 for 15, the banker's
# numerals 壹贰叁...) and nothing else: no digits, no wrong order, 三百七 is not 307.
_EN_VALUE = {w: i for i, w in enumerate(_EN_ONES)} | {w: 10 * i for i, w in enumerate(_EN_TENS) if i >= 2}
_ZH_DIGIT = {c: i + 1 for i, c in enumerate("一二三四五六七八九")} | {c: i + 1 for i, c in enumerate("壹贰叁肆伍陆柒捌玖")}


def read_words_en(text):
    """'Three hundred and forty-seven' -> 347; None unless it is a number in words, 1..999."""
    words = text.casefold().replace("-", " ").split()
    if not words or len(words) > 6:
        return None
    value = 0
    if len(words) >= 2 and words[1] == "hundred" and 1 <= _EN_VALUE.get(words[0], 0) <= 9:
        value, words = 100 * _EN_VALUE[words[0]], words[2:]
        if words[:1] == ["and"] and len(words) > 1:
            words = words[1:]
    if not words:
        return value or None
    first = _EN_VALUE.get(words[0], 0)
    if first == 0 or len(words) > 2:
        return None
    if len(words) == 2:  # tens, then ones: "forty seven"
        ones = _EN_VALUE.get(words[1], 0)
        if first < 20 or not 1 <= ones <= 9:
            return None
        first += ones
    return value + first


def read_words_zh(text):
    """三百四十七 -> 347; None unless it is a number in Chinese numerals, 1..999."""
    s = text.strip().replace("拾", "十").replace("佰", "百")
    if not s or len(s) > 8:
        return None
    value = 0
    if len(s) >= 2 and s[1] == "百":
        hundreds = 2 if s[0] == "两" else _ZH_DIGIT.get(s[0])  # 两 only as the hundreds digit
        if hundreds is None:
            return None
        value, s = 100 * hundreds, s[2:]
        if not s:
            return value
        if s[0] == "零":  # 三百零七
            return value + _ZH_DIGIT[s[1]] if len(s) == 2 and s[1] in _ZH_DIGIT else None
        if len(s) < 2 or s[1] != "十":
            return None  # 三百七 means 370 in speech, 一百十五 is not the written form: refused
    if len(s) == 1 and s != "十":
        return None if value else _ZH_DIGIT.get(s)
    tens, sep, ones = s.partition("十")
    if not sep or len(tens) > 1 or len(ones) > 1 or (tens and tens not in _ZH_DIGIT) or (ones and ones not in _ZH_DIGIT):
        return None
    return value + 10 * (_ZH_DIGIT[tens] if tens else 1) + (_ZH_DIGIT[ones] if ones else 0)


def general_correct(problem_kind, lang, pred, gold):
    """The exact check of a general task's answer (pred untrusted, gold from make_general)."""
    pred = pred.strip().rstrip(".。!！")
    if len(pred) > 64:
        return False
    if problem_kind == "compare":
        return pred == gold
    read = read_words_en if lang == "en" else read_words_zh
    value = read(pred)
    return value is not None and value == read(gold)


# ----------------------------------------------------------------------------------------------
# SFT sets: the cold start (R1 §2.3.1; where it comes from: the module docstring) and the
# encoding of every supervised stage's (prompt, response) examples.

def cold_start_response(problem, check_mode="none"):
    """The opener and the chain in the prompt's language; its last step states the result. No
    separate summary sentence (R1 §2.3.1 adds one): a phrase the web never uses is one the BPE
    never merged, and a 4-layer model spelled it byte by byte ("SS the answer is"), and copied
    the answer from it with new slips. In a world with checks, a chain with them (`worked`):
    R1's cold-start data kept the reflection and verification of its sources (R1 §2.3.1)."""
    lang = problem.lang
    chain, answer = worked(problem, lang, check_mode)
    return tagged(f"{CHAIN_OPENER[lang]} {chain}", answer)


def cold_start_set(cfg, n, seed):
    """n (problem, response) pairs of the RL distribution, half in each language, from the
    corpus split (never the RL prompts or the held-out set). In a world with checks, the share
    p_check of the chains check their steps, p_check_slip of those catching a slip, as the
    corpus's careful chains do (draw_check)."""
    rng, mix = random.Random(seed), parse_mix(cfg.rl_mix)
    pairs = []
    for i in range(n):
        kind, d = rng.choice(mix)
        check, slip = draw_check(rng, cfg, kind, d, cfg.p_check)
        p = make_problem(rng, kind, d, ("en", "zh")[i % 2], "corpus", slip)
        response = cold_start_response(p, cfg.check_mode if check else "none")
        if p.clean:  # the pair's problem is the one asked: its gold is the right answer
            p = replace(p, steps=p.clean[0], answer=p.clean[1], clean=None)
        pairs.append((p, response))
    return pairs


def encode_sft(enc, pairs):
    """(prompt text, response text) pairs -> (prompt ids, response ids + <|endoftext|>)."""
    return [(enc.encode_ordinary(prompt), enc.encode_ordinary(response) + [enc.eot_token])
            for prompt, response in pairs]


# ----------------------------------------------------------------------------------------------
# The world's tokenizer (tokenizer.py: byte-level BPE run by tiktoken), trained on its corpus

def build_tokenizer(cfg, corpus):
    extra = [ZERO_TEMPLATE["en"], ZERO_TEMPLATE["zh"]] * 50  # the templates must compress well
    return tokenizer.make_encoding(tokenizer.train_bpe(corpus[: cfg.bpe_docs] + extra, cfg.vocab_size))

if __name__ == "__main__":
    cfg = DataConfig(n_docs=2000, bpe_docs=500)
    corpus = build_corpus(cfg)
    for doc in corpus[:6]:
        print(doc, "\n---")
    enc = build_tokenizer(cfg, corpus)
    ids = tokenizer.encode_docs(enc, corpus)
    print(f"vocab {enc.n_vocab}, {len(ids)} tokens for {len(corpus)} docs ({len(ids) / len(corpus):.1f}/doc)")
    for p in heldout_problems(cfg)[:4]:
        print(p.kind, p.difficulty, p.lang, repr(p.question), "->", p.answer)
