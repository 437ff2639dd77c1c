"""
Your own data: problems for the RL and SFT stages from a JSON-lines file, and a pretraining
corpus from a text file, each read and checked completely before anything trains on it.

    python datafile.py examples/problems.jsonl     # check a file, print a one-line summary
    python datafile.py examples/corpus.txt         # (.jsonl: problems; any other name: a corpus)
    python train.py --stage zero --data examples/problems.jsonl
    python train.py --stage pretrain --corpus examples/corpus.txt

Problems (FILE.jsonl, UTF-8): one JSON object per line; blank lines are skipped.
  prompt    the bare question, a string; the trainer wraps it in the R1-Zero template. GSM8K's
            name for it, `question`, is accepted instead, so GSM8K's own files load as they are.
  answer    the gold answer: a string the verifier reads (42, 3.5, \\frac{3}{4}, x = 5,
            x^2 + x - 6) or a JSON number. A GSM8K answer "...#### 1,200" means the text after
            the last "####" with its thousands commas removed (1200); the worked solution before
            it is ignored. Elsewhere the verifier reads 1,200 as 1200 too (latex.py's rule).
  lang      optional: "en" or "zh"; by default "zh" if the prompt holds a Han character, else "en".
  kind      optional: a label for per-kind accuracy (letters, digits, _ and -, up to 32); default
            "file". Not a general task's kind (data.GENERAL_KINDS): those are checked by other rules.
  response  optional: a worked response for the SFT stages, the text after the template's
            "Assistant:", e.g. " <think> 6 * 7 = 42 </think> <answer> 42 </answer>". It must earn
            the format reward, and its answer must be equivalent to the gold one.
Any other field is an error: a misspelt "anwser" would otherwise be dropped without a word. The
same prompt twice is allowed only with the same answer.

Corpus (any other name, UTF-8 text): documents separated by one or more blank (or whitespace-
only) lines, each stripped of surrounding whitespace.

Errors: the first fault found raises DataFileError, whose message is "FILE:LINE: reason"
(LINE 1-based; 0 for the file as a whole: unreadable, empty, too few prompts to split), and
`python datafile.py` prints that one line and exits 2. Nothing half-read is ever returned.

The held-out split (split_problems) ranks the distinct prompts by a seeded hash of their text,
so it does not depend on the order of the lines, and holds out the first min(n_heldout, 1/5 of
them); every copy of a held-out prompt leaves the training set, and it is evaluated once.
"""
import argparse
import json
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass

import data
import rewards
from verify import validate_gold, verdict

FIELDS = ("prompt", "answer", "lang", "kind", "response")
MIN_PROMPTS = 5             # distinct prompts needed to hold one out and still train on four
MAX_DOC_CHARS = 100_000     # far above any document of the toy web (a few hundred characters)
RESPONSE_DEADLINE_S = 10.0  # per response check: a file is checked once, on a possibly busy machine
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # what rewards.py counts as Chinese
_KIND = re.compile(r"[A-Za-z0-9_-]{1,32}")  # it becomes part of a metric's name
_THOUSANDS = re.compile(r"\$?-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")  # 1,200 or $12,345.50
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "true/false", type(None): "null"}


class DataFileError(ValueError):
    """A data file's first fault, as "FILE:LINE: reason" (LINE 1-based; 0: the whole file)."""

    def __init__(self, path, line, reason):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass
class FileProblem(data.Problem):
    """A problem from a file: a data.Problem (so every stage takes it as it is) that carries its
    worked response, if the line has one, and where it came from. The response travels with its
    problem through the held-out split, so a held-out problem's response is never trained on."""
    response: str | None = None  # " <think> ... </think> <answer> ... </answer>", or None
    path: str = ""
    line: int = 0                # 1-based


# ----------------------------------------------------------------------------------------------
# Reading

def read_lines(path):
    """The file's lines (line n is item n - 1), decoded as UTF-8; a byte-order mark, which some
    editors write, is dropped."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataFileError(path, 0, f"cannot read it: {err.strerror or err}") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFileError(path, line, f"not UTF-8 (byte 0x{raw[err.start]:02x})") from None
    return [line.removesuffix("\r") for line in text.split("\n")]


def _json_type(value):
    return _JSON_TYPES.get(type(value), type(value).__name__)


def gold_answer(value):
    """A line's `answer` -> the gold answer string (see the docstring); ValueError if the
    verifier cannot read it."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f'"answer" must be a string or a number, not {_json_type(value)}')
    if isinstance(value, float) and not re.fullmatch(r"-?\d+\.\d+", repr(value)):
        raise ValueError(f'"answer" {value!r}: write this number as a string')  # 1e-07, nan, inf
    text = str(value)
    if "####" in text:  # GSM8K: the worked solution, then "#### 1,200"
        text = text.rsplit("####", 1)[1].strip()
        if _THOUSANDS.fullmatch(text):
            text = text.replace(",", "")
    text = text.strip()
    if not text:
        raise ValueError('empty "answer"')
    validate_gold(text)  # its ValueError says what the verifier cannot read
    return text


def checked_response(value, answer):
    """A line's `response` -> the response as the SFT stages train on it; ValueError unless it
    is well formed and right."""
    if not isinstance(value, str):
        raise ValueError(f'"response" must be a string, not {_json_type(value)}')
    response = " " + value.strip()  # as data.tagged writes it: the prompt ends at "Assistant:"
    if rewards.format_reward(response) != 1.0:
        raise ValueError('"response" is not " <think> ... </think> <answer> ... </answer>" '
                         '(each tag once, both blocks non-empty, nothing after)')
    pred = rewards.extract_answer(response)
    result = verdict(pred, answer, RESPONSE_DEADLINE_S)
    if result != "yes":
        raise ValueError(f'"response" answers {pred!r}, not the gold {answer!r} (verifier: {result})')
    return response


def parse_problem(text):
    """One line of a problems file -> a FileProblem (path and line not set); ValueError with the
    reason if the line is not a valid problem."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(row, dict):
        raise ValueError(f'expected a JSON object with "prompt" and "answer", got {_json_type(row)}')
    if "question" in row:  # GSM8K's field name
        if "prompt" in row:
            raise ValueError('both "prompt" and "question": give one of them')
        row["prompt"] = row.pop("question")
    unknown = [name for name in row if name not in FIELDS]
    if unknown:
        raise ValueError(f'unknown field "{unknown[0]}" (valid: {", ".join(FIELDS)}; "question" for "prompt")')
    missing = [name for name in ("prompt", "answer") if name not in row]
    if missing:
        raise ValueError(f'missing "{missing[0]}"')
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        raise ValueError(f'"prompt" must be a string, not {_json_type(prompt)}')
    prompt = prompt.strip()
    if not prompt:
        raise ValueError('empty "prompt"')
    if prompt.endswith(("Assistant:", "助手：")):
        raise ValueError('"prompt" ends with the template\'s "Assistant:"; give the bare question '
                         '(the trainer adds the template)')
    answer = gold_answer(row["answer"])
    lang = row.get("lang", "zh" if _HAN.search(prompt) else "en")
    if lang not in ("en", "zh"):
        raise ValueError(f'"lang" must be "en" or "zh", not {lang!r}')
    kind = row.get("kind", "file")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind) or kind in data.GENERAL_KINDS:
        raise ValueError(f'"kind" must be up to 32 letters, digits, _ or -, and not one of '
                         f'{", ".join(data.GENERAL_KINDS)}; got {kind!r}')
    response = None if row.get("response") is None else checked_response(row["response"], answer)
    # The key, the unit of the held-out split: the question itself, runs of spaces made one.
    return FileProblem(prompt, answer, kind, lang, 0, (" ".join(prompt.split()),), [], response=response)


def load_problems(path):
    """Every problem of a JSON-lines file (format: the docstring), in file order, as FileProblems
    (data.Problems with .response, .path and .line). DataFileError at the first bad line."""
    problems, first = [], {}  # first: key -> the first problem with that prompt
    for lineno, text in enumerate(read_lines(path), 1):
        if not text.strip():
            continue
        try:
            problem = parse_problem(text)
        except ValueError as err:
            raise DataFileError(path, lineno, str(err)) from None
        problem.path, problem.line = path, lineno
        seen = first.setdefault(problem.key, problem)
        if seen.answer != problem.answer:
            raise DataFileError(path, lineno, f"the prompt of line {seen.line} again, with another answer "
                                              f"({problem.answer!r}, there {seen.answer!r})")
        problems.append(problem)
    if not problems:
        raise DataFileError(path, 0, "no problems: the file is empty")
    return problems


def load_corpus(path):
    """The documents of a text file (separated by blank lines, each stripped), in file order.
    DataFileError if it is unreadable or empty, or a document is over MAX_DOC_CHARS: that is
    most often a file whose paragraphs are not separated by blank lines, and the tokenizer,
    pure Python, trains on whole documents."""
    docs, lines, start = [], [], 0
    for lineno, text in enumerate(read_lines(path) + [""], 1):  # the extra blank line ends the last document
        if text.strip():
            start = start or lineno
            lines.append(text)
        elif lines:
            doc = "\n".join(lines).strip()
            if len(doc) > MAX_DOC_CHARS:
                raise DataFileError(path, start, f"a document of {len(doc):,} characters (at most "
                                                 f"{MAX_DOC_CHARS:,}): are its paragraphs separated by blank lines?")
            docs.append(doc)
            lines, start = [], 0
    if not docs:
        raise DataFileError(path, 0, "no documents: the file is empty")
    return docs


# ----------------------------------------------------------------------------------------------
# The held-out split

def split_problems(problems, n_heldout, seed):
    """(train, heldout) of a file's problems. The distinct prompts are ranked by a hash of
    (seed, prompt), not by their place in the file, and the first min(n_heldout, 1/5 of them)
    are held out: the same for any order of the lines. Every copy of a held-out prompt leaves
    train (kept in file order); heldout holds each once, in rank order. DataFileError (line 0)
    if the file has fewer than MIN_PROMPTS distinct prompts."""
    by_key = {}
    for p in problems:
        by_key.setdefault(p.key, []).append(p)
    if len(by_key) < MIN_PROMPTS:
        path = problems[0].path if problems else "?"
        raise DataFileError(path, 0, f"{len(by_key)} distinct prompts: at least {MIN_PROMPTS} are needed "
                                     f"to hold some out for evaluation")
    ranked = sorted(by_key, key=lambda key: (zlib.crc32(f"{seed}:{key}".encode()), key))
    held = ranked[:min(n_heldout, len(by_key) // 5)]
    # copies of a prompt may differ in lang, kind or response: keep one chosen by content, not by line
    heldout = [min(by_key[key], key=lambda p: (p.lang, p.kind, p.response or "")) for key in held]
    held = set(held)
    return [p for p in problems if p.key not in held], heldout


# ----------------------------------------------------------------------------------------------
# The command

def summary(path, n_heldout, seed):
    """One line about a data file (problems if it ends in .jsonl, else a corpus)."""
    if not path.endswith(".jsonl"):
        docs = load_corpus(path)
        sizes = [len(d) for d in docs]
        return f"{path}: {len(docs)} documents, {sum(sizes):,} characters (longest {max(sizes):,})"
    problems = load_problems(path)
    train, heldout = split_problems(problems, n_heldout, seed)
    langs, kinds = Counter(p.lang for p in problems), Counter(p.kind for p in problems)
    n_response = sum(p.response is not None for p in problems)
    return (f"{path}: {len(problems)} problems ({langs['en']} en, {langs['zh']} zh; kinds "
            f"{', '.join(f'{k} {n}' for k, n in kinds.most_common())}; {n_response} with a response); "
            f"held out {len(heldout)}, train {len(train)} (n_heldout {n_heldout}, seed {seed})")


def main(argv=None):
    cli = argparse.ArgumentParser(description="Check a data file: problems (.jsonl) or a corpus (any other name).")
    cli.add_argument("file")
    cli.add_argument("--n_heldout", type=int, default=data.DataConfig.n_heldout, help="held-out prompts at most")
    cli.add_argument("--seed", type=int, default=data.DataConfig.seed, help="seed of the held-out split")
    args = cli.parse_args(argv)
    try:
        print(summary(args.file, args.n_heldout, args.seed))
    except DataFileError as err:
        print(err, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
