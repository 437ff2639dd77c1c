"""latex.py: the notations of a math answer, plain or LaTeX, respelled into whitelisted tokens.

verify.py asks whether two answers are equivalent; an answer is untrusted text (a policy's, R1
§2.2.2), so it never reaches sympy's string parser, which runs Python. Reading one takes two
steps: here `normalize` respells the notations below into one spelling and `tokenize` accepts a
whitelist of tokens; then parse.py's recursive descent builds sympy objects from the tokens,
estimating the size of every result first (verify.py's docstring has the threat model).

    python latex.py "(\\frac{3}{5},\\frac83]"   # the normalised text and its tokens
    python -m pytest test_verify.py -q          # its tests live with verify.py's

The forms it reads, beyond the toy world's plain `2x^2 - 16x - 18`, `7/12`, `x = 5`, `3, 4`:
- numbers: `1,000` and `7,425,000` (see "Thousands" below), `14{,}916`, `10,\\!000`, `1\\,000`,
  `1 000`; `28\\%` and `28 percent` (a mark: verify.py decides what it is equal to); `90^\\circ`,
  `25^\\circ C`; `\\$5`; `2\\frac{1}{2}` (a mixed number); `0.1\\overline{6}`; `1011_2` and `4:30`
  (names, equal only to themselves); `#### 72` (GSM8K); `**18**` (Markdown).
- LaTeX: `\\frac13`, `\\frac94\\pi` (TeX's one-digit arguments), `\\dfrac` `\\tfrac` `\\cfrac`,
  `\\sqrt3`, `\\sqrt13` (read as meant: the root of 13), `\\sqrt[3]{x}`, `\\binom{n}{k}`, `\\left(`,
  spacing commands, `\\cdot`, `\\times`, `|x|`, Greek letters, `e` and `i` (the constants),
  subscripts `a_n`, `f(x) = ...`, `xy` (a run of up to three letters is a product).
- functions `\\sin \\cos \\tan \\sec \\csc \\cot \\arcsin \\arccos \\arctan \\sinh \\cosh \\tanh
  \\log \\log_2 \\ln \\exp`, with powers (`\\tan^2(y)`, `\\sin^{-1}x` = arcsin) and degrees
  (`\\sin 30^\\circ`); `\\infty` (alone or as an interval's end, never in arithmetic).
- structures: tuples `(1, 2)` and `\\langle 1, 2 \\rangle`; sets `\\{1,2\\}`, `\\{(1, 2), (3, 4)\\}`,
  `\\{x \\mid x > 2\\}`; intervals `[0,1)`, `\\cup`, `\\setminus`, `\\mathbb{R}`, `\\emptyset`, `all
  real numbers`; relations `x \\geq 5`, `-1 < x < 2`, `x \\neq 3`, `x \\in [0, 1)`; equations
  `2x+4y-3=0`, chains `x = 5+5+1 = 11` and `x \\approx 11` (the last side; but a value before
  `\\approx` is exact: `\\sqrt{10} \\approx 3.16` is sqrt(10)); `\\pm`; families `k\\pi, k \\in
  \\mathbb{Z}`; matrices `pmatrix`, `bmatrix`.
- text: `\\text{}`, `\\mbox{}`, `\\textbf{}` next to math are units or remarks and are dropped, as
  are trailing unit words (`$125$ miles`, `54 km/h`, `5cm`); `\\text{ or }` separates items; an
  answer that is only words (`\\text{Evelyn}`) is text, compared as lower-cased words, and a
  choice (`C`, `(C)`, `\\textbf{(C)}\\ 12`) by its letter.
- where an answer sits in a text: `\\boxed{}` (braces matched) and the math spans `$...$`,
  `$$...$$`, `\\(...\\)`, `\\[...\\]` (verify.py picks one).

Thousands. A plain comma is a thousands separator when the digit groups around it are 1-3
digits and then exactly 3 digits each, with no space after any comma, the first group not
starting with 0, and the number not directly after an opening bracket or a comma: `1,000` and
`-7,425,000` are numbers; `1, 000`, `(1,000)`, `2,3` and `1,00` are lists or tuples. Where the
gold itself lists items (a comma or "or" outside brackets: roots `1, -2`), verify.py reads the
prediction with commas as item separators only (`separators=False`): `1,100` is then 1 and 100.
"""

import re
import sys
from fractions import Fraction
from functools import lru_cache

# ----------------------------------------------------------------------------- limits
MAX_CHARS = 400      # a toy-world answer is a few dozen characters, a MATH answer rarely 100
MAX_TOKENS = 200     # (500 nested parentheses are 1,001 tokens)
MAX_DIGITS = 40      # digits of one literal (after joining thousands)


class Rejected(Exception):
    """The answer is outside the whitelist or over a limit: not equivalent, nothing was run."""


# ----------------------------------------------------------------------------- normaliser
_KEYBOARD = {"，": ",", "；": ",", "（": "(", "）": ")", "×": "*", "·": "*", "÷": "/", "−": "-",
             "或": " or ", "π": "pi", "≤": "<=", "≥": ">=", "≠": "!=", "∞": "\\infty ",
             "∪": "\\cup ", "±": "\\pm ", "√": "\\sqrt ", "²": "^2", "³": "^3"}  # not full-width digits
_COMMANDS = {"dfrac": "\\frac", "tfrac": "\\frac", "cfrac": "\\frac", "cdot": "*", "times": "*",
             "div": "/", "le": "<=", "leq": "<=", "leqslant": "<=", "ge": ">=", "geq": ">=",
             "geqslant": ">=", "lt": "<", "gt": ">", "ne": "!=", "neq": "!=", "approx": "≈",
             "circ": "°", "degree": "°", "left": "", "right": "", "big": "", "Big": "", "bigl": "",
             "bigr": "", "Bigl": "", "Bigr": "", "displaystyle": "", "quad": " ", "qquad": " ",
             "langle": "(", "rangle": ")", "lvert": "|", "rvert": "|", "vert": "|", "mid": "|",
             "varnothing": "\\emptyset", "dbinom": "\\binom", "tbinom": "\\binom"}  # others: the tokenizer judges
_TEXT_CMDS = r"text|textbf|textit|textrm|textnormal|textsf|mbox|mathrm|mathbf|mathit|operatorname"
_TEXT_GROUP_RE = re.compile(rf"\\(?:{_TEXT_CMDS})\s*\{{([^{{}}]*)\}}(\s*\^\s*\{{?\s*[23]\s*\}}?)?")
_TEX_SEPARATOR_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!|\\,|\\ )(?=\d{3}(?!\d))")  # 14{,}916
_THOUSANDS_RE = re.compile(r"(?<![\d.,(\[{])[1-9]\d{0,2}(?:,\d{3})+(?!\d|,\d)")    # 7,425,000
_SPACED_THOUSANDS_RE = re.compile(r"(?<![\d.,])(?<!\d )[1-9]\d{0,2}(?: \d{3})+(?!\d| \d)")
_MATRIX_RE = re.compile(r"\\(begin|end)\s*\{(?:[pbB]?matrix|array)\}(?:\s*\{[lcr|]*\})?")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*°\s*\}?(?:\s*[CF]\b)?")  # 90^\circ, 25^\circ C
_INTEGER_PARAMETER_RE = re.compile(  # `, k \in \mathbb{Z}` after a family of answers
    r"[,;]?\s*\(?\s*(?:\\text\{[^{}]*\})?\s*[A-Za-z]\s*\\in\s*\\mathbb\s*\{?\s*[ZN]\s*\}?\s*\)?\s*$")
_REPEATING_RE = re.compile(r"(\d*)\.(\d*)\\overline\s*\{(\d{1,12})\}")  # 0.1\overline{6} = 1/6
_UNIT_WORDS = r"(?:\s+(?:[A-Za-z]{2,}|[A-Za-z]+/[A-Za-z]+)\.?(?:\^\{?[23]\}?)?)"  # km/h
_UNIT_TAIL_RE = re.compile(rf"(?<=[0-9)}}\]%°])({_UNIT_WORDS}+)\s*$")  # `125 miles`, `5 sq ft`
_ATTACHED_UNIT_RE = re.compile(r"(?<=[0-9])(?:cm|mm|km|kg|mg|ml|ft|yd|mph|hrs?|lbs?|oz)"
                               r"(?:\^\{?[23]\}?)?\s*$")  # `5cm`; one letter (`5m`) stays a variable
_LONE_SPACE = re.compile(r"(?<![0-9A-Za-z]) | (?![0-9A-Za-z])")  # keeps "2 3" apart from "23"


def _text_groups(text: str) -> str:
    """\\text{...} and its kin: ` or ` / `,` between items, dropped next to math (a unit or a
    remark: `5 \\text{ cm}^2`), unwrapped where the answer is nothing else (`\\text{(C)}`)."""
    has_math = re.search(r"[0-9A-Za-z\\]", _TEXT_GROUP_RE.sub(" ", text)) is not None

    def one(match):
        words = match.group(1).strip()
        if words.lower() in ("or", "and", ",", ";"):
            return " or " if words.isalpha() else ","
        if has_math and len(words) > 1:
            return " "
        return f" {words}{match.group(2) or ''} "  # `\mathrm{e}`, or an answer made of text
    return _TEXT_GROUP_RE.sub(one, text)


def _repeating(match) -> str:
    """0.1\\overline{6} as the fraction it is: (16 - 1) / (10 * (10 - 1)) = 1/6."""
    whole, fixed, cycle = match.groups()
    numerator = int(fixed + cycle) - int(fixed or "0")
    denominator = 10 ** len(fixed) * (10 ** len(cycle) - 1)
    return f"({int(whole or '0')}+{numerator}/{denominator})"


def _drop_units(text: str) -> str:
    tail = _UNIT_TAIL_RE.search(text)
    if tail and not set(re.findall(r"[A-Za-z]+", tail.group(1))) & _MATH_WORDS:
        text = text[:tail.start()]  # `2 pi` keeps its pi
    return _ATTACHED_UNIT_RE.sub("", text)


@lru_cache(maxsize=8192)  # golds repeat across a batch, and a GRPO group repeats answers
def normalize(text: str, separators: bool = True) -> str:
    """One spelling per notation; also the key of the cheapest rung (string equality).
    `separators`: may a plain comma be a thousands separator (see the docstring)?"""
    if len(text) > MAX_CHARS:
        raise Rejected("answer too long")
    text = re.sub(r"^\s*####", "", text).strip().rstrip(".。")  # GSM8K's `#### 72`; a full stop
    text = re.sub(r"^\*\*(.*)\*\*$", r"\1", text)  # Markdown bold
    text = _INTEGER_PARAMETER_RE.sub("", text)
    for typed, meant in _KEYBOARD.items():
        text = text.replace(typed, meant)
    text = _REPEATING_RE.sub(_repeating, _TEX_SEPARATOR_RE.sub("", text))  # before `\,` is a space
    text = text.replace("\\\\", " \\row ")  # a matrix's row break
    text = _MATRIX_RE.sub(lambda m: " \\matrix " if m.group(1) == "begin" else " \\endmatrix ", text)
    text = re.sub(r"\\mathbb\s*\{?\s*R\s*\}?", lambda m: " \\reals ", _text_groups(text))
    text = text.replace("\\left.", "").replace("\\right.", "")
    text = re.sub(r"\\([A-Za-z]+)", lambda m: _COMMANDS.get(m.group(1), m.group(0)), text)
    for typed, meant in (("\\{", "{"), ("\\}", "}"), ("\\%", "%"), ("\\$", ""), ("$", ""),
                         ("\\,", " "), ("\\;", " "), ("\\:", " "), ("\\!", ""), ("\\ ", " "),
                         ("~", " "), ("**", "^")):
        text = text.replace(typed, meant)
    text = _DEGREE_RE.sub("°", text)
    text = re.sub(r"\s*\bper\s?cent\b", "%", text, flags=re.I)
    text = re.sub(r"\s*\bdegrees?\b", "°", text, flags=re.I)
    for words, meant in _WORDED.items():
        text = re.sub(rf"\b{words}\b", lambda m: meant, text, flags=re.I)
    text = _drop_units(text.strip().rstrip("."))
    if separators:
        text = _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _SPACED_THOUSANDS_RE.sub(lambda m: m.group(0).replace(" ", ""), text)
    return _LONE_SPACE.sub("", " ".join(text.split()))


# ----------------------------------------------------------------------------- text answers
_WORDLIKE_RE = re.compile(r"[\s(\[]*([A-Za-z][A-Za-z '\-]*?)[\s)\].:]*")
_NOT_NUMBERS = frozenset({"nan", "inf", "oo", "zoo"})  # Python's and sympy's non-numbers
_WORDED = {"all real numbers": " \\reals ", "infinity": " \\infty "}  # words that are math
_CHOICE_RE = re.compile(r"\s*(?:\\text(?:bf)?\s*\{\s*)?\(([A-Ea-e])\)")


@lru_cache(maxsize=8192)
def text_key(text: str) -> str | None:
    """The lower-cased words of an answer made only of words (`\\text{(C)}` and `C` give `c`,
    `\\text{Evelyn}` gives `evelyn`); None for anything holding math."""
    if len(text) > MAX_CHARS:
        return None
    bare = _TEXT_GROUP_RE.sub(lambda m: f" {m.group(1)} ", text.replace("$", "")).strip(" *")
    match = _WORDLIKE_RE.fullmatch(bare.rstrip("."))
    key = match and " ".join(match.group(1).lower().split())
    return key if key and key not in _NOT_NUMBERS and key not in _WORDED else None


def choice(text: str) -> str | None:
    """The letter of a multiple-choice answer, lower-cased: `C`, `(C)`, `\\textbf{(C) } 12`."""
    key = text_key(text)
    match = _CHOICE_RE.match(text) if key is None else None
    if match and re.search(r"\([A-Ea-e]\)|\b(?:or|and)\b", text[match.end():]):
        return None  # (C) or (D) is a hedge, not a choice
    return match.group(1).lower() if match else key if key and len(key) == 1 else None


def text_answer(text: str) -> str | None:
    """text_key(text) if the answer is text rather than letters of math: wrapped in \\text{}
    as a whole, or holding a word of four letters or more that is not math (`Evelyn`, not
    `xy` or `sqrt x`)."""
    key = text_key(text)
    if key is None:
        return None
    wrapped = _TEXT_GROUP_RE.fullmatch(text.replace("$", "").strip().rstrip("."))
    words = re.findall(r"[a-z]+", key)
    return key if wrapped or any(len(w) > 3 and w not in _MATH_WORDS for w in words) else None


# ----------------------------------------------------------------------------- plain numbers and lists
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


def is_list(normalized_gold: str) -> bool:
    """Does the gold list items (a comma or "or" outside brackets: roots `1,-2`)? Then a
    prediction's plain commas separate items too, `1,100` is 1 and 100 (the docstring, "Thousands")."""
    depth = 0
    for at, char in enumerate(normalized_gold):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and (char == "," or normalized_gold.startswith(" or ", at)):
            return True
    return False


# ----------------------------------------------------------------------------- spans in a text
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MATH_SPAN_RE = re.compile(rf"(?<!\\)\$\$(.{{1,{MAX_CHARS}}}?)\$\$|(?<!\\)\$(.{{1,{MAX_CHARS}}}?)(?<!\\)\$"
                           rf"|\\\((.{{1,{MAX_CHARS}}}?)\\\)|\\\[(.{{1,{MAX_CHARS}}}?)\\\]", re.S)


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each \\boxed{...}, braces matched; an unclosed one ends the list."""
    spans, pos = [], 0
    while match := _BOXED_RE.search(text, pos):
        depth, at = 1, match.end()
        while at < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[at], 0)
            at += 1
        if depth:
            break
        spans.append((match.start(), at, text[match.end():at - 1]))
        pos = at
    return spans


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each $...$, $$...$$, \\(...\\) and \\[...\\]."""
    return [(m.start(), m.end(), next(g for g in m.groups() if g is not None))
            for m in _MATH_SPAN_RE.finditer(text)]


# ----------------------------------------------------------------------------- tokenizer
_TOKEN_RE = re.compile(r"\s+|([0-9]{1,2}:[0-9]{2}|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(\\[A-Za-z]+)|([A-Za-z]+)"
                       r"|(<=|>=|!=|[-+*/^=,(){}\[\]<>|&%°≈_])")
FUNCTIONS = ("sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh",
             "cosh", "tanh", "log", "ln", "exp")  # with or without a backslash
GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "theta", "vartheta", "lambda",
         "mu", "nu", "rho", "sigma", "tau", "phi", "varphi", "chi", "psi", "omega")  # \theta only
_WORDS = {"\\frac": "frac", "\\sqrt": "sqrt", "\\binom": "binom", "\\pi": "pi", "sqrt": "sqrt",
          "pi": "pi", "or": "or", "and": "or", "\\infty": "oo", "\\cup": "cup", "\\in": "in",
          "\\pm": "pm", "\\mp": "pm", "\\reals": "reals", "\\emptyset": "empty", "\\setminus": "minus",
          "\\matrix": "matrix", "\\endmatrix": "endmatrix", "\\row": "row",
          **{f"\\{name}": name for name in (*FUNCTIONS, *GREEK)}, **{f: f for f in FUNCTIONS}}
_MATH_WORDS = frozenset(word.lstrip("\\") for word in _WORDS)  # never a unit or a text answer


def tokenize(text: str) -> list[str]:
    """Whitelisted tokens of a normalised answer; anything else raises Rejected. A run of two
    or three letters that is no known word is a product of one-letter variables (`xy`, `abc`)."""
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise Rejected(f"character {text[pos]!r} is not allowed")
        pos = match.end()
        number, command, letters, symbol = match.groups()
        if number and len(number.replace(".", "")) > MAX_DIGITS:
            raise Rejected("literal with too many digits")
        if command or (letters and letters in _WORDS):
            if (command or letters) not in _WORDS:
                raise Rejected(f"unknown word {command!r}")  # \infinity, \import ...
            tokens.append(_WORDS[command or letters])
        elif letters:
            if len(letters) > 3 or letters.lower() in _NOT_NUMBERS:
                raise Rejected(f"unknown word {letters!r}")  # nan, inf, zoo, lambda, import ...
            tokens.extend(letters)
        elif number or symbol:  # whitespace yields no token
            tokens.append(number or symbol)
        if len(tokens) > MAX_TOKENS:
            raise Rejected("answer has too many tokens")
    if not tokens:
        raise Rejected("empty answer")
    return tokens


if __name__ == "__main__":
    for answer in sys.argv[1:]:
        try:
            print(normalize(answer), "->", tokenize(normalize(answer)))
        except Rejected as err:
            print(f"{answer!r}: rejected: {err}")
