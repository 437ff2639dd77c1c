"""
Reflection in the toy world: the check step that chains may carry, written into the corpus
(data.py) and read back out of a model's responses (evaluate.py, the GRPO loop's metrics).

    python reflect.py          # a checked chain, a caught slip, and how a response is read

R1-Zero learned, unprompted, to stop, re-check a step and redo it (R1 §2.2.4, the "aha
moment"). Here a chain may check the sum or difference of each step right after writing it:
the same number reached another way, digit by digit, where the step did it at once; the rest
of the step then goes on from the check's number. When the step slipped, the check's number is
another one, and the chain has caught and fixed its slip:
    2 * 6 = 12, 12 + 4 = 15. Check: 12 + 4: 2 + 4 = 6, 1 + 0 = 1, so 16, so 27 * 6 = 162.

Why this check, measured on base models (README): a check pays only where the model errs, and
only if it is right more often than the step it checks.
  - Where: the base's false facts are mostly sums (70% of the first false facts of its sampled
    chains); its one-digit products are nearly always right. So sums and differences are
    checked, products are not.
  - More often right: a sum redone at once (its terms swapped) was right no more often than
    the step (42% against 42%, and 48% against 48% with a wider model). Done in columns,
    each a one-digit table fact with its carry or borrow, it was right 87% of the time where
    the steps it checked were right 55%.
  - No verdict: an earlier check wrote the step's value beside its own and a verdict ("against
    15: wrong. Redo: ..."). The base never learned the verdict: it said "wrong" about as often
    when the two numbers were equal (23%) as when they differed (34%). The check here has no
    verdict to learn; the chain simply goes on from the checked number.
Because the check reads the step as written, it can catch the model's own slips, not only the
corpus's.

The controls of the issue's claim are other corpora, not other rewards (no reward term ever
names a check): `check_mode` "none" writes no checks at all (the world before this file), and
"restate" writes checks that only repeat the step (12 + 4 = 15. Check: 12 + 4 = 15, so ...),
which never change anything. In "fix" (the real check) and "restate" the corpus holds the same
documents, slips included; only what the check computes differs.

Reading a response: `has_check` looks for the world's fixed marker (Check: / 验算：), not for
words like "wait". `check_outcomes` pairs each check with the step it checks and counts, with
the true arithmetic, the checks that fixed a wrong step (the check's number right), confirmed
a right one, missed a wrong one (the check's number wrong too), broke a right one, or looped
(the same fact checked a third time). `marker_tokens` lists the tokens that write the marker,
so that decoding can forbid checks and measure what they buy.
"""
import re
from collections import Counter

CHECK_MODES = ("none", "fix", "restate")
OUTCOMES = ("fixed", "confirmed", "missed", "broke", "looped", "unmatched")
CHECK = {"en": "Check:", "zh": "验算："}
END = {"en": ".", "zh": "。"}
COLON = {"en": ": ", "zh": "："}
COMMA = {"en": ", ", "zh": "，"}
SO = {"en": "so ", "zh": "所以 "}
SEP = {"en": " ", "zh": ""}  # after a colon or a full stop: "Check: 42 + 0 = 42", "验算：42 + 0 = 42"

# "40x + 6x = 46x", "-6 * -1 = 6", "58 / 2 = 29": (x, op, y, z) and the variable suffix
FACT = re.compile(r"(-?\d+)(x?) ([-+*/]) (-?\d+)x? = (-?\d+)x?")


def _any(strings):
    return "(?:" + "|".join(map(re.escape, strings)) + ")"


# a check as the world writes it, at once ("Check: 42 + 0 = 42") or in columns ("Check: 35 + 28: 5 + 8 = 13,
# 3 + 2 + 1 = 6, so 63"); groups 1-4 are what the check computes (magnitudes), 5 its signed result
CHECK_RE = re.compile(_any(CHECK.values()) + r" ?(-?\d+)(x?) ([-+*/]) (-?\d+)x?(?: = |[:：] ?[^.。]*?"
                      + _any(SO.values()) + r")(-?\d+)x?")


def true_value(x, op, y):
    """x + y or x - y: the truth a check and its step are judged against (only sums and
    differences are checked)."""
    return x + y if op == "+" else x - y


def fact_of(m):
    """A FACT match as ints and its suffix: (x, op, y, z, 'x' or '')."""
    return int(m[1]), m[3], int(m[4]), int(m[5]), m[2]


def checkable(text):
    """The matches of the facts a check recomputes: sums and differences. Not products (the
    base's one-digit products are nearly always right, and a product with a factor of two digits
    or more is the problem restated at the chain's end) and not quotients."""
    return [m for m in FACT.finditer(text) if m[3] in "+-"]


def fold(a, op, b):
    """A negative second term of a sum or difference folded into the sign: 3 + -8 is 3 - 8."""
    if op in "+-" and b < 0:
        op, b = ("-" if op == "+" else "+"), -b
    return a, op, b


def binary(a, op, b, v):
    """'a op b' with v after each term, signs folded: 28x - 6x."""
    a, op, b = fold(a, op, b)
    return f"{a}{v} {op} {b}{v}"


def recompute(fact):
    """How a check computes a sum or difference x op y (the step's z is not looked at): as
    magnitudes in columns, (a, op, b, the signed result), a >= b >= 0 for a difference.
      - terms of one sign are added:        -14x - 5x  ->  14 + 5, and the sign: -19x
      - otherwise the smaller is taken away: 3x - 8x   ->  8 - 3, and the larger's sign: -5x"""
    x, op, y, _, _ = fact
    second = y if op == "+" else -y          # the step is x + second
    if (x < 0) == (second < 0):              # (0 goes with the positive numbers)
        return abs(x), "+", abs(second), x + second
    small, big = (x, second) if abs(x) < abs(second) else (second, x)
    return abs(big), "-", abs(small), x + second


def columns(a, op, b, lang):
    """a + b or a - b (a >= b >= 0) digit by digit, units first, each a one-digit table fact
    with its carry or borrow: '5 + 8 = 13, 3 + 2 + 1 = 6' and '13 - 8 = 5, 4 - 2 - 1 = 1'."""
    if op == "+" and b > a:  # (a sum's columns run over the longer term)
        a, b = b, a
    da, db, out, c = str(a)[::-1], str(b)[::-1], [], 0
    for i in range(len(da)):
        p, q = int(da[i]), int(db[i]) if i < len(db) else 0
        if op == "+":
            out.append(f"{p} + {q}" + (" + 1" if c else "") + f" = {p + q + c}")
            c = (p + q + c) // 10
        else:
            borrow = p - q - c < 0
            out.append(f"{p + 10 * borrow} - {q}" + (" - 1" if c else "") + f" = {p + 10 * borrow - q - c}")
            c = int(borrow)
    return COMMA[lang].join(out)


def check_text(fact, lang, mode):
    """The check of a step's sum or difference, and the value it reaches, which the chain goes on
    from (the check has no verdict: README). "fix" computes it in columns; "restate", the
    control, copies the step, so it never changes anything."""
    x, op, y, z, v = fact
    if mode == "restate":
        return f"{CHECK[lang]}{SEP[lang]}{binary(x, op, y, v)} = {z}{v}", z
    a, cop, b, r = recompute(fact)
    if b == 0:  # nothing to work out in columns
        return f"{CHECK[lang]}{SEP[lang]}{binary(x, op, y, v)} = {r}{v}", r
    return (f"{CHECK[lang]}{SEP[lang]}{a}{v} {cop} {b}{v}{COLON[lang]}{columns(a, cop, b, lang)}"
            f"{COMMA[lang]}{SO[lang]}{r}{v}"), r


def checked_chain(steps, clean_steps, lang, mode):
    """A chain of `steps` (sentences in `lang`, one of them perhaps slipped in its sum) with a
    check right after each step's sum or difference (a step has one at most), before what the
    step makes of it: the step's rest follows the check's value. A check that reaches another
    value than the slipped step took the rest of the step from `clean_steps` (the same problem
    without the slip), and the chain goes on from the clean values. Returns the text and
    whether a slip was caught (then the answer is the clean one)."""
    out, fixed = [], False
    for step, clean in zip(steps, clean_steps):
        step = clean if fixed else step
        ms, mc = checkable(step), checkable(clean)
        if mode == "none" or not ms:
            out.append(step)
            continue
        line, value = check_text(fact_of(ms[0]), lang, mode)
        caught = value != int(ms[0][5])
        rest = clean[mc[0].end():] if caught else step[ms[0].end():]
        rest = rest if rest.startswith(END[lang]) else COMMA[lang] + rest.lstrip(",， ")
        out.append(f"{step[:ms[0].end()]}{END[lang]}{SEP[lang]}{line}{rest}")
        fixed = fixed or caught
    return " ".join(out), fixed


# ----------------------------------------------------------------------------------------------
# Reading a model's response

def think_part(text):
    return text.split("</think>")[0]


def has_check(text):
    """Does the response's reasoning contain a check (the world's marker, either language)?"""
    think = think_part(text)
    return any(marker in think for marker in CHECK.values())


def marker_tokens(enc):
    """Every token of the vocabulary that holds a check marker's word (Check, 验算), whatever
    comes before it (" Check", "。验算："): banned at decode, they forbid checks, which is how
    evaluate.py measures what the checks buy on the same prompts."""
    words = [m.rstrip(":：").encode() for m in CHECK.values()]
    return [i for i in range(enc.n_vocab) if i != enc.eot_token
            and any(w in enc.decode_single_token_bytes(i) for w in words)]


def check_outcomes(text):
    """Counter of what each check in the response did, judged with true arithmetic against the
    step it checks (the nearest sum or difference before it, outside checks, whose terms it
    works with): fixed (a wrong step, the check's value right), confirmed (both right), missed
    (a wrong step, the check's value wrong too), broke (a right step, the check's value wrong),
    looped (a fact checked for the third time or more) and unmatched (no step it could be the
    check of)."""
    think, out, seen = think_part(text), Counter(), Counter()
    checks = list(CHECK_RE.finditer(think))
    inside = [(m.start(), m.end()) for m in checks]
    facts = [m for m in checkable(think) if not any(a <= m.start() < b for a, b in inside)]
    for c in checks:
        said = (int(c[1]), c[3], int(c[4]))
        step = next((fact_of(f) for f in reversed([f for f in facts if f.end() <= c.start()])
                     if said in (recompute(fact_of(f))[:3], fold(*fact_of(f)[:3]))), None)
        if step is None:
            out["unmatched"] += 1
            continue
        seen[step[:3]] += 1
        if seen[step[:3]] > 2:
            out["looped"] += 1
            continue
        truth = true_value(*step[:3])
        step_right, check_right = step[3] == truth, int(c[5]) == truth
        out[("confirmed" if check_right else "broke") if step_right else ("fixed" if check_right else "missed")] += 1
    return out


if __name__ == "__main__":
    steps = ["7 * 6 = 42, 42 + 0 = 42, keep 2, carry 4, so far 2.", "2 * 6 = 12, 12 + 4 = 15, so 27 * 6 = 152."]
    clean = ["7 * 6 = 42, 42 + 0 = 42, keep 2, carry 4, so far 2.", "2 * 6 = 12, 12 + 4 = 16, so 27 * 6 = 162."]
    for mode in CHECK_MODES:
        print(f"{mode:8s}", checked_chain(steps, clean, "en", mode))
    text, _ = checked_chain(steps, clean, "en", "fix")
    print("read back:", has_check(text), dict(check_outcomes(text)))
