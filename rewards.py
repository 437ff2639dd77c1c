"""rewards.py: the rule rewards of nanoR1 (format, accuracy, language consistency).

DeepSeek-R1 scores its RL rollouts with rules, not a neural reward model (§2.2.2): accuracy (is
the final answer right?) plus format (reasoning inside <think>, answer inside <answer>); §2.3.3
adds language consistency (the share of the reasoning's words in the prompt's language). Here
are the three, their sum per stage (`score_batch`, what grpo.py calls), and what keeps them safe.

    python rewards.py "<think>2*3 = 6</think><answer>6</answer>" 6    # score one completion
    python -m pytest tests_rewards.py                                 # the tests

The format. The R1-Zero prompt (data.py) ends with "Assistant:" and does NOT pre-fill <think>:
opening the tag is part of what R1-Zero learns. A completion (the text generated after the
prompt, end-of-text removed) earns the format reward only if the whole string is
`<think>reasoning</think><answer>answer</answer>`, both non-empty, with optional whitespace
before, between and after the blocks: each tag exactly once, nothing nested, repeated or
trailing. The answer is the single <answer> block's content (a lone \\boxed{} inside it wins);
accuracy needs that block but not the rest of the format, so the two signals stay separate.

The threat model. R1 avoids neural reward models because a policy optimised against one hacks
it (§2.2.2); rules get hacked too, so every completion is treated as an adversary's:
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
3. Crashing the checker: a failure, timeout or out-of-memory scores 0 and is counted.
4. Hedging: "3 or 4", "3, 4", two answer blocks or two \\boxed{} never equal one gold value.
5. Tolerance abuse: no percent or absolute tolerance; relative 1e-6 only for numbers written with
   a decimal point (0.333333333 equals 1/3, 0.333 does not). Decimals are read as exact
   rationals, so 0.5x equals x/2 exactly (but 0.333333333x does not equal x/3).
6. Bare math to collect language consistency: text without words scores 0.0.

The ladder, cheapest first: normalised strings, then exact rationals of plain numbers (both in
the calling process, settling most verdicts); then, in the worker, parse both sides, compare
structure (`x = 5` equals `5` either way round, `y = 5` is not `x = 5`, tuples are ordered,
lists of roots are sets), evaluate both at one rational point (a cheap proof that most wrong
answers differ), and only then expand / cancel / simplify the difference. Deliberate differences
from the paper: one-letter Latin words are variables, not words; rl2's general tasks are checked
by exact text instead of a reward model.
"""

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
import unicodedata
from collections import namedtuple
from dataclasses import dataclass
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


class _Reject(Exception):
    """The answer is outside the whitelist or over a limit: not equivalent, nothing was run."""


# ----------------------------------------------------------------------------- format and answer
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_FORMAT_RE = re.compile(r"\s*<think>(.*)</think>\s*<answer>(.*)</answer>\s*", re.S)
_BOXED_RE = re.compile(r"\\boxed\{(.*)\}", re.S)


def format_reward(completion: str) -> float:
    """1.0 iff the completion is exactly <think>...</think><answer>...</answer> (see above)."""
    if any(completion.count(tag) != 1 for tag in _TAGS):  # missing, repeated or nested tags
        return 0.0
    m = _FORMAT_RE.fullmatch(completion)  # each tag occurs once: no catastrophic backtracking
    return 1.0 if m and m.group(1).strip() and m.group(2).strip() else 0.0


def extract_answer(completion: str) -> str | None:
    """The content of the single <answer> block, a lone \\boxed{} inside it winning; else None."""
    if completion.count("<answer>") != 1 or completion.count("</answer>") != 1:
        return None  # several blocks are a hedge; none is no answer
    start, end = completion.index("<answer>") + len("<answer>"), completion.index("</answer>")
    text = completion[start:end].strip() if start <= end else ""
    if "\\boxed" in text:  # two boxes are two answers; the greedy match keeps nested braces
        m = _BOXED_RE.search(text)
        text = m.group(1).strip() if m and text.count("\\boxed") == 1 else ""
    return text or None


# ----------------------------------------------------------------------------- language consistency
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+")  # one CJK character, or a run of other letters
_NOT_PROSE = re.compile(r"<answer>.*?(?:</answer>|\Z)|</?think>|</?answer>|\\[A-Za-z]+", re.S)
_MATH_WORDS = frozenset({"sqrt", "frac", "pi", "cdot", "times", "boxed"})


def language_consistency(text: str, lang: str) -> float:
    """Share of the reasoning's words in `lang` ('en' or 'zh'), R1 §2.3.3.

    A word is a CJK character or a run of two or more Latin letters (one letter is a variable);
    numbers, math, tags and the <answer> block are ignored; other scripts count for neither
    language. Text without words scores 0.0, so bare math cannot collect the reward.
    """
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh', not {lang!r}")
    counts = {"en": 0, "zh": 0, "other": 0}
    for word in _WORD_RE.findall(_NOT_PROSE.sub(" ", text)):
        if _CJK_RE.match(word):  # the regex yields CJK characters one at a time
            counts["zh"] += 1
        elif not all(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in word):
            counts["other"] += 1
        elif len(word) > 1 and word.lower() not in _MATH_WORDS:
            counts["en"] += 1
    total = sum(counts.values())
    return counts[lang] / total if total else 0.0


# ----------------------------------------------------------------------------- tokenizer
_UNICODE = {"，": ",", "；": ",", "（": "(", "）": ")", "×": "*", "·": "*", "÷": "/", "−": "-",
            "或": " or ", "π": "pi"}  # what a Chinese keyboard types; full-width digits are NOT here
_DROP = ("$", "\\left", "\\right", "\\displaystyle", "\\,", "\\;", "\\!", "\\ ")
_SPELL = (("**", "^"), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\dfrac", "\\frac"),
          ("\\tfrac", "\\frac"), ("\\{", "{"), ("\\}", "}"), (";", ","))
_LONE_SPACE = re.compile(r"(?<![0-9A-Za-z]) | (?![0-9A-Za-z])")  # keeps "2 3" apart from "23"
_TOKEN_RE = re.compile(r"\s+|([0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(\\[A-Za-z]+)|([A-Za-z]+)"
                       r"|([-+*/^=,(){}\[\]])")
_NAMES = {"\\frac": "frac", "\\sqrt": "sqrt", "\\pi": "pi", "sqrt": "sqrt", "pi": "pi",
          "or": "or", "and": "or"}
_CLOSE = {"(": ")", "[": "]", "{": "}"}
_IMPLICIT = ("(", "{", "[", "pi", "sqrt", "frac")  # tokens that may start an implicit product


def _norm(text: str) -> str:
    """One spelling per notation; also the key of the cheapest rung (string equality)."""
    if len(text) > MAX_CHARS:
        raise _Reject("answer too long")
    text = text.strip().rstrip(".。")  # a full stop ends the sentence, not the number
    for a, b in _UNICODE.items():
        text = text.replace(a, b)
    for a in _DROP:
        text = text.replace(a, "")
    for a, b in _SPELL:
        text = text.replace(a, b)
    return _LONE_SPACE.sub("", " ".join(text.split()))


def _tokenize(text: str) -> list[str]:
    """Whitelisted tokens of a normalised answer; anything else raises _Reject."""
    toks, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise _Reject(f"character {text[pos]!r} is not allowed")
        pos = m.end()
        num, cmd, word, op = m.groups()
        name = cmd or (word if word and len(word) > 1 else None)
        if name and name not in _NAMES:
            raise _Reject(f"unknown word {name!r}")  # nan, inf, zoo, lambda, import, \infty ...
        if num and len(num.replace(".", "")) > MAX_DIGITS:
            raise _Reject("literal with too many digits")
        if num or word or cmd or op:
            toks.append(_NAMES[name] if name else num or word or op)
        if len(toks) > MAX_TOKENS:
            raise _Reject("answer has too many tokens")
    if not toks:
        raise _Reject("empty answer")
    return toks


# ----------------------------------------------------------------------------- sized arithmetic
# A value carries an estimate of its cost: `terms` after full expansion and `bits` of its largest
# number. Each operation checks the estimate of its result before sympy computes it, so 9^9^9^9
# is refused at 9^387420489 instead of being computed.
_V = namedtuple("_V", "e terms bits")
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        "^": operator.pow}


def _literal(tok: str) -> _V:
    whole, _, frac = tok.partition(".")  # decimals are exact rationals: 0.1 is 1/10
    p, q = int(whole + frac), 10 ** len(frac)
    return _V(sympy.Rational(p, q), 1, max(p.bit_length(), q.bit_length()))


def _apply(op: str, a: _V, b: _V) -> _V:
    if op in "+-":
        terms, bits = a.terms + b.terms, max(a.bits, b.bits) + 1
    elif op in "*/":
        if op == "/" and b.e == 0:
            raise _Reject("division by zero")
        terms, bits = a.terms * b.terms, a.bits + b.bits
    else:
        x = b.e
        if not x.is_Rational:
            raise _Reject("exponents must be numbers")  # no x^x, no 2^pi
        n = abs(int(x.p))
        if n > MAX_EXP or x.q > MAX_ROOT or (a.terms > 1 and n > 32) or (a.e == 0 and x < 0):
            raise _Reject("bad or too large exponent")
        terms = 1 if a.terms == 1 else math.comb(a.terms + n - 1, n)  # monomials of degree n
        bits = (a.bits + a.terms.bit_length()) * max(n, 1)  # coefficients grow like terms^n
    if terms > MAX_TERMS or bits > MAX_BITS:
        raise _Reject("result would be too large")
    return _V(_OPS[op](a.e, b.e), terms, bits)


# ----------------------------------------------------------------------------- parser
class _Parser:
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
        self.toks, self.i, self.depth, self.has_float = _tokenize(_norm(text)), 0, 0, False

    def peek(self) -> str:
        return self.toks[self.i] if self.i < len(self.toks) else ""

    def eat(self, *accepted: str) -> str:
        """Consume the next token if it is one of `accepted` (any token if none given)."""
        tok = self.peek()
        if not tok or (accepted and tok not in accepted):
            return ""
        self.i += 1
        return tok

    def expect(self, tok: str):
        if not self.eat(tok):
            raise _Reject(f"expected {tok!r}")

    def answer(self):
        items = [self.item()]
        while self.eat(",", "or") and len(items) <= MAX_ITEMS:
            items.append(self.item())
        if self.i != len(self.toks):
            raise _Reject("unexpected text after the answer")
        return items[0] if len(items) == 1 else ("set", tuple(items))

    def item(self):
        opener = self.peek()
        if opener in _CLOSE and self._comma_inside():
            self.eat()
            elems = [self.expr().e]
            while self.eat(",") and len(elems) <= MAX_ITEMS:
                elems.append(self.expr().e)
            self.expect(_CLOSE[opener])
            if opener == "{":
                return ("set", tuple(("scalar", None, e) for e in elems))
            return ("tuple", tuple(elems))
        lhs = self.expr().e
        if not self.eat("="):
            return ("scalar", None, lhs)
        rhs = self.expr().e
        if not (lhs.is_Symbol or rhs.is_Symbol):
            raise _Reject("one side of an equation must be a single variable")
        return ("scalar", lhs, rhs) if lhs.is_Symbol else ("scalar", rhs, lhs)  # x = 5, 5 = x

    def _comma_inside(self) -> bool:
        depth = 0
        for tok in self.toks[self.i:]:
            depth += (tok in _CLOSE) - (tok in _CLOSE.values())
            if depth == 0 or (tok == "," and depth == 1):
                return depth == 1
        return False

    def expr(self) -> _V:
        v = self.term()
        while op := self.eat("+", "-"):
            v = _apply(op, v, self.term())
        return v

    def term(self) -> _V:
        v = self.factor()
        while True:
            if op := self.eat("*", "/"):
                v = _apply(op, v, self.factor())
            elif self.peek() in _IMPLICIT or (len(self.peek()) == 1 and self.peek().isalpha()):
                v = _apply("*", v, self.power())  # 2x, (x+1)(x+2); never a digit: "2 3" is not 6
            else:
                return v

    def factor(self) -> _V:
        sign = self.eat("+", "-")  # one sign: "2*-3" is fine, "--5" is not how anyone writes 5
        v = self.power()
        return v._replace(e=-v.e) if sign == "-" else v

    def power(self) -> _V:
        base = self.atom()
        return _apply("^", base, self.nested(self.factor)) if self.eat("^") else base

    def nested(self, parse, closer: str = "") -> _V:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject("nested too deeply")
        v = parse()
        if closer:
            self.expect(closer)
        self.depth -= 1
        return v

    def group(self, openers: str = "({[") -> _V:
        opener = self.eat(*openers)
        if not opener:
            raise _Reject(f"expected one of {openers}")
        return self.nested(self.expr, _CLOSE[opener])

    def atom(self) -> _V:
        if self.peek() in _CLOSE:
            return self.group()
        tok = self.eat()
        if tok[:1].isdigit() or tok[:1] == ".":
            self.has_float |= "." in tok
            return _literal(tok)
        if len(tok) == 1 and tok.isalpha():
            return _V(sympy.Symbol(tok), 1, 1)  # a plain symbol: `E` and `I` are not constants
        if tok == "pi":
            return _V(sympy.pi, 1, 2)
        if tok == "frac":
            return _apply("/", self.group("{"), self.group("{"))
        if tok == "sqrt":
            return _apply("^", self.group("({"), _V(sympy.Rational(1, 2), 1, 2))
        raise _Reject(f"unexpected {tok or 'end of answer'!r}")


@lru_cache(maxsize=4096)  # golds repeat across a batch, and a GRPO group repeats answers
def _parse_answer(text: str):
    """(structure, has_float). A structure is ("scalar", var or None, expr), ("tuple", exprs) or
    ("set", structures). Raises _Reject."""
    parser = _Parser(text)
    return parser.answer(), parser.has_float


def validate_gold(answer: str) -> None:
    """Raise ValueError if a gold answer does not parse; call it when building a data set."""
    try:
        _parse_answer(answer)
    except _Reject as err:
        raise ValueError(f"gold answer {answer!r} does not parse: {err}") from None


# ----------------------------------------------------------------------------- the ladder
_PLAIN_RE = re.compile(r"(?:([A-Za-z])=)?(-?)(?:([0-9]+(?:\.[0-9]+)?)(?:/([0-9]+))?"
                       r"|\\frac\{([0-9]+)\}\{([0-9]+)\})")


def _plain(norm: str):
    """(var, Fraction, has_float) of a plain number like `-3/2`, `x=0.5`, `\\frac{7}{12}`."""
    m = _PLAIN_RE.fullmatch(norm)
    if not m:
        return None
    var, sign, num, den, fnum, fden = m.groups()
    num, den = (num, den or "1") if num else (fnum, fden)
    if int(den) == 0:
        raise _Reject("division by zero")
    x = Fraction(num) / int(den)  # digits were capped by the tokenizer
    return var, -x if sign else x, "." in num


def _close(a: Fraction, b: Fraction, tol: bool) -> bool:
    return a == b or (tol and abs(a - b) <= REL_TOL * max(abs(a), abs(b)))


def _fast(pred: str, gold: str) -> bool | None:
    """Rungs 1-2, cheap enough for the calling process; None if undecided. Raises _Reject."""
    npred, ngold = _norm(pred), _norm(gold)
    _tokenize(npred)  # the whitelist: garbage never reaches sympy or the worker
    if npred == ngold:
        return True
    a, b = _plain(npred), _plain(ngold)
    if a is None or b is None:
        return None
    if a[0] and b[0] and a[0] != b[0]:
        return False  # y = 5 is not x = 5
    return _close(a[1], b[1], a[2] or b[2])


def _ladder(pred: str, gold: str) -> bool:
    """The whole comparison, in-process: what the worker runs behind the deadline."""
    fast = _fast(pred, gold)
    if fast is not None:
        return fast
    try:
        g, g_float = _parse_answer(gold)
    except _Reject as err:  # a data bug, not the model's fault: counted as a failure
        raise ValueError(f"gold answer {gold!r} does not parse: {err}") from None
    p, p_float = _parse_answer(pred)
    return _same(p, g, p_float or g_float)


def _collapse(ans):
    """Drop repeated members of a set; a set of one is that one ("3 or 3" is no hedge)."""
    if ans[0] != "set":
        return ans
    members = [m for i, m in enumerate(ans[1]) if m not in ans[1][:i]]
    return members[0] if len(members) == 1 else ("set", tuple(members))


def _same(p, g, tol: bool) -> bool:
    p, g = _collapse(p), _collapse(g)
    if p[0] != g[0] or (p[0] != "scalar" and len(p[1]) != len(g[1])):
        return False  # a list never equals a single value: that is how hedges score 0
    if p[0] == "scalar":
        return (p[1] is None or g[1] is None or p[1] == g[1]) and _expr_equal(p[2], g[2], tol)
    if p[0] == "tuple":
        return all(_expr_equal(a, b, tol) for a, b in zip(p[1], g[1]))
    unmatched = list(p[1])  # a set: each gold member claims a distinct equal predicted member
    for gm in g[1]:
        hit = next((i for i, pm in enumerate(unmatched) if _same(pm, gm, tol)), None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return True


def _expr_equal(a, b, tol: bool) -> bool:
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return _close(Fraction(int(a.p), int(a.q)), Fraction(int(b.p), int(b.q)), tol)
    if tol and not (a.free_symbols or b.free_symbols):
        va, vb = sympy.N(a, 30), sympy.N(b, 30)
        return bool(abs(va - vb) <= 1e-6 * max(abs(va), abs(vb)))
    if _differs_somewhere(a, b):
        return False  # most wrong answers end here, before any expansion
    diff = sympy.expand(a - b)
    if diff == 0:
        return True
    poly = diff.as_poly(*sorted(diff.free_symbols, key=str)) if diff.free_symbols else None
    if poly is not None and poly.domain in (sympy.ZZ, sympy.QQ):
        return False  # canonical over the rationals: a non-zero polynomial is not zero
    return sympy.cancel(a - b) == 0 or sympy.simplify(a - b) == 0


def _differs_somewhere(a, b) -> bool:
    """A cheap proof of inequality: a and b are clearly apart at one rational point (30-digit
    evaluation). It never proves equality, so a point an adversary anticipates (a pole, a common
    root) can only cost time, never earn a reward."""
    syms = sorted(a.free_symbols | b.free_symbols, key=str)
    point = {s: sympy.Rational(7 + 3 * i, 11 + 2 * i) for i, s in enumerate(syms)}
    va, vb = sympy.N(a.xreplace(point), 30), sympy.N(b.xreplace(point), 30)
    if not (va.is_finite and vb.is_finite):
        return False  # a pole: no conclusion
    return bool(abs(va - vb) > 1e-15 * (1 + abs(va) + abs(vb)))


# ----------------------------------------------------------------------------- the worker
def _limit_memory(mem_mb: int):
    try:
        import resource
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = now + mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))
    except (ImportError, OSError, ValueError):
        pass  # not Linux: the deadline still bounds the time, not the memory


def _worker_main(mem_mb: int):
    """The worker process: one JSON request per line in, one verdict per line out."""
    _limit_memory(mem_mb)
    ops = {"eq": _ladder, "sleep": time.sleep, "alloc": bytearray}  # the last two: for the tests
    print("ready", flush=True)
    for line in sys.stdin:
        op, *args = json.loads(line)
        try:
            out = "yes" if ops[op](*args) else "no"
        except _Reject:
            out = "reject"
        except MemoryError:
            out = "oom"
        except Exception:  # RecursionError, sympy internals, a bad gold: never end the loop
            out = "fail"
        print(out, flush=True)


def _pump(stream, replies: queue.Queue):
    for line in stream:
        replies.put(line.strip())
    replies.put(None)  # the worker is gone


class Verifier:
    """Owns the worker process that runs the symbolic rungs, one verdict at a time.

    The worker is a fresh interpreter (`python -c`, not a fork): it imports only this module and
    sympy, so it holds no torch or CUDA state, and a restart costs a sympy import, not a trainer
    import. A verdict that misses its deadline gets the worker killed; the next one starts anew.
    """

    def __init__(self, mem_mb: int = MEM_MB):
        self.mem_mb, self.proc, self.lock, self.restarts = mem_mb, None, threading.Lock(), 0

    def _start(self):
        here = os.path.dirname(os.path.abspath(__file__))
        name = os.path.splitext(os.path.basename(__file__))[0]
        code = (f"import sys; sys.path.insert(0, {here!r}); import {name}; "
                f"{name}._worker_main({self.mem_mb})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, encoding="ascii", bufsize=1)
        self.replies = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, self.replies), daemon=True).start()
        try:
            ready = self.replies.get(timeout=120)  # generous: a busy machine imports slowly
        except queue.Empty:
            ready = None
        if ready != "ready":
            self._kill()
            raise RuntimeError("the rewards worker process did not start")

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


_WORKER = Verifier()  # starts its process on first use
atexit.register(_WORKER.close)


def _verdict(pred: str, gold: str, deadline_s: float = DEADLINE_S) -> str:
    try:
        fast = _fast(pred, gold)
    except _Reject:
        return "reject"
    if fast is not None:
        return "yes" if fast else "no"
    return _WORKER.ask("eq", (pred, gold), deadline_s)


# ----------------------------------------------------------------------------- rewards
def is_equivalent(pred: str, gold: str, deadline_s: float = DEADLINE_S) -> bool:
    """Is the predicted answer the gold one? `pred` is untrusted and never evaluated."""
    return _verdict(pred, gold, deadline_s) == "yes"


def accuracy_reward(completion: str, answer: str, deadline_s: float = DEADLINE_S) -> float:
    """1.0 iff the completion's single answer block is equivalent to the gold answer."""
    pred = extract_answer(completion)
    return float(pred is not None and _verdict(pred, answer, deadline_s) == "yes")


_THINK_RE = re.compile(r"<think>(.*?)</think>", re.S)
NEEDLESS_WORDS = 12  # a general answer's <think> needs a few words at most


def needless_chain(completion: str) -> float:
    """1.0 if the completion reasons where no reasoning is needed (a general task): its
    <think> block holds a computation ('=') or more than NEEDLESS_WORDS words. R1 §2.3.3 gives
    simple queries no chain of thought; rl2 charges a chain there (`needless` term)."""
    think = _THINK_RE.search(completion)
    body = think.group(1) if think else completion.split("<answer>")[0]
    return float("=" in body or len(_WORD_RE.findall(body)) > NEEDLESS_WORDS)


@dataclass
class RewardWeights:
    accuracy: float = 1.0  # R1 §2.2.2: the rule-based accuracy reward
    format: float = 1.0    # R1 §2.2.2: added to accuracy unweighted; a plain sum
    lang: float = 1.0      # R1 §2.3.2: "directly summing" accuracy and language consistency
    needless: float = -0.5  # a chain of thought on a general prompt (rl2's stand-in for R1 §2.3.4's reward model)


TERMS = ("accuracy", "format", "lang", "needless")


def score_batch(completions: list[str], answers: list[str], langs: list[str], terms=("accuracy", "format"),
                weights: RewardWeights | None = None, deadline_s: float = DEADLINE_S,
                kinds: list[str] | None = None) -> dict:
    """Rewards of a batch: lists `reward` (the weighted sum of `terms`), `accuracy`, `format`,
    `lang`, `needless`, and counters `n_failed` (checker error, crash, out of memory),
    `n_timeout` and `n_rejected` (answer outside the whitelist or over a limit), all scoring 0.
    `kinds[i]` names the task; a general task (data.GENERAL_KINDS) is checked by its exact
    reader, and only general tasks can be charged `needless`. Identical (answer, gold) pairs
    are judged once per batch."""
    import data  # the world's general-task readers; data imports this module at its top
    bad = [t for t in terms if t not in TERMS]
    if bad:
        raise ValueError(f"unknown reward term {bad[0]!r} (valid terms: {', '.join(TERMS)})")
    kinds = kinds or ["math"] * len(completions)
    if not len(completions) == len(answers) == len(langs) == len(kinds):
        raise ValueError("completions, answers, langs (and kinds) must have the same length")
    weights = weights or RewardWeights()
    out = {"reward": [], "accuracy": [], "format": [], "lang": [], "needless": [],
           "n_failed": 0, "n_timeout": 0, "n_rejected": 0}
    verdicts: dict[tuple[str, str], str] = {}
    for completion, gold, lang, kind in zip(completions, answers, langs, kinds):
        pred, verdict = extract_answer(completion), "no"
        general = kind in data.GENERAL_KINDS
        if pred is not None and general:
            verdict = "yes" if data.general_correct(kind, lang, pred, gold) else "no"
        elif pred is not None:
            if (pred, gold) not in verdicts:
                verdicts[pred, gold] = v = _verdict(pred, gold, deadline_s)
                out["n_failed"] += v in ("fail", "oom")
                out["n_timeout"] += v == "timeout"
                out["n_rejected"] += v == "reject"
            verdict = verdicts[pred, gold]
        scores = {"accuracy": float(verdict == "yes"), "format": format_reward(completion),
                  "lang": language_consistency(completion, lang),
                  "needless": needless_chain(completion) if general else 0.0}
        for key, value in scores.items():
            out[key].append(value)
        out["reward"].append(sum(getattr(weights, t) * scores[t] for t in terms))
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python rewards.py COMPLETION GOLD_ANSWER [en|zh]")
    result = score_batch([sys.argv[1]], [sys.argv[2]], [(sys.argv[3:] or ["en"])[0]], terms=("accuracy", "format", "lang"))
    print({"answer": extract_answer(sys.argv[1]),
           **{k: v[0] if isinstance(v, list) else v for k, v in result.items()}})
