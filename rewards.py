"""rewards.py: the rule rewards of nanoR1 (format, accuracy, language consistency, needless chains)
and their sum.

DeepSeek-R1 scores its RL rollouts with rules, not a neural reward model (§2.2.2): accuracy (is
the final answer right?) plus format (reasoning inside <think>, answer inside <answer>); §2.3.3
adds language consistency (the share of the reasoning's words in the prompt's language) and sums
it with the others. Here are the three, the needless-chain charge of rl2, and `score_batch`, which
sums the terms a training stage names (its row in train.py says which); whether a math answer is
right is verify.py's job, whether a general task's is the world's own reader's (data.py).

    python rewards.py "<think>2*3 = 6</think><answer>6</answer>" 6    # score one completion
    python -m pytest test_rewards.py -q                               # the tests

The format. The R1-Zero prompt (data.py) ends with "Assistant:" and does NOT pre-fill <think>:
opening the tag is part of what R1-Zero learns. A completion (the text generated after the
prompt, end-of-text removed) earns the format reward only if the whole string is
`<think>reasoning</think><answer>answer</answer>`, both non-empty, with optional whitespace
before, between and after the blocks: each tag exactly once, nothing nested, repeated or
trailing. The answer is read from the single <answer> block: a lone \\boxed{} inside it wins,
else its last math span ($...$), else the whole block; accuracy needs that block but not the
rest of the format, so the two signals stay separate.

Hacking the rewards. Two answer blocks or two \\boxed{} are a hedge and earn no accuracy; verify.py
treats the answer itself as an adversary's (its docstring has the threat model). Language
consistency counts words, not characters, so bare math without words scores 0.0 rather than
collecting the reward for free. Deliberate differences from the paper: one-letter Latin words are
variables, not English words; general (non-reasoning) tasks are checked exactly by the world's
readers, and a chain of thought on them is charged by a rule (`needless_chain`), where §2.3.4
uses preference reward models: at this size there is no data to train one, and the toy's
general tasks have exact answers.
"""

import argparse
import json
import re
import unicodedata
from dataclasses import dataclass, fields

import data
from verify import DEADLINE_S, answer_in_block, verdict

# ----------------------------------------------------------------------------- format and answer
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_FORMAT_RE = re.compile(r"\s*<think>(.*)</think>\s*<answer>(.*)</answer>\s*", re.S)


def format_reward(completion: str) -> float:
    """1.0 iff the completion is exactly <think>...</think><answer>...</answer> (see above)."""
    if any(completion.count(tag) != 1 for tag in _TAGS):  # missing, repeated or nested tags
        return 0.0
    match = _FORMAT_RE.fullmatch(completion)  # each tag occurs once: no catastrophic backtracking
    return 1.0 if match and match.group(1).strip() and match.group(2).strip() else 0.0


def extract_answer(completion: str) -> str | None:
    """The answer in the single <answer> block, else None: its lone \\boxed{} if it has one (two
    are a hedge: None), else its last math span ($...$, \\(...\\), \\[...\\]; several joined by
    "or" or commas are one list), else the whole block (verify.answer_in_block)."""
    if completion.count("<answer>") != 1 or completion.count("</answer>") != 1:
        return None  # several blocks are a hedge; none is no answer
    start, end = completion.index("<answer>") + len("<answer>"), completion.index("</answer>")
    return answer_in_block(completion[start:end]) if start <= end else None


def accuracy_reward(completion: str, answer: str, deadline_s: float = DEADLINE_S) -> float:
    """1.0 iff the completion's single answer block is equivalent to the gold answer."""
    pred = extract_answer(completion)
    return float(pred is not None and verdict(pred, answer, deadline_s) == "yes")


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


# ----------------------------------------------------------------------------- needless chains
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.S)
NEEDLESS_WORDS = 12  # a general answer's <think> needs a few words at most


def needless_chain(completion: str) -> float:
    """1.0 if the completion reasons where no reasoning is needed: its <think> block (or, with
    no block, the text before <answer>) holds a computation ('=') or more than NEEDLESS_WORDS
    words. R1 §2.3.3 gives simple queries no chain of thought; rl2 charges one on a general
    task (the `needless` term), a rule standing in for §2.3.4's preference reward model."""
    think = _THINK_RE.search(completion)
    body = think.group(1) if think else completion.split("<answer>")[0]
    return float("=" in body or len(_WORD_RE.findall(body)) > NEEDLESS_WORDS)


# ----------------------------------------------------------------------------- batch scoring
@dataclass
class RewardWeights:
    accuracy: float = 1.0   # R1 §2.2.2: the rule-based accuracy reward
    format: float = 1.0     # R1 §2.2.2: added to accuracy unweighted; a plain sum
    lang: float = 1.0       # R1 §2.3.2: "directly summing" accuracy and language consistency
    needless: float = -0.5  # rl2: a chain of thought on a general task costs this (see needless_chain)


TERMS = tuple(field.name for field in fields(RewardWeights))  # the names score_batch can sum


def _check_terms(terms) -> tuple:
    # a bare string is a tuple that lost its comma: ("accuracy") would be read letter by letter
    if isinstance(terms, str) or not terms or any(term not in TERMS for term in terms):
        raise ValueError(f"terms must be a non-empty tuple of reward terms from "
                         f"{', '.join(TERMS)}; got {terms!r}")
    return tuple(terms)


def score_batch(completions: list[str], answers: list[str], langs: list[str],
                terms: tuple[str, ...] = ("accuracy", "format"), weights: RewardWeights | None = None,
                deadline_s: float = DEADLINE_S, kinds: list[str] | None = None) -> dict:
    """Rewards of a batch. `reward` sums the named `terms` (some of TERMS), each times its
    weight; the lists `accuracy`, `format`, `lang` and `needless` hold every term whatever is
    summed; the counters `n_failed` (checker error, crash, out of memory), `n_timeout` and
    `n_rejected` (answer outside the whitelist or over a limit) count verdicts that scored 0.
    `kinds[i]` names the task (default: math); a general task (data.GENERAL_KINDS) is checked by
    the world's exact reader of its answer, and only a general task is charged `needless`.
    Identical (answer, gold) math pairs are judged once."""
    terms = _check_terms(terms)
    kinds = kinds or ["math"] * len(completions)
    if not len(completions) == len(answers) == len(langs) == len(kinds):
        raise ValueError("completions, answers, langs (and kinds) must have the same length")
    weights = weights or RewardWeights()
    out = {"reward": [], "accuracy": [], "format": [], "lang": [], "needless": [],
           "n_failed": 0, "n_timeout": 0, "n_rejected": 0}
    verdicts: dict[tuple[str, str], str] = {}
    for completion, gold, lang, kind in zip(completions, answers, langs, kinds):
        pred, result, general = extract_answer(completion), "no", kind in data.GENERAL_KINDS
        if pred is not None and general:
            result = "yes" if data.general_correct(kind, lang, pred, gold) else "no"
        elif pred is not None:
            result = verdicts.get((pred, gold))
            if result is None:
                result = verdicts[pred, gold] = verdict(pred, gold, deadline_s)
                out["n_failed"] += result in ("fail", "oom")
                out["n_timeout"] += result == "timeout"
                out["n_rejected"] += result == "reject"
        scores = {"accuracy": float(result == "yes"), "format": format_reward(completion),
                  "lang": language_consistency(completion, lang),
                  "needless": needless_chain(completion) if general else 0.0}
        for term, value in scores.items():
            out[term].append(value)
        out["reward"].append(sum(getattr(weights, term) * scores[term] for term in terms))
    return out


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="Score one completion with every reward term.")
    cli.add_argument("completion")
    cli.add_argument("gold", help="the gold answer")
    cli.add_argument("lang", nargs="?", default="en", choices=("en", "zh"))
    args = cli.parse_args()
    result = score_batch([args.completion], [args.gold], [args.lang], terms=TERMS)
    one = {name: value[0] if isinstance(value, list) else value for name, value in result.items()}
    print(json.dumps({"answer": extract_answer(args.completion), **one}, ensure_ascii=False))
