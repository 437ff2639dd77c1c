"""
Tests of datafile.py: loading problems and corpora from the user's files, their FILE:LINE
errors, GSM8K answers, language detection, the held-out split, the command. References:
hand-written files and the line numbers they were written at.

    python -m pytest test_datafile.py -q
"""
import json
import os
import random
import subprocess
import sys

import pytest

import data
import datafile
import rewards
from datafile import DataFileError

HERE = os.path.dirname(os.path.abspath(__file__))
PROBLEMS = os.path.join(HERE, "examples", "problems.jsonl")
CORPUS = os.path.join(HERE, "examples", "corpus.txt")
GOOD = '{"prompt": "What is 6 * 7?", "answer": "42"}'


def write(tmp_path, lines, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def row(prompt, answer, **more):
    return json.dumps({"prompt": prompt, "answer": answer, **more}, ensure_ascii=False)


def one(tmp_path, **fields):
    """The one problem of a one-line file."""
    [problem] = datafile.load_problems(write(tmp_path, [json.dumps(fields, ensure_ascii=False)]))
    return problem


def command(*args):
    return subprocess.run([sys.executable, os.path.join(HERE, "datafile.py"), *args], capture_output=True,
                          text=True, cwd=HERE)


# ----------------------------------------------------------------------------------------------
# The shipped examples

def test_example_problems_all_load():
    problems = datafile.load_problems(PROBLEMS)
    with open(PROBLEMS, encoding="utf-8") as f:
        lines = [n for n, line in enumerate(f, 1) if line.strip()]
    assert [p.line for p in problems] == lines and len(problems) == 40  # every line is a problem
    assert {p.lang for p in problems} == {"en", "zh"}
    assert all(isinstance(p, data.Problem) and p.prompt == data.zero_prompt(p.question, p.lang) for p in problems)
    answers = {p.answer for p in problems}
    assert {"1200", "2700", "2150", "x = 5", "\\frac{3}{4}", "1.75", "280"} <= answers
    with_response = [p for p in problems if p.response is not None]
    assert len(with_response) >= 4 and {p.lang for p in with_response} == {"en", "zh"}
    for p in with_response:
        assert rewards.format_reward(p.response) == 1.0 and rewards.accuracy_reward(p.response, p.answer) == 1.0


def test_example_corpus_loads():
    docs = datafile.load_corpus(CORPUS)
    assert len(docs) == 20
    assert docs[0].startswith("To multiply 347 by 6") and docs[0].endswith("So 347 * 6 = 2082.")
    assert docs[0].count("\n") == 2  # a document's own line breaks stay
    assert all(d == d.strip() and "\n\n" not in d for d in docs)


# ----------------------------------------------------------------------------------------------
# Errors: FILE:LINE: reason, at the first bad line

BAD_LINES = {  # name: (the bad line, a phrase of the reason)
    "invalid json": ('{"prompt": "2 + 2?", "answer": 4', "invalid JSON"),
    "not an object": ('["2 + 2?", 4]', "got a list"),
    "missing prompt": ('{"answer": 4}', 'missing "prompt"'),
    "missing answer": ('{"prompt": "2 + 2?"}', 'missing "answer"'),
    "empty prompt": ('{"prompt": "  ", "answer": 4}', 'empty "prompt"'),
    "empty answer": ('{"prompt": "2 + 2?", "answer": " "}', 'empty "answer"'),
    "prompt not a string": ('{"prompt": 4, "answer": 4}', '"prompt" must be a string, not a number'),
    "answer a list": ('{"prompt": "2 + 2?", "answer": [4]}', "not a list"),
    "answer null": ('{"prompt": "2 + 2?", "answer": null}', "not null"),
    "answer true": ('{"prompt": "2 + 2?", "answer": true}', "not true/false"),
    "answer 1e-07": ('{"prompt": "tiny?", "answer": 1e-07}', "write this number as a string"),
    "answer NaN": ('{"prompt": "2 + 2?", "answer": NaN}', "write this number as a string"),
    "unknown field": ('{"prompt": "2 + 2?", "anwser": 4}', 'unknown field "anwser" (valid: prompt, answer'),
    "prompt and question": ('{"prompt": "2 + 2?", "question": "3 + 3?", "answer": 4}', 'both "prompt" and'),
    "unknown lang": ('{"prompt": "2 + 2?", "answer": 4, "lang": "fr"}', '"lang" must be "en" or "zh"'),
    "general kind": ('{"prompt": "2 + 2?", "answer": 4, "kind": "words"}', '"kind" must be'),
    "kind with a space": ('{"prompt": "2 + 2?", "answer": 4, "kind": "my kind"}', '"kind" must be'),
    "kind too long": ('{"prompt": "2 + 2?", "answer": 4, "kind": "' + "k" * 33 + '"}', '"kind" must be'),
    "kind a number": ('{"prompt": "2 + 2?", "answer": 4, "kind": 3}', '"kind" must be'),
    "unreadable answer": ('{"prompt": "Cost?", "answer": "18 +* 2"}', "does not parse"),
    "unreadable gsm8k": ('{"question": "Cost?", "answer": "So 9.\\n#### about 9"}', "does not parse"),
    "empty gsm8k": ('{"question": "Cost?", "answer": "It is 9.\\n#### "}', 'empty "answer"'),
    "templated prompt": ('{"prompt": "User: 2 + 2?\\nAssistant:", "answer": 4}', "bare question"),
    "response not a string": ('{"prompt": "2 + 2?", "answer": 4, "response": 4}', '"response" must be a string'),
    "response unformatted": ('{"prompt": "2 + 2?", "answer": 4, "response": "<think> 2 + 2 </think> 4"}',
                             '"response" is not'),
    "response wrong": ('{"prompt": "2 + 2?", "answer": 4, "response": "<think> 2 + 2 </think> <answer> 5 </answer>"}',
                       "answers '5', not the gold '4'"),
    "same prompt, another answer": ('{"prompt": "What is  6 * 7?", "answer": "43"}',
                                    "the prompt of line 1 again, with another answer ('43', there '42')"),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_bad_line_names_file_and_line(tmp_path, name):
    bad, reason = BAD_LINES[name]
    path = write(tmp_path, [GOOD, "", bad, GOOD])  # a good line, a blank one, the bad one (line 3)
    with pytest.raises(DataFileError) as err:
        datafile.load_problems(path)
    assert str(err.value).startswith(f"{path}:3: ") and reason in err.value.reason, str(err.value)
    assert (err.value.path, err.value.line) == (path, 3) and "\n" not in str(err.value)


def test_first_bad_line_wins(tmp_path):
    path = write(tmp_path, [GOOD, '{"prompt": "x"}', "not json"])
    with pytest.raises(DataFileError, match=r":2: missing \"answer\"$"):
        datafile.load_problems(path)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes((GOOD + "\n\n").encode() + b'{"prompt": "caf\xe9?", "answer": 1}\n')
    with pytest.raises(DataFileError, match=r"p\.jsonl:3: not UTF-8 \(byte 0xe9\)$"):
        datafile.load_problems(str(path))
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n").encode())  # a byte-order mark is dropped
    assert datafile.load_problems(str(path))[0].answer == "42"


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file_is_line_0(tmp_path, content):
    (tmp_path / "p.jsonl").write_text(content)
    (tmp_path / "c.txt").write_text(content)
    with pytest.raises(DataFileError, match=r"p\.jsonl:0: no problems"):
        datafile.load_problems(str(tmp_path / "p.jsonl"))
    with pytest.raises(DataFileError, match=r"c\.txt:0: no documents"):
        datafile.load_corpus(str(tmp_path / "c.txt"))


def test_missing_file_is_line_0(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataFileError, match=r"nope\.jsonl:0: cannot read it: No such file"):
        datafile.load_problems(path)


# ----------------------------------------------------------------------------------------------
# What a line means

@pytest.mark.parametrize("answer, gold", [
    ("Half of 2,400 is <<2400/2=1200>>1200.\n#### 1,200", "1200"),
    ("#### 72", "72"),
    ("It drops 3.\n#### -3", "-3"),
    ("a #### 5\n#### 1,234,567.5", "1234567.5"),  # the last ####
    ("#### $12,000", "$12000"),                    # verify.py drops the $
    ("#### 1,2", "1,2"),                           # not a thousands comma: left to the verifier
    ("3/4", "3/4"),
    (7, "7"),
    (-3, "-3"),
    (2.5, "2.5"),
])
def test_answers(tmp_path, answer, gold):
    assert one(tmp_path, question="Q?", answer=answer).answer == gold


def test_commas_only_removed_after_hashes(tmp_path):
    assert one(tmp_path, prompt="Q?", answer="1,200").answer == "1,200"  # a tuple, as written


@pytest.mark.parametrize("prompt, lang", [("What is 6 * 7?", "en"), ("计算 6 * 7。", "zh"),
                                          ("6 * 7 等于多少?", "zh"), ("What is 6 * 7？", "en")])
def test_lang_from_the_prompt(tmp_path, prompt, lang):
    assert one(tmp_path, prompt=prompt, answer=42).lang == lang


def test_given_lang_wins(tmp_path):
    assert one(tmp_path, prompt="计算 6 * 7。", answer=42, lang="en").lang == "en"
    assert one(tmp_path, prompt="6 * 7 = ?", answer=42, lang="zh").lang == "zh"


def test_fields_and_defaults(tmp_path):
    response = "<think>x = 10 / 2</think><answer>5</answer>"
    p = one(tmp_path, prompt="  Solve  2x = 10.\n", answer="x = 5", response=response)
    assert (p.question, p.answer, p.kind, p.lang) == ("Solve  2x = 10.", "x = 5", "file", "en")
    assert p.difficulty == 0 and p.steps == []
    assert p.key == ("Solve 2x = 10.",) and p.line == 1
    assert p.response == " <think>x = 10 / 2</think><answer>5</answer>"  # after "Assistant:", as data.tagged
    assert one(tmp_path, prompt="Q?", answer=1, kind="my-kind_2", response=None).kind == "my-kind_2"
    assert one(tmp_path, prompt="Q?", answer=1).response is None


def test_same_prompt_same_answer_is_fine(tmp_path):
    problems = datafile.load_problems(write(tmp_path, [GOOD, row("What is 6 * 7?", 42, lang="zh")]))
    assert [p.line for p in problems] == [1, 2] and problems[0].key == problems[1].key


# ----------------------------------------------------------------------------------------------
# The held-out split

def numbered(n, start=0):
    return [row(f"What is {i} + {i}?", 2 * i) for i in range(start, start + n)]


def content(problems):
    return [(p.question, p.answer, p.lang, p.kind, p.response) for p in problems]


def test_split_sizes_and_disjoint(tmp_path):
    problems = datafile.load_problems(write(tmp_path, numbered(42)))
    train, heldout = datafile.split_problems(problems, 200, seed=1)
    assert len(heldout) == 8 and len(train) == 34  # a fifth of 42, rounded down
    assert {p.key for p in train}.isdisjoint({p.key for p in heldout})
    assert sorted(content(train + heldout)) == sorted(content(problems))
    train, heldout = datafile.split_problems(problems, 3, seed=1)
    assert len(heldout) == 3 and len(train) == 39  # n_heldout caps it
    assert datafile.split_problems(problems, 0, seed=1) == (problems, [])


def test_split_deterministic_seeded_and_order_free(tmp_path):
    lines = numbered(40)
    problems = datafile.load_problems(write(tmp_path, lines))
    train, heldout = datafile.split_problems(problems, 200, seed=7)
    assert datafile.split_problems(problems, 200, seed=7) == (train, heldout)
    assert content(datafile.split_problems(problems, 200, seed=8)[1]) != content(heldout)
    random.Random(0).shuffle(lines)
    shuffled = datafile.load_problems(write(tmp_path, lines, "shuffled.jsonl"))
    train2, heldout2 = datafile.split_problems(shuffled, 200, seed=7)
    assert content(heldout2) == content(heldout)
    assert sorted(content(train2)) == sorted(content(train))
    assert [p.line for p in train2] == sorted(p.line for p in train2)  # train keeps the file's order


def test_split_keeps_copies_together(tmp_path):
    copies = [row(f"What is {i} + {i}?", 2 * i, kind=f"copy{c}") for i in range(10) for c in (2, 1)]
    problems = datafile.load_problems(write(tmp_path, copies))
    train, heldout = datafile.split_problems(problems, 200, seed=3)
    assert len(heldout) == 2 and len(train) == 16  # 10 distinct prompts: 2 held out, each once
    assert {p.key for p in train}.isdisjoint({p.key for p in heldout})
    assert all(p.kind == "copy1" for p in heldout)  # chosen by content, not by line
    reordered = datafile.load_problems(write(tmp_path, copies[::-1], "r.jsonl"))
    assert content(datafile.split_problems(reordered, 200, seed=3)[1]) == content(heldout)


def test_split_needs_five_prompts(tmp_path):
    path = write(tmp_path, numbered(4) + numbered(4))  # 8 lines, 4 distinct prompts
    with pytest.raises(DataFileError, match=r"p\.jsonl:0: 4 distinct prompts: at least 5"):
        datafile.split_problems(datafile.load_problems(path), 200, seed=0)
    train, heldout = datafile.split_problems(datafile.load_problems(write(tmp_path, numbered(5))), 200, seed=0)
    assert len(train) == 4 and len(heldout) == 1
    with pytest.raises(DataFileError, match=r"one\.jsonl:0: 1 distinct prompts"):
        datafile.split_problems(datafile.load_problems(write(tmp_path, [GOOD], "one.jsonl")), 200, seed=0)


def test_split_copies_differing_in_response(tmp_path):
    response = "<think> 6 * 7 = 42 </think> <answer> 42 </answer>"
    lines = numbered(4) + [GOOD, row("What is 6 * 7?", "42", response=response)]
    problems = datafile.load_problems(write(tmp_path, lines))
    seed = next(s for s in range(100) if datafile.split_problems(problems, 200, s)[1][0].key == ("What is 6 * 7?",))
    for order in (lines, lines[::-1]):
        problems = datafile.load_problems(write(tmp_path, order))
        train, heldout = datafile.split_problems(problems, 200, seed)
        assert content(heldout) == [("What is 6 * 7?", "42", "en", "file", None)] and len(train) == 4


# ----------------------------------------------------------------------------------------------
# The corpus

def test_corpus_documents(tmp_path):
    text = "\ufeffone\r\nstill one\r\n\r\n  \n\t\n  two  \n\n\n\nthree\n  indented\n"
    (tmp_path / "c.txt").write_bytes(text.encode())
    assert datafile.load_corpus(str(tmp_path / "c.txt")) == ["one\nstill one", "two", "three\n  indented"]
    (tmp_path / "d.txt").write_text("last line without a newline")
    assert datafile.load_corpus(str(tmp_path / "d.txt")) == ["last line without a newline"]


def test_corpus_errors_name_the_line(tmp_path):
    cap = datafile.MAX_DOC_CHARS
    path = write(tmp_path, ["short", "", "", "x" * cap, "", "y" * (cap // 2), "y" * (cap // 2)], "c.txt")
    with pytest.raises(DataFileError, match=r"c\.txt:6: a document of 100,001 characters"):
        datafile.load_corpus(path)  # its first line; a document of exactly the cap is fine
    path = write(tmp_path, ["", " ", "x" * (cap + 1)], "first.txt")
    with pytest.raises(DataFileError, match=r"first\.txt:3: a document of"):
        datafile.load_corpus(path)
    (tmp_path / "b.txt").write_bytes(b"\nfine\n\nstill fine\nbad \xff\n")
    with pytest.raises(DataFileError, match=r"b\.txt:5: not UTF-8 \(byte 0xff\)"):
        datafile.load_corpus(str(tmp_path / "b.txt"))


# ----------------------------------------------------------------------------------------------
# The command

def test_command_summary():
    r = command(PROBLEMS, "--n_heldout", "5", "--seed", "1")
    assert r.returncode == 0 and r.stdout.count("\n") == 1, r.stderr
    assert "40 problems (27 en, 13 zh;" in r.stdout and "6 with a response" in r.stdout
    assert "held out 5, train 35" in r.stdout
    r = command(CORPUS)
    assert r.returncode == 0 and "20 documents" in r.stdout, r.stderr


@pytest.mark.parametrize("lines, name, where", [([GOOD, '{"prompt": "x", "answer": "1 +* 2"}'], "p.jsonl", ":2: "),
                                                (["", ""], "c.txt", ":0: "),
                                                (numbered(3), "p.jsonl", ":0: ")])
def test_command_exits_2_with_one_line(tmp_path, lines, name, where):
    path = write(tmp_path, lines, name)
    r = command(path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(path + where) and r.stderr.count("\n") == 1, r.stderr
