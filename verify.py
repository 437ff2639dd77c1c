"""verify.py: is a predicted answer equivalent to the gold one? Math equivalence for untrusted text.

The accuracy reward (rewards.py, R1 §2.2.2) asks this thousands of times per GRPO step:
`2(x-9)(x+1)` is `2x^2 - 16x - 18`, `0.5` is `1/2`, `x = 5` is `5`, but `0.333` is not `1/3`
and "3 or 4" is not 3. Here are a whitelist parser of the toy world's and the public math sets'
answer forms (plain, LaTeX, a Chinese keyboard's) into sympy objects, a ladder of comparisons
from cheapest to dearest, and the worker process that runs the dear ones under a deadline.

    python verify.py FILE.jsonl          # lines with "gold" and "pred" (or "completion")
    python -m pytest test_verify.py -q   # the tests

The threat model. R1 avoids neural reward models because a policy optimised against one hacks
it (§2.2.2); rules get hacked too, so every answer is treated as an adversary's:
1. Code execution: sympy's string parser runs Python, so model text never reaches it. Our own
   tokenizer and recursive-descent parser accept a whitelist (integers, decimals, + - * / ^ **,
   implicit products, brackets, one-letter variables, sqrt, \\frac, \\sqrt, \\cdot, pi, `x = ...`,
   comma / "or" lists) and build sympy objects directly; any other character or word (`_`,
   quotes, lambda, nan, inf, zoo, `!`, full-width digits ...) rejects the answer.
2. Exhaustion (9^9^9^9, 1000000!, 100,000 characters, 500 nested brackets): length, tokens,
   nesting and digits are capped while tokenizing, and each operation estimates its result
   (terms after expansion, bits of numbers) before sympy computes it. What still runs long hits
   a wall-clock deadline enforced by killing a worker process (not an alarm signal, which works
   only in the main thread), whose address space is capped with RLIMIT_AS.
3. Crashing the checker: a failure, timeout or out-of-memory is a verdict of its own ('fail',
   'timeout', 'oom'), never 'yes'; rewards.py scores it 0 and counts it.
4. Hedging: "3 or 4", "3, 4", or a set of roots with one too many never equal one gold value.
5. Tolerance abuse: no percent or absolute tolerance; relative 1e-6 only for numbers written with
   a decimal point (0.333333333 equals 1/3, 0.333 does not). Decimals are read as exact
   rationals, so 0.5x equals x/2 exactly (but 0.333333333x does not equal x/3).

The ladder, cheapest first: normalised strings, then exact rationals of plain numbers (both in
the calling process, settling most verdicts); then, in the worker, parse both sides, compare
structure (`x = 5` equals `5` either way round, `y = 5` is not `x = 5`, tuples are ordered,
lists of roots are sets), evaluate both at one rational point (a cheap proof that most wrong
answers differ), and only then expand / cancel / simplify the difference.
"""

import argparse
import atexit
import json
import math
import operator
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter, namedtuple
from fractions import Fraction
from functools import lru_cache

import sympy

# ----------------------------------------------------------------------------- limits
MAX_CHARS = 400      # a toy-world answer is a few dozen characters
MAX_TOKENS = 200     # (500 nested parentheses are 1,001 tokens)
MAX_DEPTH = 16       # brackets, roots, fractions and exponents inside one another
MAX_DIGITS = 40      # digits of one literal
MAX_ITEMS = 10       # members of a tuple or a list of roots
MAX_EXP = 1000       # |numerator| of an exponent
MAX_ROOT = 12        # largest denominator of an exponent: x^(1/3) fine, x^(1/99) not
MAX_TERMS = 1000     # estimated terms after full expansion (a toy answer has a handful)
MAX_BITS = 20000     # estimated bits of the largest number the arithmetic can create
MEM_MB = 1024        # address space the worker may add to what it holds at start-up
DEADLINE_S = 1.0     # wall clock per verdict that needs the worker
REL_TOL = Fraction(1, 10**6)


class Rejected(Exception):
    """The answer is outside the whitelist or over a limit: not equivalent, nothing was run."""


# ----------------------------------------------------------------------------- normaliser and tokenizer
_KEYBOARD = {"，": ",", "；": ",", "（": "(", "）": ")", "×": "*", "·": "*", "÷": "/", "−": "-",
             "或": " or ", "π": "pi"}  # what a Chinese keyboard types; full-width digits are NOT here
_DROPPED = ("$", "\\left", "\\right", "\\displaystyle", "\\,", "\\;", "\\!", "\\ ")
_RESPELLED = (("**", "^"), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\dfrac", "\\frac"),
              ("\\tfrac", "\\frac"), ("\\{", "{"), ("\\}", "}"), (";", ","))
_LONE_SPACE = re.compile(r"(?<![0-9A-Za-z]) | (?![0-9A-Za-z])")  # keeps "2 3" apart from "23"
_TOKEN_RE = re.compile(r"\s+|([0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(\\[A-Za-z]+)|([A-Za-z]+)"
                       r"|([-+*/^=,(){}\[\]])")
_WORDS = {"\\frac": "frac", "\\sqrt": "sqrt", "\\pi": "pi", "sqrt": "sqrt", "pi": "pi",
          "or": "or", "and": "or"}  # every multi-letter word the parser knows, and its token
_CLOSER = {"(": ")", "[": "]", "{": "}"}
_STARTS_PRODUCT = ("(", "{", "[", "pi", "sqrt", "frac")  # may follow a factor with no "*"


def normalize(text: str) -> str:
    """One spelling per notation; also the key of the cheapest rung (string equality)."""
    if len(text) > MAX_CHARS:
        raise Rejected("answer too long")
    text = text.strip().rstrip(".。")  # a full stop ends the sentence, not the number
    for typed, meant in _KEYBOARD.items():
        text = text.replace(typed, meant)
    for noise in _DROPPED:
        text = text.replace(noise, "")
    for spelling, canonical in _RESPELLED:
        text = text.replace(spelling, canonical)
    return _LONE_SPACE.sub("", " ".join(text.split()))


def tokenize(text: str) -> list[str]:
    """Whitelisted tokens of a normalised answer; anything else raises Rejected."""
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise Rejected(f"character {text[pos]!r} is not allowed")
        pos = match.end()
        number, command, letters, symbol = match.groups()
        word = command or (letters if letters and len(letters) > 1 else None)
        if word and word not in _WORDS:
            raise Rejected(f"unknown word {word!r}")  # nan, inf, zoo, lambda, import, \infty ...
        if number and len(number.replace(".", "")) > MAX_DIGITS:
            raise Rejected("literal with too many digits")
        if number or letters or command or symbol:  # whitespace yields no token
            tokens.append(_WORDS[word] if word else number or letters or symbol)
        if len(tokens) > MAX_TOKENS:
            raise Rejected("answer has too many tokens")
    if not tokens:
        raise Rejected("empty answer")
    return tokens


# ----------------------------------------------------------------------------- sized arithmetic
# A value carries an estimate of its cost: `terms` after full expansion and `bits` of its largest
# number. Each operation checks the estimate of its result before sympy computes it, so 9^9^9^9
# is refused at 9^387420489 instead of being computed.
Sized = namedtuple("Sized", "expr terms bits")
_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
              "^": operator.pow}


def sized_literal(token: str) -> Sized:
    whole, _, decimals = token.partition(".")  # decimals are exact rationals: 0.1 is 1/10
    numerator, denominator = int(whole + decimals), 10 ** len(decimals)
    return Sized(sympy.Rational(numerator, denominator), 1,
                 max(numerator.bit_length(), denominator.bit_length()))


def sized_op(op: str, left: Sized, right: Sized) -> Sized:
    """left `op` right, refused with Rejected if its estimated size is over the limits."""
    if op in "+-":
        terms, bits = left.terms + right.terms, max(left.bits, right.bits) + 1
    elif op in "*/":
        if op == "/" and right.expr == 0:
            raise Rejected("division by zero")
        terms, bits = left.terms * right.terms, left.bits + right.bits
    else:
        exponent = right.expr
        if not exponent.is_Rational:
            raise Rejected("exponents must be numbers")  # no x^x, no 2^pi
        degree = abs(int(exponent.p))
        if (degree > MAX_EXP or exponent.q > MAX_ROOT or (left.terms > 1 and degree > 32)
                or (left.expr == 0 and exponent < 0)):
            raise Rejected("bad or too large exponent")
        # a sum of k terms to the n-th power has at most C(k + n - 1, n) monomials of degree n,
        # and its coefficients grow like k^n
        terms = 1 if left.terms == 1 else math.comb(left.terms + degree - 1, degree)
        bits = (left.bits + left.terms.bit_length()) * max(degree, 1)
    if terms > MAX_TERMS or bits > MAX_BITS:
        raise Rejected("result would be too large")
    return Sized(_OPERATORS[op](left.expr, right.expr), terms, bits)


# ----------------------------------------------------------------------------- parser
class Parser:
    """Recursive descent over the tokens; builds sympy objects directly.

    answer := item (("," | "or") item)*         several items are a set (roots, or a hedge)
    item   := "(" expr ("," expr)+ ")"  tuple  |  "{" expr ("," expr)+ "}"  set
            | expr ["=" expr]                    one side of "=" must be a single variable
    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor | power)*      a bare power is an implicit product
    factor := ["+" | "-"] power
    power  := atom ["^" factor]                  right-associative: 2^3^2 = 2^9
    atom   := number | letter | pi | (expr) | {expr} | [expr] | sqrt{expr} | frac{expr}{expr}
    """

    def __init__(self, text: str):
        self.tokens, self.pos, self.depth = tokenize(normalize(text)), 0, 0
        self.has_decimal = False  # a number written with a point earns the relative tolerance

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def eat(self, *accepted: str) -> str:
        """Consume the next token if it is one of `accepted` (any token if none given)."""
        token = self.peek()
        if not token or (accepted and token not in accepted):
            return ""
        self.pos += 1
        return token

    def expect(self, token: str):
        if not self.eat(token):
            raise Rejected(f"expected {token!r}")

    def answer(self):
        items = [self.item()]
        while len(items) < MAX_ITEMS and self.eat(",", "or"):
            items.append(self.item())
        if self.pos != len(self.tokens):
            raise Rejected("unexpected text after the answer")
        return items[0] if len(items) == 1 else ("set", tuple(items))

    def item(self):
        opener = self.peek()
        if opener in _CLOSER and self.bracket_holds_comma():
            self.eat()
            elements = [self.expr().expr]
            while len(elements) < MAX_ITEMS and self.eat(","):
                elements.append(self.expr().expr)
            self.expect(_CLOSER[opener])
            if opener == "{":
                return ("set", tuple(("scalar", None, e) for e in elements))
            return ("tuple", tuple(elements))
        lhs = self.expr().expr
        if not self.eat("="):
            return ("scalar", None, lhs)
        rhs = self.expr().expr
        if not (lhs.is_Symbol or rhs.is_Symbol):
            raise Rejected("one side of an equation must be a single variable")
        return ("scalar", lhs, rhs) if lhs.is_Symbol else ("scalar", rhs, lhs)  # x = 5, 5 = x

    def bracket_holds_comma(self) -> bool:
        """Does the bracket opening here hold a comma at its own level: (2, 1) but not (2)(1, 3)?"""
        depth = 0
        for token in self.tokens[self.pos:]:
            depth += (token in _CLOSER) - (token in _CLOSER.values())
            if depth == 0 or (token == "," and depth == 1):
                return depth == 1
        return False

    def expr(self) -> Sized:
        value = self.term()
        while op := self.eat("+", "-"):
            value = sized_op(op, value, self.term())
        return value

    def term(self) -> Sized:
        value = self.factor()
        while True:
            if op := self.eat("*", "/"):
                value = sized_op(op, value, self.factor())
            elif self.peek() in _STARTS_PRODUCT or (len(self.peek()) == 1 and self.peek().isalpha()):
                value = sized_op("*", value, self.power())  # 2x, (x+1)(x+2); never a digit: "2 3" is not 6
            else:
                return value

    def factor(self) -> Sized:
        sign = self.eat("+", "-")  # one sign: "2*-3" is fine, "--5" is not how anyone writes 5
        value = self.power()
        return value._replace(expr=-value.expr) if sign == "-" else value

    def power(self) -> Sized:
        base = self.atom()
        return sized_op("^", base, self.nested(self.factor)) if self.eat("^") else base

    def nested(self, parse, closer: str = "") -> Sized:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Rejected("nested too deeply")
        value = parse()
        if closer:
            self.expect(closer)
        self.depth -= 1
        return value

    def group(self, openers: str = "({[") -> Sized:
        opener = self.eat(*openers)
        if not opener:
            raise Rejected(f"expected one of {openers}")
        return self.nested(self.expr, _CLOSER[opener])

    def atom(self) -> Sized:
        if self.peek() in _CLOSER:
            return self.group()
        token = self.eat()
        if token[:1].isdigit() or token[:1] == ".":
            self.has_decimal |= "." in token
            return sized_literal(token)
        if len(token) == 1 and token.isalpha():
            return Sized(sympy.Symbol(token), 1, 1)  # a plain symbol: `E` and `I` are not constants
        if token == "pi":
            return Sized(sympy.pi, 1, 2)
        if token == "frac":
            return sized_op("/", self.group("{"), self.group("{"))
        if token == "sqrt":
            return sized_op("^", self.group("({"), Sized(sympy.Rational(1, 2), 1, 2))
        raise Rejected(f"unexpected {token or 'end of answer'!r}")


@lru_cache(maxsize=4096)  # golds repeat across a batch, and a GRPO group repeats answers
def parse_answer(text: str):
    """(structure, has_decimal). A structure is ("scalar", var or None, expr), ("tuple", exprs) or
    ("set", structures). Raises Rejected."""
    parser = Parser(text)
    return parser.answer(), parser.has_decimal


def validate_gold(answer: str) -> None:
    """Raise ValueError if a gold answer does not parse; call it when building a data set."""
    try:
        parse_answer(answer)
    except Rejected as err:
        raise ValueError(f"gold answer {answer!r} does not parse: {err}") from None


# ----------------------------------------------------------------------------- the ladder
_PLAIN_RE = re.compile(r"(?:([A-Za-z])=)?(-?)(?:([0-9]+(?:\.[0-9]+)?)(?:/([0-9]+))?"
                       r"|\\frac\{([0-9]+)\}\{([0-9]+)\})")


def plain_number(normalized: str):
    """(var, Fraction, has_decimal) of a plain number like `-3/2`, `x=0.5`, `\\frac{7}{12}`;
    None for anything else."""
    match = _PLAIN_RE.fullmatch(normalized)
    if not match:
        return None
    var, sign, num, den, frac_num, frac_den = match.groups()
    num, den = (num, den or "1") if num else (frac_num, frac_den)
    if int(den) == 0:
        raise Rejected("division by zero")
    value = Fraction(num) / int(den)  # digits were capped by the tokenizer
    return var, -value if sign else value, "." in num


def numbers_close(a: Fraction, b: Fraction, tolerant: bool) -> bool:
    return a == b or (tolerant and abs(a - b) <= REL_TOL * max(abs(a), abs(b)))


def cheap_verdict(pred: str, gold: str) -> bool | None:
    """Rungs 1-2, cheap enough for the calling process; None if undecided. Raises Rejected."""
    norm_pred, norm_gold = normalize(pred), normalize(gold)
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


def full_verdict(pred: str, gold: str) -> bool:
    """The whole ladder, in-process: what the worker runs behind the deadline."""
    cheap = cheap_verdict(pred, gold)
    if cheap is not None:
        return cheap
    try:
        gold_answer, gold_decimal = parse_answer(gold)
    except Rejected as err:  # a data bug, not the model's fault: counted as a failure
        raise ValueError(f"gold answer {gold!r} does not parse: {err}") from None
    pred_answer, pred_decimal = parse_answer(pred)
    return answers_equal(pred_answer, gold_answer, pred_decimal or gold_decimal)


def without_repeats(answer):
    """Drop repeated members of a set; a set of one is that one ("3 or 3" is no hedge)."""
    if answer[0] != "set":
        return answer
    members = [m for i, m in enumerate(answer[1]) if m not in answer[1][:i]]
    return members[0] if len(members) == 1 else ("set", tuple(members))


def answers_equal(pred, gold, tolerant: bool) -> bool:
    """Two parsed structures (see parse_answer) mean the same."""
    pred, gold = without_repeats(pred), without_repeats(gold)
    kind = pred[0]
    if kind != gold[0] or (kind != "scalar" and len(pred[1]) != len(gold[1])):
        return False  # a list never equals a single value: that is how hedges score 0
    if kind == "scalar":
        _, pred_var, pred_expr = pred
        _, gold_var, gold_expr = gold
        same_var = pred_var is None or gold_var is None or pred_var == gold_var
        return same_var and exprs_equal(pred_expr, gold_expr, tolerant)
    if kind == "tuple":
        return all(exprs_equal(p, g, tolerant) for p, g in zip(pred[1], gold[1]))
    unmatched = list(pred[1])  # a set: each gold member claims a distinct equal predicted member
    for gold_member in gold[1]:
        hit = next((i for i, m in enumerate(unmatched) if answers_equal(m, gold_member, tolerant)),
                   None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return True


def exprs_equal(a, b, tolerant: bool) -> bool:
    """Two sympy expressions are equal (numerically within REL_TOL if `tolerant`)."""
    if a == b:
        return True
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
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    point = {s: sympy.Rational(7 + 3 * i, 11 + 2 * i) for i, s in enumerate(symbols)}
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


def check_file(path: str, out=None) -> Counter:
    """Print one verdict per JSON line of `path` and a summary (to `out`, default stdout);
    return the verdict counts."""
    from rewards import extract_answer  # rewards.py imports this module: a real cycle at the top
    counts = Counter()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "gold" not in row or not ("pred" in row or "completion" in row):
                raise ValueError(f"{path}:{lineno}: needs 'gold' and 'pred' or 'completion'")
            pred = row["pred"] if "pred" in row else extract_answer(row["completion"])
            result = "no answer" if pred is None else verdict(str(pred), str(row["gold"]))
            counts[result] += 1
            print(f"{lineno}\t{result}\t{pred!r}\t{row['gold']!r}", file=out)
    total = sum(counts.values())
    tally = ", ".join(f"{name} {n}" for name, n in counts.most_common())
    print(f"{counts['yes']}/{total} equivalent ({100 * counts['yes'] / max(total, 1):.1f}%): {tally}",
          file=out)
    return counts


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="Check predicted answers against gold answers.")
    cli.add_argument("file", help='JSON lines, each with "gold" and "pred" or "completion"')
    try:
        check_file(cli.parse_args().file)
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        sys.exit(f"verify.py: {err}")
