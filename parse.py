"""parse.py: the whitelist parser: latex.py's tokens into sympy objects, each result's size
estimated before it is built.

An answer is untrusted (verify.py's docstring has the threat model), so nothing here hands text
to sympy's string parser, sympify or eval: a recursive descent over latex.py's whitelisted tokens
builds sympy objects directly, through `sized_op` and `sized_function`, which refuse a result
whose estimated size is over the limits below before sympy computes it (9^9^9^9 stops at 9^9^9,
exp(exp(exp(100))) at its second exp). An answer becomes a structure (see parse_answer): a scalar,
a tuple, a set of roots, an equation, a relation, an interval or a union, a matrix, or text.

    python parse.py "\\{-1\\} \\cup [0,7)"   # how an answer is read
    python -m pytest test_verify.py -q     # its tests live with verify.py's
"""

import math
import operator
import sys
from collections import namedtuple
from functools import lru_cache

import sympy

from latex import FUNCTIONS, GREEK, Rejected, normalize, text_answer, tokenize

# ----------------------------------------------------------------------------- limits
MAX_DEPTH = 16       # brackets, roots, fractions, functions and exponents inside one another
MAX_ITEMS = 10       # members of a tuple, list, set, union, matrix row or column
MAX_EXP = 1000       # |numerator| of an exponent
MAX_ROOT = 12        # largest denominator of an exponent: x^(1/3) fine, x^(1/99) not
MAX_TERMS = 1000     # estimated terms after full expansion (a toy answer has a handful)
MAX_BITS = 20000     # estimated bits of the largest number the arithmetic can create
GROWTH_BITS = 64     # bits of a number under exp/sinh/cosh or a symbolic exponent's base

_FUNCTIONS = dict(zip(FUNCTIONS, (sympy.sin, sympy.cos, sympy.tan, sympy.sec, sympy.csc, sympy.cot,
                                  sympy.asin, sympy.acos, sympy.atan, sympy.sinh, sympy.cosh,
                                  sympy.tanh, sympy.log, sympy.log, sympy.exp)))
_INVERSE = {"sin": "arcsin", "cos": "arccos", "tan": "arctan"}  # \\sin^{-1} x
_GROWTH = {"exp", "sinh", "cosh"}  # exp(exp(exp(100))) would never finish evaluating
_CLOSER = {"(": ")", "[": "]", "{": "}"}
_RELATIONS = ("=", "≈", "<", "<=", ">", ">=", "!=", "in")
_INFINITE = (sympy.oo, -sympy.oo)
_CONSTANTS = {"e": sympy.E, "i": sympy.I}  # as in the math sets; `E` and `I` are plain letters


# ----------------------------------------------------------------------------- sized arithmetic
# A value carries an estimate of its cost: `terms` after full expansion, `bits` of its largest
# number, and `tower`: it holds exp/sinh/cosh or a symbolic exponent, which must not nest (exp of
# exp of exp grows past any number a computer holds). Each operation checks the estimate of its
# result before sympy computes it, so 9^9^9^9 is refused at 9^387420489 instead of being computed.
Sized = namedtuple("Sized", "expr terms bits tower", defaults=(False,))
_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
              "^": operator.pow}


def sized_literal(token: str) -> Sized:
    whole, _, decimals = token.partition(".")  # decimals are exact rationals: 0.1 is 1/10
    numerator, denominator = int(whole + decimals), 10 ** len(decimals)
    return Sized(sympy.Rational(numerator, denominator), 1,
                 max(numerator.bit_length(), denominator.bit_length()))


def sized_op(op: str, left: Sized, right: Sized) -> Sized:
    """left `op` right, refused with Rejected if its estimated size is over the limits."""
    if left.expr in _INFINITE or right.expr in _INFINITE:
        raise Rejected("infinity is an answer or an interval's end, not a number to compute with")
    tower = left.tower or right.tower
    if op in "+-":
        terms, bits = left.terms + right.terms, max(left.bits, right.bits) + 1
    elif op in "*/":
        if op == "/" and right.expr == 0:
            raise Rejected("division by zero")
        terms, bits = left.terms * right.terms, left.bits + right.bits
    elif not right.expr.is_Rational:  # 2^n, e^{x}, 2^{\sqrt 2}: never nested, small numbers
        if tower or right.bits > 10 or left.bits > GROWTH_BITS:
            raise Rejected("a symbolic exponent must be small and not nested")
        constant = right.expr.as_coeff_Add()[0]  # expand splits (x+1)^(n+2) into (x+1)^2 (x+1)^n
        degree = abs(int(constant)) if constant.is_Rational else 0
        terms = 1 if left.terms == 1 else math.comb(left.terms + degree - 1, degree)
        bits, tower = (left.bits + 1) * max(degree, 1), True
    else:
        exponent = right.expr
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
    return Sized(_OPERATORS[op](left.expr, right.expr), terms, bits, tower)


def sized_function(name: str, arg: Sized, base: Sized | None = None) -> Sized:
    """name(arg) as a sympy function (log to `base` if given): an opaque single term."""
    growth = name in _GROWTH
    if arg.expr in _INFINITE or (growth and (arg.tower or arg.bits > GROWTH_BITS)):
        raise Rejected(f"{name} of infinity, of a tower or of a huge number")
    if base is not None and (base.expr in _INFINITE or base.expr.is_zero or base.expr == 1):
        raise Rejected("bad logarithm base")
    expr = sympy.log(arg.expr, base.expr) if base is not None else _FUNCTIONS[name](arg.expr)
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise Rejected(f"{name} is undefined there")  # tan(pi/2), log(0), csc(0)
    return Sized(expr, 1, arg.bits + 2, arg.tower or growth or (base is not None and base.tower))


def sized_binomial(n: Sized, k: Sized) -> Sized:
    """\\binom{n}{k} of integers, n at most 1000 (n! is not read: `5!` stays outside)."""
    if not (n.expr.is_Integer and k.expr.is_Integer and 0 <= n.expr <= 1000):
        raise Rejected("binomials of small integers only")
    value = sympy.binomial(n.expr, k.expr)
    return Sized(value, 1, int(value).bit_length())


# ----------------------------------------------------------------------------- parser
Answer = namedtuple("Answer", "structure decimal marks")  # marks: "%" and "°" seen
_FUNCTION_NAME = Sized(sympy.Symbol("f(x)"), 1, 1)  # a side naming a function (f(x) =): no variable


class Parser:
    """Recursive descent over the tokens; builds sympy objects directly.

    answer    := statement (("," | "or") statement)*   several are a set (roots, or a hedge)
    statement := side (relation side){0,2}          = ≈ < <= > >= != in; see statement_structure
    side      := piece ("cup" piece)* ["minus" piece] | matrix | expr
    piece     := "(" expr "," expr ("]" | ")")  | "[" ... | "{" side ("," side)* "}"
               | "{" letter ["in" reals] "|" statement ("or" statement)* "}" | reals | empty
    matrix    := "matrix" expr (("&" | "row") expr)* ["row"] "endmatrix"
    expr      := term (("+" | "-") term)*
    term      := factor [mixed fraction] (("*" | "/") factor | power)*   a bare power: a product
    factor    := ["+" | "-"] power
    power     := atom ["^" factor] ("%" | "°")*         right-associative: 2^3^2 = 2^9
    atom      := number [_base] | letter [_sub] | greek | pi | e | i | oo | (expr) | {expr} | [expr]
               | |expr| | sqrt[n] arg | frac arg arg | binom arg arg | function[_base][^factor] arg
    A TeX argument `arg` is a {group} or one token, the first digit of a number: \\frac94 = 9/4.
    """

    def __init__(self, text: str, separators: bool = True):
        self.tokens, self.pos, self.depth = tokenize(normalize(text, separators)), 0, 0
        self.has_decimal = False  # a number written with a point earns the relative tolerance
        self.marks, self.bars = set(), 0  # bars: open |...| around the current position

    def peek(self, ahead: int = 0) -> str:
        at = self.pos + ahead
        return self.tokens[at] if at < len(self.tokens) else ""

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

    def nested(self, parse, closer: str = ""):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Rejected("nested too deeply")
        value = parse()
        if closer:
            self.expect(closer)
        self.depth -= 1
        return value

    def answer(self) -> list:
        items = [self.statement()]
        while len(items) < MAX_ITEMS and self.eat(",", "or"):
            items.append(self.statement())
        if self.pos != len(self.tokens):
            raise Rejected("unexpected text after the answer")
        return items

    def statement(self):
        sides, ops = [self.function_name() or self.side()], []
        while len(ops) < 2 and (op := self.eat(*_RELATIONS)):
            ops.append(op)
            sides.append(self.side())
        return statement_structure(sides, ops)

    def function_name(self):
        """`f(x)` or `g(1)` before "=": `f(x) = 2x` says 2x, like `y = 2x` or plain `2x`."""
        if not (len(self.peek()) == 1 and self.peek().isalpha() and self.peek(1) == "("):
            return None
        end = self.closing(self.pos + 1)
        inside = self.tokens[self.pos + 2:end]
        if end < 0 or self.peek(end - self.pos + 1) != "=" or not inside or not all(
                t.isalnum() and len(t) < 4 or t == "," for t in inside):
            return None
        self.pos = end + 1
        return _FUNCTION_NAME

    def closing(self, start: int) -> int:
        """Index of the token closing the bracket at `start` (any kind), -1 if none."""
        depth = 0
        for at in range(start, len(self.tokens)):
            depth += (self.tokens[at] in _CLOSER) - (self.tokens[at] in _CLOSER.values())
            if depth == 0:
                return at
        return -1

    def side(self):
        if self.peek() == "matrix":
            return self.matrix()
        token, end = self.peek(), self.closing(self.pos)
        if token in ("reals", "empty") or (token in _CLOSER and end > 0 and (
                "," in self.tokens[self.pos:end] and (token == "{" or self.comma_at_top(end))
                or self.peek(end - self.pos + 1) == "cup"
                or (token == "{" and self.builder(1)))):
            pieces = [self.piece()]
            while len(pieces) < MAX_ITEMS and self.eat("cup"):
                pieces.append(self.piece())
            union = pieces[0] if len(pieces) == 1 else ("union", tuple(pieces))
            return ("minus", union, self.piece()) if self.eat("minus") else union  # R \ {3}
        return self.expr()

    def comma_at_top(self, end: int) -> bool:
        """Is there a comma directly inside the bracket at pos: (2, 1) but not ((2, 1))?"""
        depth = 0
        for token in self.tokens[self.pos:end]:
            depth += (token in _CLOSER) - (token in _CLOSER.values())
            if token == "," and depth == 1:
                return True
        return False

    def builder(self, ahead: int = 0) -> int:
        """Tokens of a set-builder's head at pos + ahead, `x |` or `x \\in R |`; 0 if none."""
        head = self.tokens[self.pos + ahead:self.pos + ahead + 4]
        if len(head) > 1 and len(head[0]) == 1 and head[0].isalpha():
            return 2 if head[1] == "|" else 4 if head[1:] == ["in", "reals", "|"] else 0
        return 0

    def piece(self):
        """An interval, a tuple, a set {1, 2} or {x | x > 2}, R or the empty set."""
        if self.eat("reals"):
            return ("interval", -sympy.oo, sympy.oo, False, False)
        if self.eat("empty"):
            return ("set", ())
        opener = self.eat("(", "[", "{")
        if opener == "{" and self.builder():  # set-builder: the condition is the answer
            self.pos += self.builder()
            conditions = [self.nested(self.statement)]
            while len(conditions) < MAX_ITEMS and self.eat("or"):  # {x | x < -1 or x > 2}
                conditions.append(self.nested(self.statement))
            self.expect("}")
            return conditions[0] if len(conditions) == 1 else ("set", tuple(conditions))
        member = self.side if opener == "{" else self.expr  # a set may hold points: {(1, 2), (3, 4)}
        elements = [self.nested(member)] if opener else []
        while opener and len(elements) < MAX_ITEMS and self.eat(","):
            elements.append(self.nested(member))
        closer = self.eat(")", "]", "}")
        if not opener or not closer or (opener == "{") != (closer == "}"):
            raise Rejected("expected a set, a tuple or an interval")
        if opener == "{":
            return ("set", tuple(("scalar", None, e.expr) if isinstance(e, Sized) else e for e in elements))
        elements = [e.expr for e in elements]
        if len(elements) == 2 and (opener + closer != "()" or set(elements) & set(_INFINITE)):
            return interval(*elements, opener == "[", closer == "]")
        if len(elements) > 1 and opener + closer in ("()", "[]"):
            return ("tuple", tuple(elements))
        raise Rejected("a bracket that is neither a tuple nor an interval")

    def matrix(self):
        self.expect("matrix")
        rows = [[self.nested(self.expr).expr]]
        while (sep := self.eat("&", "row")) and self.peek() != "endmatrix":
            if sep == "row":
                rows.append([])
            rows[-1].append(self.nested(self.expr).expr)
            if len(rows) > MAX_ITEMS or len(rows[-1]) > MAX_ITEMS:
                raise Rejected("matrix too large")
        self.expect("endmatrix")
        if len({len(row) for row in rows}) != 1:
            raise Rejected("ragged matrix")
        return ("matrix", tuple(map(tuple, rows)))

    def expr(self) -> Sized:
        value = self.term()
        while op := self.eat("+", "-"):
            value = sized_op(op, value, self.term())
        return value

    def term(self) -> Sized:
        start = self.pos
        value = self.factor()
        if self.pos - start <= 2 and value.expr.is_Integer and self.peek() == "frac":
            value = self.mixed_number(value)
        while True:
            if op := self.eat("*", "/"):
                value = sized_op(op, value, self.factor())
            elif self.starts_product():
                value = sized_op("*", value, self.power())  # 2x, (x+1)(x+2); never a digit: "2 3" is not 6
            else:
                return value

    def mixed_number(self, whole: Sized) -> Sized:
        """2\\frac{1}{2} is 5/2 when all three are integers (and -2\\frac12 is -5/2)."""
        saved = self.pos, list(self.tokens)
        self.eat("frac")
        numerator, denominator = self.tex_argument(), self.tex_argument()
        if not (numerator.expr.is_Integer and denominator.expr.is_Integer):
            self.pos, self.tokens = saved  # 2\\frac{x}{3} is a product
            return whole
        part = sized_op("/", numerator, denominator)
        return sized_op("-" if whole.expr < 0 else "+", whole, part)

    def starts_product(self) -> bool:
        token = self.peek()
        return (token in ("(", "{", "[", "pi", "sqrt", "frac", *_FUNCTIONS, *GREEK)
                or (len(token) == 1 and token.isalpha()) or (token == "|" and not self.bars))

    def factor(self) -> Sized:
        sign = self.eat("+", "-")  # one sign: "2*-3" is fine, "--5" is not how anyone writes 5
        value = self.power()
        return value._replace(expr=-value.expr) if sign == "-" else value

    def power(self) -> Sized:
        value = self.atom()
        if self.eat("^"):
            value = sized_op("^", value, self.nested(self.factor))
        while mark := self.eat("%", "°"):
            self.marks.add(mark)  # 28% reads 28: verify.py decides what a percent equals
        return value

    def group(self, openers: str = "({[") -> Sized:
        opener = self.eat(*openers)
        if not opener:
            raise Rejected(f"expected one of {openers}")
        return self.nested(self.expr, _CLOSER[opener])

    def tex_argument(self, openers: str = "{", digits: int = 1) -> Sized:
        """A {group} or a single token: the first `digits` digits of a number (\\frac94 is 9/4,
        as TeX reads it; \\sqrt13 is read as meant, the root of 13, with digits=0: all of them)."""
        token = self.peek()
        if token in openers:
            return self.group(openers)
        if token.isdigit() and digits:
            self.tokens[self.pos:self.pos + 1] = [token[0]] + ([token[1:]] if len(token) > 1 else [])
            return sized_literal(self.eat())
        if token[:1].isdigit() or (len(token) == 1 and token.isalpha()) or token in ("pi", *GREEK):
            return self.atom()
        raise Rejected("expected an argument")

    def atom(self) -> Sized:
        if self.peek() in _CLOSER:
            return self.group()
        token = self.eat()
        if token == "|":
            self.bars += 1
            value = self.nested(self.expr, "|")
            self.bars -= 1
            return value._replace(expr=sympy.Abs(value.expr))
        if ":" in token:
            return Sized(sympy.Symbol(token), 1, 1)  # a time or a ratio, 4:30: equal only to itself
        if token[:1].isdigit() or token[:1] == ".":
            self.has_decimal |= "." in token
            return self.subscript(token) if self.eat("_") else sized_literal(token)
        if token in ("e", "i") and self.peek() != "_":
            return Sized(_CONSTANTS[token], 1, 2)  # as in the math sets; `E`, `I` are plain letters
        if (len(token) == 1 and token.isalpha()) or token in GREEK:
            return self.subscript(token) if self.eat("_") else Sized(sympy.Symbol(token), 1, 1)
        if token == "pi":
            return Sized(sympy.pi, 1, 2)
        if token == "oo":
            return Sized(sympy.oo, 1, 1)
        if token == "frac":
            return sized_op("/", self.tex_argument(), self.tex_argument())
        if token == "binom":
            return sized_binomial(self.tex_argument(), self.tex_argument())
        if token == "sqrt":
            index = self.nested(self.expr, "]") if self.eat("[") else Sized(sympy.Integer(2), 1, 2)
            if not (index.expr.is_Integer and 2 <= index.expr <= MAX_ROOT):
                raise Rejected("bad root index")
            return sized_op("^", self.tex_argument("({", digits=0), Sized(1 / index.expr, 1, index.bits))
        if token in _FUNCTIONS:
            return self.function(token)
        raise Rejected(f"unexpected {token or 'end of answer'!r}")

    def subscript(self, head: str) -> Sized:
        """a_n, a_{n+1}, x_1: one name; 1011_2: a number in base 2, a name equal only to itself."""
        if self.eat("{"):
            end = self.closing(self.pos - 1)
            inside = self.tokens[self.pos:end]
            if end < 0 or not inside or len(inside) > 5 or not all(t.isalnum() or t in "+-" for t in inside):
                raise Rejected("bad subscript")
            self.pos = end + 1
        else:
            inside = [self.eat()]
            if not inside[0].isalnum():
                raise Rejected("bad subscript")
        sub = "".join(inside)
        if head[0].isdigit() and not (sub.isdigit() and 2 <= int(sub) <= 36 and "." not in head
                                      and all(int(d, 36) < int(sub) for d in head)):
            raise Rejected("bad base")
        return Sized(sympy.Symbol(f"{head}_{sub}"), 1, 1)

    def function(self, name: str) -> Sized:
        """\\sin x, \\sin(x), \\sin^2 x, \\sin^{-1} x, \\log_2 8, \\ln x^2 (= ln(x^2))."""
        base = self.tex_argument() if name == "log" and self.eat("_") else None
        exponent = self.nested(self.factor) if self.eat("^") else None
        if exponent is not None and exponent.expr == -1 and name in _INVERSE:
            name, exponent = _INVERSE[name], None
        in_degrees = "°" in self.marks
        if self.peek() in ("(", "{", "["):
            arg = self.group()
        else:  # TeX's convention: the argument runs over a product of factors, \sin 2x = sin(2x)
            arg = self.nested(self.power)
            while self.peek() not in _FUNCTIONS and (len(self.peek()) == 1 and self.peek().isalpha()
                                                     or self.peek() in ("pi", *GREEK)):
                arg = sized_op("*", arg, self.nested(self.power))
        if "°" in self.marks and not in_degrees:  # \sin 30^\circ: the answer is no angle
            self.marks.discard("°")
            arg = sized_op("*", arg, Sized(sympy.pi / 180, 1, 8))
        value = sized_function(name, arg, base)
        return sized_op("^", value, exponent) if exponent is not None else value


def interval(lo, hi, lo_closed: bool, hi_closed: bool) -> tuple:
    """("interval", lo, hi, lo_closed, hi_closed); an infinite end is always open."""
    return ("interval", lo, hi, lo_closed and lo not in _INFINITE, hi_closed and hi not in _INFINITE)


def statement_structure(sides: list, ops: list[str]):
    """One statement as a structure (see parse_answer)."""
    exprs = [side.expr if isinstance(side, Sized) else None for side in sides]
    if not ops:
        return ("scalar", None, exprs[0]) if exprs[0] is not None else sides[0]
    if ops == ["in"] or (ops == ["="] and exprs[1] is None):  # x \in [0, 1);  (x, y) = (1, 2)
        if exprs[1] is not None or (exprs[0] is not None and not exprs[0].is_Symbol):
            raise Rejected("expected a variable or a tuple of them before a set")
        return sides[1]
    if None in exprs or "in" in ops:
        raise Rejected("a relation between sets")
    if set(ops) <= {"=", "≈"}:
        return equation(exprs, ops)
    if set(ops) <= {"<", "<=", ">", ">="} or ops == ["!="]:
        return relation(exprs, ops)
    raise Rejected("mixed relations")


def equation(exprs: list, ops: list[str]):
    """x = 5, 5 = x, a chain x = 5+5+1 = 11 (its last side; x \\approx 11 too, but a value
    before \\approx is exact: \\sqrt{10} \\approx 3.16 says sqrt(10)), 2+3 = 5 (the value), or an
    equation in two or more variables ("eq", lhs - rhs): 2x+4y-3=0. An equation in one variable
    with no side alone (2x = 10) is the problem restated, not an answer: refused."""
    for at, op in enumerate(ops):
        if op == "≈" and not exprs[at].is_Symbol:
            exprs = exprs[:at + 1]  # \sqrt{10} \approx 3.162: the exact side, not its rounding
            break
    first, last = exprs[0], exprs[-1]
    if first == _FUNCTION_NAME.expr:
        return ("scalar", None, last)
    if first.is_Symbol:
        return ("scalar", first, last)
    if len(exprs) == 2 and last.is_Symbol:
        return ("scalar", last, first)
    symbols = (first - last).free_symbols
    if len(exprs) > 2 or not symbols:
        return ("scalar", None, last)
    if len(symbols) == 1:
        raise Rejected("an equation in one variable must have it alone on one side")
    return ("eq", first - last)


def relation(exprs: list, ops: list[str]):
    """("rel", conditions, solved): each condition (">" | ">=" | "!=", e) says e > 0, e >= 0 or
    e != 0; `solved` is the variable standing alone on one side of every condition (x > 5,
    -1 < x < 2), else None."""
    conditions, alone = [], None
    for left, op, right in zip(exprs, ops, exprs[1:]):
        if op in ("<", "<="):
            left, right, op = right, left, op.replace("<", ">")
        conditions.append((op, left - right))
        here = {side for side in (left, right) if side.is_Symbol}
        alone = here if alone is None else alone & here
    if not any(e.free_symbols for _, e in conditions):
        raise Rejected("a relation needs a variable")
    return ("rel", tuple(conditions), alone.pop() if len(alone) == 1 else None)


@lru_cache(maxsize=4096)  # golds repeat across a batch, and a GRPO group repeats answers
def parse_answer(text: str, separators: bool = True) -> Answer:
    """Answer(structure, decimal, marks); raises Rejected. A structure is one of
    ("scalar", var or None, expr), ("tuple", exprs), ("set", structures), ("eq", expr),
    ("rel", conditions, solved var), ("interval", lo, hi, lo_closed, hi_closed),
    ("union", pieces), ("matrix", rows), ("text", words). `decimal`: a number was written with a
    point. `a \\pm b` is the set of a + b and a - b."""
    words = text_answer(text)
    if words is not None:
        return Answer(("text", words), False, frozenset())
    parser, items = Parser(text, separators), []
    signs = [i for i, token in enumerate(parser.tokens) if token == "pm"]
    if len(signs) > 1:
        raise Rejected("more than one ±")
    for sign in ("+", "-") if signs else ("",):
        tokens = list(parser.tokens)
        if sign:
            tokens[signs[0]] = sign
        parser.tokens, parser.pos = tokens, 0
        items += parser.answer()
    structure = items[0] if len(items) == 1 else ("set", tuple(items))
    return Answer(structure, parser.has_decimal, frozenset(parser.marks))


if __name__ == "__main__":
    for answer in sys.argv[1:]:
        try:
            print(normalize(answer), "->", parse_answer(answer))
        except Rejected as err:
            print(f"{answer!r}: rejected: {err}")
