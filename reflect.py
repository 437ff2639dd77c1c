"""
Reflection in the toy world: the check step that chains may carry, written into the corpus
(data.py) and read back out of a model's responses (evaluate.py, the GRPO loop's metrics).

    python reflect.py          # a checked chain, a caught slip, and how a response is read

R1-Zero learned, unprompted, to stop, re-check a step and redo it (R1 §2.2.4, the "aha
moment"). Here a chain may follow a step with a check: the step's key fact recomputed another
way, which is a computation a small model can do, not a phrase it can copy.
  - a product is recomputed with its factors swapped:  7 * 6 = 44.  Check: 6 * 7 = 42, against 44: wrong.
  - a sum is undone by subtracting back (and back):    40x + 6x = 48x.  Check: 48x - 6x = 42x, against 40x: wrong.
  - a quotient is multiplied back:                     18 / 3 = 6.  Check: 6 * 3 = 18, against 18: right.
A check that disagrees with the step is followed by "Redo:" and the step done again, and the
chain goes on from the redone values. The check writes the step's value beside its own before
its verdict, so that deciding "wrong" compares two adjacent numbers. Because the check reads the step as written, it catches
the model's own slips, not only the corpus's: a model that wrote 7 * 6 = 44 and then computes
6 * 7 = 42 has found its slip.

The controls of the issue's claim are other corpora, not other rewards (no reward term ever
names a check): `check_mode` "none" writes no checks at all (the world before this file), and
"restate" writes checks that only repeat the step (Check: 7 * 6 = 44, against 44: right.), which never catch
anything. In "fix" (the real check) and "restate" the corpus holds the same documents, slips
included; only what the check computes differs.

Reading a response: `has_check` looks for the world's fixed marker (Check: / 验算：), not for
words like "wait". `check_outcomes` pairs each check with the fact it checks and counts, with
the true arithmetic, the checks that fixed a wrong step, confirmed a right one, missed a wrong
one, broke a right one (called it wrong), or looped (the same fact checked a third time).
"""
import re
from collections import Counter

CHECK_MODES = ("none", "fix", "restate")
OUTCOMES = ("fixed", "failed", "confirmed", "missed", "broke", "looped", "unmatched")
CHECK = {"en": "Check:", "zh": "验算："}
REDO = {"en": "Redo:", "zh": "重做："}
AGAINST = {"en": ", against ", "zh": "，对照 "}   # the step's value, copied next to the check's
VERDICT = {"en": (": right", ": wrong"), "zh": ("：对", "：错")}
END = {"en": ".", "zh": "。"}
SEP = {"en": " ", "zh": ""}  # after the colon: "Check: 6 * 7 = 42.", "验算：6 * 7 = 42。"
INVERSE = {"+": "-", "-": "+", "/": "*"}  # a sum is undone by a difference, and so on; "*" swaps

# "40x + 6x = 46x", "-6 * -1 = 6", "58 / 2 = 29": (x, op, y, z) and the variable suffix
FACT = re.compile(r"(-?\d+)(x?) ([-+*/]) (-?\d+)x? = (-?\d+)x?")


def _any(strings, group="?:"):
    return f"({group}" + "|".join(map(re.escape, strings)) + ")"


# a check as the world writes it, its parts optional so that a model's half-written check is read too;
# group 6 is the "wrong" verdict, None when the check agreed
CHECK_RE = re.compile(_any(CHECK.values()) + " ?" + FACT.pattern + _any(AGAINST.values()) + r"?(?:-?\d+x?)?"
                      + _any((v[1] for v in VERDICT.values()), group="") + "?")


def true_value(x, op, y):
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None}[op]


def first_fact(text):
    """The step's key fact, the first `x op y = z` in it, as ints and its suffix; None if none."""
    m = FACT.search(text)
    return None if m is None else (int(m[1]), m[3], int(m[4]), int(m[5]), m[2])


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
    """The check of a fact, another way: ((a, op, b, result), the value the step must show)."""
    x, op, y, z, _ = fact
    if op == "*":
        return (y, "*", x, x * y), z        # swap the factors; must give the step's result
    back = INVERSE[op]
    return (z, back, y, int(true_value(z, back, y))), x  # undo the step; must give its first term


def check_text(fact, lang, mode):
    """The check sentence after a step whose key fact is `fact`, and whether it finds a slip.
    The check writes its own result, then the step's value beside it, then the verdict: the
    comparison is of two numbers side by side, which a small model can learn."""
    x, op, y, z, v = fact
    if mode == "restate":  # the control: the step repeated, compared with itself
        (a, cop, b, r), want = (x, op, y, z), z
    else:
        (a, cop, b, r), want = recompute(fact)
    slip = r != want
    return (f"{CHECK[lang]}{SEP[lang]}{binary(a, cop, b, v)} = {r}{v}{AGAINST[lang]}{want}{v}"
            f"{VERDICT[lang][slip]}{END[lang]}"), slip


def checked_chain(steps, clean_steps, lang, mode):
    """A chain of `steps` (sentences in `lang`, one of them perhaps slipped) with a check after
    each step that has a key fact. A check that finds a slip redoes the step from
    `clean_steps` (the same problem without the slip), and the chain goes on from there.
    Returns the text and whether a slip was caught (then the answer is the clean one)."""
    out, fixed = [], False
    for step, clean in zip(steps, clean_steps):
        step = clean if fixed else step
        out.append(step)
        fact = first_fact(step)
        if fact is not None and mode != "none":
            line, slip = check_text(fact, lang, mode)
            out.append(line)
            if slip:
                out.append(f"{REDO[lang]}{SEP[lang]}{clean}")
                fixed = True
    return " ".join(out), fixed


# ----------------------------------------------------------------------------------------------
# Reading a model's response

def think_part(text):
    return text.split("</think>")[0]


def has_check(text):
    """Does the response's reasoning contain a check (the world's marker, either language)?"""
    think = think_part(text)
    return any(marker in think for marker in CHECK.values())


def check_outcomes(text):
    """Counter of what each check in the response did, judged with true arithmetic: fixed (a
    wrong step, called wrong, redone right), failed (a wrong step redone wrong again), missed
    (a wrong step confirmed), confirmed (a right step confirmed), broke (a right step called
    wrong), looped (a fact checked for the third time or more) and unmatched (no fact before
    the check that it could be the check of)."""
    think, out, seen = think_part(text), Counter(), Counter()
    checks = list(CHECK_RE.finditer(think))
    inside = [(m.start(), m.end()) for m in checks]
    facts = [m for m in FACT.finditer(think) if not any(a <= m.start() < b for a, b in inside)]
    for c in checks:
        said = fold(int(c[1]), c[3], int(c[4]))
        step = None
        for f in reversed([f for f in facts if f.end() <= c.start()]):
            fact = (int(f[1]), f[3], int(f[4]), int(f[5]), f[2])
            if said in (fold(*recompute(fact)[0][:3]), fold(*fact[:3])):
                step = fact
                break
        if step is None:
            out["unmatched"] += 1
            continue
        seen[step[:3]] += 1
        if seen[step[:3]] > 2:
            out["looped"] += 1
            continue
        right = true_value(*step[:3]) == step[3]
        if c[6] is None:  # "right": the check agreed with the step
            out["confirmed" if right else "missed"] += 1
        elif right:
            out["broke"] += 1
        else:
            redo = next((f for f in facts if f.start() >= c.end()), None)
            redone = redo is not None and fold(int(redo[1]), redo[3], int(redo[4])) == fold(*step[:3]) \
                and true_value(*step[:3]) == int(redo[5])
            out["fixed" if redone else "failed"] += 1
    return out


if __name__ == "__main__":
    steps = ["7 * 6 = 44, 44 + 3 = 47, keep 7, carry 4, so far 7.", "2 * 6 = 12, 12 + 4 = 16, so 27 * 6 = 167."]
    clean = ["7 * 6 = 42, 42 + 3 = 45, keep 5, carry 4, so far 5.", "2 * 6 = 12, 12 + 4 = 16, so 27 * 6 = 165."]
    for mode in CHECK_MODES:
        print(f"{mode:8s}", checked_chain(steps, clean, "en", mode))
    text, _ = checked_chain(steps, clean, "en", "fix")
    print("read back:", has_check(text), dict(check_outcomes(text)))
