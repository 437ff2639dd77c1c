"""verify.py: is a predicted answer equivalent to the gold one? Math equivalence for untrusted text.

The accuracy reward (rewards.py, R1 §2.2.2) asks this thousands of times per GRPO step:
`2(x-9)(x+1)` is `2x^2 - 16x - 18`, `0.5` is `1/2`, `x = 5` is `5`, `[0,1)` is not `[0,1]`,
`x \\geq 5` is `5 \\leq x`, but `0.333` is not `1/3` and "3 or 4" is not 3. latex.py and parse.py
read each answer (the toy world's plain forms and the public math sets' LaTeX: latex.py's
docstring lists them) into sympy objects through a whitelist; here are the ladder of comparisons
from cheapest to dearest, the worker process that runs the dear ones under a deadline, and the
finders of the final answer in a text.

    python verify.py FILE.jsonl          # lines with "gold" and "pred" (or "completion")
    python -m pytest test_verify.py -q   # the tests

The threat model. R1 avoids neural reward models because a policy optimised against one hacks
it (§2.2.2); rules get hacked too, so every answer is treated as an adversary's:
1. Code execution: sympy's string parser runs Python, so model text never reaches it (nor
   sympify, parse_expr or eval). latex.py's tokenizer and parse.py's recursive descent accept a
   whitelist and build sympy objects directly; any other character or word (`_` outside a
   subscript, quotes, lambda, nan, inf, zoo, `!`, full-width digits ...) rejects the answer.
2. Exhaustion (9^9^9^9, 1000000!, exp(exp(exp(100))), 100,000 characters, 500 nested brackets):
   length, tokens, nesting and digits are capped while tokenizing, and each operation, function
   included, estimates its result (terms after expansion, bits of numbers) before sympy computes
   it. What still runs long hits a wall-clock deadline enforced by killing a worker process (not
   an alarm signal, which works only in the main thread), whose address space is capped.
3. Crashing the checker: a failure, timeout or out-of-memory is a verdict of its own ('fail',
   'timeout', 'oom'), never 'yes'; rewards.py scores it 0 and counts it.
4. Hedging: "3 or 4", "3, 4", "$3$ or $4$", `1 \\pm 1`, or a set of roots with one too many never
   equal one gold value; two \\boxed{} in an answer are no answer.
5. Restating the problem: an equation in one variable with no side alone (`2x + 3 = 13`) is not
   an answer, and an interval gold is matched only by a solved relation (`x > 5`, not
   `2x + 3 > 13`). Relations are equal to relations up to a positive factor (`-x > -1` is `x < 1`),
   so a restated linear inequality does equal a relation gold: write such golds as intervals.
6. Tolerance abuse: no absolute tolerance; relative 1e-6 only for numbers written with a decimal
   point (0.333333333 equals 1/3, 0.333 does not); decimals are exact rationals, so 0.5x equals
   x/2 (but 0.333333333x is not x/3). A percent gold `28\\%` equals 28, never 0.28.

The ladder, cheapest first: words against words (`\\text{(C)}` is `C`), normalised strings, exact
rationals of plain numbers (all in the calling process, settling most verdicts); then, in the
worker, structures: `x = 5` is `5` either way round, `y = 5` is not `x = 5`, tuples and matrices
are ordered, lists of roots are sets, intervals and unions are sets of pieces whose open and
closed ends matter, relations and equations are equal up to a constant factor. Expressions are
evaluated at a rational point (a cheap proof that most wrong answers differ), and only then is
their difference expanded / cancelled / simplified (which finds tan^2 y + 1 = sec^2 y).
"""

import argparse
import atexit
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from fractions import Fraction

import sympy

from latex import (MAX_CHARS, Rejected, boxed_spans, choice, is_list, math_spans, normalize,
                   plain_number, text_answer, text_key, tokenize)
from parse import Answer, Parser, parse_answer  # noqa: F401 (Parser: for tests and users, as before)

# ----------------------------------------------------------------------------- limits
MEM_MB = 1024        # address space the worker may add to what it holds at start-up
DEADLINE_S = 1.0     # wall clock per verdict that needs the worker
REL_TOL = Fraction(1, 10**6)
_INFINITE = (sympy.oo, -sympy.oo)


def validate_gold(answer: str) -> None:
    """Raise ValueError if a gold answer does not parse; call it when building a data set."""
    try:
        parse_answer(answer)
    except Rejected as err:
        raise ValueError(f"gold answer {answer!r} does not parse: {err}") from None


# ----------------------------------------------------------------------------- the cheap rungs
def numbers_close(a: Fraction, b: Fraction, tolerant: bool) -> bool:
    return a == b or (tolerant and abs(a - b) <= REL_TOL * max(abs(a), abs(b)))


def cheap_verdict(pred: str, gold: str) -> bool | None:
    """The rungs cheap enough for the calling process; None if undecided. Raises Rejected."""
    pred_words = text_key(pred)
    if pred_words is not None and pred_words == text_key(gold):
        return True  # \text{(C)} and C, \text{Evelyn} and Evelyn.
    gold_choice = choice(gold)
    if gold_choice is not None and choice(pred) is not None:
        return choice(pred) == gold_choice  # (C) 12 answers C
    if text_answer(pred) is not None or text_answer(gold) is not None:
        return False  # words equal nothing but the same words
    norm_gold = normalize(gold)
    norm_pred = normalize(pred, not is_list(norm_gold))
    tokenize(norm_pred)  # the whitelist: garbage never reaches sympy or the worker
    if norm_pred == norm_gold:
        return True
    pred_num, gold_num = plain_number(norm_pred), plain_number(norm_gold)
    if pred_num is None or gold_num is None:
        return None
    pred_var, pred_value, pred_decimal = pred_num
    gold_var, gold_value, gold_decimal = gold_num
    if pred_var and gold_var and pred_var != gold_var:
        return False  # y = 5 is not x = 5
    return numbers_close(pred_value, gold_value, pred_decimal or gold_decimal)


# ----------------------------------------------------------------------------- the symbolic rungs
def full_verdict(pred: str, gold: str) -> bool:
    """The whole ladder, in-process: what the worker runs behind the deadline."""
    cheap = cheap_verdict(pred, gold)
    if cheap is not None:
        return cheap
    try:
        gold_answer = parse_answer(gold)
    except Rejected as err:  # a data bug, not the model's fault: counted as a failure
        raise ValueError(f"gold answer {gold!r} does not parse: {err}") from None
    return answers_match(parse_answer(pred, not is_list(normalize(gold))), gold_answer)


def answers_match(pred: Answer, gold: Answer) -> bool:
    """Two parsed answers mean the same, marks included: a gold percent is its number (`28\\%`
    is 28, never 0.28); a predicted percent p is p or p/100 where the gold has none; an angle in
    degrees is also its value in radians (`90^\\circ` is pi/2) where the other side has no mark."""
    tolerant = pred.decimal or gold.decimal
    if answers_equal(pred.structure, gold.structure, tolerant):
        return True
    kind, var, value = pred.structure if pred.structure[0] == "scalar" else (None, None, None)
    if kind and "%" in pred.marks and "%" not in gold.marks:
        return answers_equal((kind, var, value / 100), gold.structure, tolerant)
    if kind and "°" in gold.marks and "°" not in pred.marks and value.has(sympy.pi):
        return answers_equal((kind, var, value * 180 / sympy.pi), gold.structure, tolerant)
    if kind and "°" in pred.marks and "°" not in gold.marks and gold.structure[0] == "scalar":
        return answers_equal((kind, var, value * sympy.pi / 180), gold.structure, tolerant)
    return False


def without_repeats(answer):
    """Drop repeated members of a set; a set of one is that one ("3 or 3" is no hedge)."""
    if answer[0] != "set":
        return answer
    members = [m for i, m in enumerate(answer[1]) if m not in answer[1][:i]]
    return members[0] if len(members) == 1 else ("set", tuple(members))


def answers_equal(pred, gold, tolerant: bool) -> bool:
    """Two parsed structures (see parse.parse_answer) mean the same."""
    pred, gold = without_repeats(pred), without_repeats(gold)
    kinds = {pred[0], gold[0]}
    if "text" in kinds:
        words = [a[1] if a[0] == "text" else a[2].name.lower() if a[0] == "scalar" and a[1] is None
                 and a[2].is_Symbol else None for a in (pred, gold)]
        return words[0] is not None and words[0] == words[1]  # \text{(C)} and the letter C
    if kinds & {"interval", "union", "rel", "minus"}:
        return sets_equal(pred, gold, tolerant)
    if "eq" in kinds or (kinds == {"scalar"} and None not in (pred[1], gold[1]) and pred[1] != gold[1]):
        pred_zero, gold_zero = equation_side(pred), equation_side(gold)
        return None not in (pred_zero, gold_zero) and proportional(pred_zero, gold_zero, False)
    if "matrix" in kinds:
        return matrices_equal(pred, gold, tolerant)
    if kinds == {"set", "tuple"}:
        pred, gold = as_tuple(pred), as_tuple(gold)
    kind = pred[0]
    if kind != gold[0] or (kind != "scalar" and len(pred[1]) != len(gold[1])):
        return False  # a list never equals a single value: that is how hedges score 0
    if kind == "scalar":
        _, pred_var, pred_expr = pred
        _, gold_var, gold_expr = gold
        return exprs_equal(pred_expr, gold_expr, tolerant)  # one var at most: see above
    if kind == "tuple":
        return all(exprs_equal(p, g, tolerant) for p, g in zip(pred[1], gold[1]))
    return matched(pred[1], gold[1], lambda p, g: answers_equal(p, g, tolerant))


def as_tuple(answer):
    """A list against a tuple: `3, \\frac{\\pi}{2}` is the pair in the order written, and
    `y = -3, x = 4` (distinct variables) the pair ordered by name, (4, -3)."""
    members = answer[1] if answer[0] == "set" else ()
    if not members or any(m[0] != "scalar" for m in members):
        return answer
    names = [str(m[1]) for m in members if m[1] is not None]
    if not names:
        return ("tuple", tuple(m[2] for m in members))
    if len(names) != len(members) or len(set(names)) != len(names):
        return answer
    return ("tuple", tuple(m[2] for m in sorted(members, key=lambda m: str(m[1]))))


def matched(preds, golds, equal) -> bool:
    """Each gold member claims a distinct equal predicted member (a set, a union)."""
    if len(preds) != len(golds):
        return False
    unmatched = list(preds)
    for gold in golds:
        hit = next((i for i, pred in enumerate(unmatched) if equal(pred, gold)), None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return True


def equation_side(answer):
    """An equation as one expression equal to zero: ("eq", e) is e, `y = 2x` is y - 2x."""
    if answer[0] == "eq":
        return answer[1]
    return answer[1] - answer[2] if answer[0] == "scalar" and answer[1] is not None else None


def matrices_equal(pred, gold, tolerant: bool) -> bool:
    """Elementwise, same shape; a tuple is a column vector, and two vectors compare flat."""
    def rows(a):
        return a[1] if a[0] == "matrix" else tuple((e,) for e in a[1]) if a[0] == "tuple" else None
    pred_rows, gold_rows = rows(pred), rows(gold)
    if pred_rows is None or gold_rows is None:
        return False
    if all(len(m) == 1 or len(m[0]) == 1 for m in (pred_rows, gold_rows)):
        pred_rows, gold_rows = [sum(pred_rows, ())], [sum(gold_rows, ())]
    return len(pred_rows) == len(gold_rows) and all(
        len(p) == len(g) and all(exprs_equal(a, b, tolerant) for a, b in zip(p, g))
        for p, g in zip(pred_rows, gold_rows))


def sets_equal(pred, gold, tolerant: bool) -> bool:
    """Intervals, unions and relations. Two relations solved for the same variable are equal if
    their solution sets are (`x \\geq 5`, `5 \\leq x`), others if their conditions are equal up to
    positive factors (`-x > -1`, `x < 1`). Against an interval, a relation must be solved (see
    the threat model, 5): `x > 5` is `(5, \\infty)`, `2x + 3 > 13` is not."""
    if pred[0] == gold[0] == "rel":
        pred_pieces, gold_pieces = pieces(pred), pieces(gold)
        if pred[2] is not None and pred[2] == gold[2] and None not in (pred_pieces, gold_pieces):
            return pieces_equal(pred_pieces, gold_pieces, tolerant)
        return matched(pred[1], gold[1], lambda p, g: p[0] == g[0] and proportional(
            p[1], g[1], positive=g[0] != "!="))
    return pieces_equal(pieces(pred), pieces(gold), tolerant)


def pieces(answer) -> list | None:
    """The answer as a union of intervals (lo, hi, lo_closed, hi_closed), a point being
    (a, a, True, True); None if it is no set of numbers. A pair (a, b) is also the open interval."""
    kind = answer[0]
    if kind == "interval":
        return [answer[1:]]
    if kind == "tuple" and len(answer[1]) == 2:
        return [(*answer[1], False, False)]
    if kind == "scalar" and answer[1] is None:
        return [(answer[2], answer[2], True, True)]
    if kind in ("set", "union"):
        found = [pieces(member) for member in answer[1]]
        return None if None in found else [piece for some in found for piece in some]
    if kind == "rel" and answer[2] is not None:
        return solved_pieces(answer[1], answer[2])
    if kind == "minus":  # R \ {3}: intervals with points taken out
        found, points = pieces(answer[1]), pieces(answer[2])
        if found is None or points is None or any(p[0] != p[1] for p in points):
            return None
        for point, *_ in points:
            found = [part for piece in found for part in without_point(piece, point)]
        return found
    return None


def without_point(piece, point) -> list:
    """An interval with a point taken out: split in two where the point lies inside it."""
    lo, hi, lo_closed, hi_closed = piece
    try:
        if bool(lo < point) and bool(point < hi):
            return [(lo, point, lo_closed, False), (point, hi, False, hi_closed)]
    except TypeError:  # a symbolic end: no order known
        return [piece]
    return [(lo, hi, lo_closed and lo != point, hi_closed and hi != point)]


def solved_pieces(conditions, var) -> list | None:
    """x > 2 is (2, oo); -1 < x <= 2 is (-1, 2]; x != 3 is (-oo, 3) U (3, oo); None where a
    bound is given twice."""
    lower, upper = None, None
    for op, expr in conditions:
        bound = var - expr  # expr = x - c (a lower bound c) or c - x (an upper bound c)
        if var in bound.free_symbols:
            bound = expr + var
            if op == "!=" or upper is not None or var in bound.free_symbols:
                return None
            upper = (bound, op == ">=")
        elif op == "!=":
            return [(-sympy.oo, bound, False, False), (bound, sympy.oo, False, False)]
        elif lower is None:
            lower = (bound, op == ">=")
        else:
            return None
    lo, lo_closed = lower or (-sympy.oo, False)
    hi, hi_closed = upper or (sympy.oo, False)
    return [(lo, hi, lo_closed, hi_closed)]


def pieces_equal(pred, gold, tolerant: bool) -> bool:
    """The same pieces with the same ends, open and closed alike, in any order."""
    return None not in (pred, gold) and matched(pred, gold, lambda p, g: p[2:] == g[2:] and (
        exprs_equal(p[0], g[0], tolerant) and exprs_equal(p[1], g[1], tolerant)))


def proportional(a, b, positive: bool) -> bool:
    """a = c * b for a constant c != 0 (c > 0 if `positive`): the same equation (2x+4y-3 and
    y + x/2 - 3/4) or inequality. c is read at a rational point where both are clearly non-zero,
    checked at a second, then a * b(point) = b * a(point) is proved like any equality."""
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    values = []
    for shift in (0, 5):
        point = rational_point(symbols, shift)
        exact = (a.xreplace(point), b.xreplace(point))
        value_a, value_b = sympy.N(exact[0], 30), sympy.N(exact[1], 30)
        if not (value_a.is_finite and value_b.is_finite) or min(abs(value_a), abs(value_b)) < 1e-12:
            continue  # a pole or a zero here: try the other point
        values.append((exact, value_a / value_b))
    if not symbols or not values or (len(values) == 2 and abs(values[0][1] - values[1][1])
                                     > 1e-12 * (1 + abs(values[0][1]))):
        return False
    (at_a, at_b), ratio = values[0]
    if positive and not (ratio.is_real and ratio > 0):
        return False  # -x > -1 is x < 1, but x > 1 is not x < 1
    return exprs_equal(a * at_b, b * at_a, False)


def rational_point(symbols, shift: int = 0) -> dict:
    return {s: sympy.Rational(7 + 3 * i + shift, 11 + 2 * i + shift) for i, s in enumerate(symbols)}


def exprs_equal(a, b, tolerant: bool) -> bool:
    """Two sympy expressions are equal (numerically within REL_TOL if `tolerant`)."""
    if a == b:
        return True
    if a in _INFINITE or b in _INFINITE:
        return False
    if a.is_Rational and b.is_Rational:
        return numbers_close(Fraction(int(a.p), int(a.q)), Fraction(int(b.p), int(b.q)), tolerant)
    if tolerant and not (a.free_symbols or b.free_symbols):
        value_a, value_b = sympy.N(a, 30), sympy.N(b, 30)
        return bool(abs(value_a - value_b) <= float(REL_TOL) * max(abs(value_a), abs(value_b)))
    if differs_somewhere(a, b):
        return False  # most wrong answers end here, before any expansion
    diff = sympy.expand(a - b)
    if diff == 0:
        return True
    poly = diff.as_poly(*sorted(diff.free_symbols, key=str)) if diff.free_symbols else None
    if poly is not None and poly.domain in (sympy.ZZ, sympy.QQ):
        return False  # canonical over the rationals: a non-zero polynomial is not zero
    return sympy.cancel(a - b) == 0 or sympy.simplify(a - b) == 0


def differs_somewhere(a, b) -> bool:
    """A cheap proof of inequality: a and b are clearly apart at one rational point (30-digit
    evaluation). It never proves equality, so a point an adversary anticipates (a pole, a common
    root) can only cost time, never earn a reward."""
    point = rational_point(sorted(a.free_symbols | b.free_symbols, key=str))
    value_a, value_b = sympy.N(a.xreplace(point), 30), sympy.N(b.xreplace(point), 30)
    if not (value_a.is_finite and value_b.is_finite):
        return False  # a pole: no conclusion
    return bool(abs(value_a - value_b) > 1e-15 * (1 + abs(value_a) + abs(value_b)))


# ----------------------------------------------------------------------------- the worker
def limit_memory(mem_mb: int):
    """Cap this process's address space at what it holds now plus mem_mb (Linux only)."""
    try:
        import resource  # POSIX only: an optional extra, guarded here
        with open("/proc/self/statm") as f:
            held = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = held + mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))
    except (ImportError, OSError, ValueError):
        pass  # not Linux: the deadline still bounds the time, not the memory


def worker_main(mem_mb: int):
    """The worker process: one JSON request per line in, one verdict per line out."""
    limit_memory(mem_mb)
    ops = {"eq": full_verdict, "sleep": time.sleep, "alloc": bytearray}  # the last two: for tests
    print("ready", flush=True)
    for line in sys.stdin:
        op, *args = json.loads(line)
        try:
            reply = "yes" if ops[op](*args) else "no"
        except Rejected:
            reply = "reject"
        except MemoryError:
            reply = "oom"
        except Exception:  # RecursionError, sympy internals, a bad gold: never end the loop
            reply = "fail"
        print(reply, flush=True)


def _forward_lines(stream, replies: queue.Queue):
    for line in stream:
        replies.put(line.strip())
    replies.put(None)  # the worker is gone


class Worker:
    """Owns the worker process that runs the symbolic rungs, one verdict at a time.

    The worker is a fresh interpreter (`python -c`, not a fork): it imports only this module and
    sympy, so it holds no torch or CUDA state, and a restart costs a sympy import, not a trainer
    import. A verdict that misses its deadline gets the worker killed; the next one starts anew.
    """

    def __init__(self, mem_mb: int = MEM_MB):
        self.mem_mb, self.proc, self.lock, self.restarts = mem_mb, None, threading.Lock(), 0

    def _start(self):
        here = os.path.dirname(os.path.abspath(__file__))
        module = os.path.splitext(os.path.basename(__file__))[0]  # this file, even run as __main__
        code = (f"import sys; sys.path.insert(0, {here!r}); import {module}; "
                f"{module}.worker_main({self.mem_mb})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, encoding="ascii", bufsize=1)
        self.replies = queue.Queue()
        threading.Thread(target=_forward_lines, args=(self.proc.stdout, self.replies),
                         daemon=True).start()
        try:
            ready = self.replies.get(timeout=120)  # generous: a busy machine imports slowly
        except queue.Empty:
            ready = None
        if ready != "ready":
            self._kill()
            raise RuntimeError("the verify worker process did not start")

    def _kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc, self.restarts = None, self.restarts + 1

    def ask(self, op: str, args: tuple, deadline_s: float = DEADLINE_S) -> str:
        """'yes' | 'no' | 'reject' | 'fail' | 'oom' | 'timeout'."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write(json.dumps([op, *args]) + "\n")  # json escapes to ASCII
                self.proc.stdin.flush()
                reply = self.replies.get(timeout=deadline_s)
            except queue.Empty:
                reply = "timeout"
            except OSError:  # a broken pipe: the worker died before it could answer
                reply = None
            if reply in (None, "timeout", "oom"):
                self._kill()  # never reuse a process in an unknown state
            return reply or "fail"

    def close(self):
        if self.proc is not None:
            self._kill()  # the worker holds no state worth a graceful exit


WORKER = Worker()  # starts its process on first use
atexit.register(WORKER.close)


# ----------------------------------------------------------------------------- the verdict
def verdict(pred: str, gold: str, deadline_s: float = DEADLINE_S) -> str:
    """'yes' | 'no' | 'reject' (outside the whitelist or over a limit) | 'fail' (checker error,
    a gold that does not parse) | 'oom' | 'timeout'. Only 'yes' means equivalent."""
    try:
        cheap = cheap_verdict(pred, gold)
    except Rejected:
        return "reject"
    if cheap is not None:
        return "yes" if cheap else "no"
    return WORKER.ask("eq", (pred, gold), deadline_s)


def is_equivalent(pred: str, gold: str, deadline_s: float = DEADLINE_S) -> bool:
    """Is the predicted answer the gold one? `pred` is untrusted and never evaluated."""
    return verdict(pred, gold, deadline_s) == "yes"


# ----------------------------------------------------------------------------- finding the answer
_LIST_GLUE_RE = re.compile(r"\s*(?:,|;|or|and|\\text\{\s*(?:or|and)\s*\}|\\quad)?\s*", re.I)
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:)\s*:?\s*", re.I)
_GSM8K_RE = re.compile(r"####\s*([^\n]{1,%d})" % MAX_CHARS)


def last_of(text: str, spans: list) -> str | None:
    """The last span's content; with the spans just before it glued to it by list words only
    ("$3$ or $4$", "\\boxed{3}, \\boxed{4}"), all of them as one list: a hedge stays a hedge."""
    run = 1
    while run < len(spans) and _LIST_GLUE_RE.fullmatch(text[spans[-run - 1][1]:spans[-run][0]]):
        run += 1
    return ", ".join(content.strip() for *_, content in spans[-run:]) or None


def answer_in_block(block: str) -> str | None:
    """The answer inside an <answer> block: its one \\boxed{} (two or an unclosed one: None);
    else its last math span; else the words after its last "answer is"; else the whole block."""
    if re.search(r"\\(?:boxed|fbox)", block):
        boxes = boxed_spans(block)
        one = len(boxes) == 1 and len(re.findall(r"\\(?:boxed|fbox)", block)) == 1
        return (boxes[0][2].strip() or None) if one else None
    tail = block[-4 * MAX_CHARS:]  # an answer sits at the end; bounds the searches below
    spans = math_spans(tail)
    if spans:
        return last_of(tail, spans)
    return (after_answer_is(tail) or block).strip() or None


def after_answer_is(text: str) -> str | None:
    """What follows the last "answer is" / "answer:" in `text`, up to the end of its sentence."""
    last = None
    for last in _ANSWER_IS_RE.finditer(text):  # one linear pass: the last one counts
        pass
    rest = text[last.end():last.end() + MAX_CHARS] if last else ""
    end = re.search(r"\.\s|\n", rest)
    return (rest[:end.start()] if end else rest).strip().rstrip(".") or None


def find_final_answer(text: str) -> str | None:
    """The final answer in free text without the template (another model's output): its last
    \\boxed{} (with any boxes listed just before it, as one list), else GSM8K's `#### 72`, else
    what follows the last "answer is" / "answer:" (its last math span if it has one); None if
    there is none."""
    boxes = boxed_spans(text)
    if boxes:
        return last_of(text, boxes)
    marked = _GSM8K_RE.findall(text)
    if marked:
        return marked[-1].strip() or None
    phrase = after_answer_is(text)
    spans = math_spans(phrase or "")
    return last_of(phrase, spans) if spans else phrase


# ----------------------------------------------------------------------------- checking a file
def check_file(path: str, out=None) -> Counter:
    """Print one verdict per JSON line of `path` (to `out`, default stdout), then the accuracy,
    the lines whose gold or prediction could not be read (FILE:LINE) and, where lines carry a
    boolean "expected", the agreement with it; return the verdict counts. A "pred" is read as an
    <answer> block's content, a "completion" through its <answer> block if it has one, else
    through find_final_answer."""
    from rewards import extract_answer  # rewards.py imports this module: a real cycle at the top
    counts, unreadable, disagree, n_expected = Counter(), [], [], 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not JSON ({err.msg})") from None
            if row is not None and not (isinstance(row, dict) and "gold" in row
                                        and ("pred" in row or "completion" in row)):
                raise ValueError(f"{path}:{lineno}: needs 'gold' and 'pred' or 'completion'")
            if row is None:
                continue
            gold, text = str(row["gold"]), str(row.get("pred", row.get("completion")))
            pred = (answer_in_block(text) if "pred" in row else extract_answer(text)
                    if "<answer>" in text else find_final_answer(text))
            try:
                validate_gold(gold)
                result = "no answer" if pred is None else verdict(pred, gold)
            except ValueError:
                result = "unreadable gold"
            counts[result] += 1
            where = f"{path}:{lineno}: {result}"
            if result in ("unreadable gold", "reject", "fail"):
                unreadable.append(f"{where}: pred {pred!r}, gold {gold!r}")
            if isinstance(row.get("expected"), bool):
                n_expected += 1
                if row["expected"] != (result == "yes"):
                    disagree.append(f"{where}, expected {row['expected']}: pred {pred!r}, gold {gold!r}")
            print(f"{lineno}\t{result}\t{pred!r}\t{gold!r}", file=out)
    total = sum(counts.values())
    tally = ", ".join(f"{name} {n}" for name, n in counts.most_common())
    print(f"{counts['yes']}/{total} equivalent ({100 * counts['yes'] / max(total, 1):.1f}%): {tally}",
          file=out)
    agreed = n_expected - len(disagree)
    for line in unreadable + ([f"agreement with 'expected': {agreed}/{n_expected} "
                               f"({100 * agreed / n_expected:.1f}%)", *disagree] if n_expected else []):
        print(line, file=out)
    return counts


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="Check predicted answers against gold answers.")
    cli.add_argument("file", help='JSON lines, each with "gold" and "pred" or "completion" '
                                  '(and optionally a boolean "expected")')
    try:
        check_file(cli.parse_args().file)
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        sys.exit(f"verify.py: {err}")
