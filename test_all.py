"""
The end-to-end and cross-module tests: the stages at --preset tiny, the pipeline and its
report, skipping and --force, resume after SIGKILL, the CLI. Each module's own suite is in
test_<module>.py; shared fixtures in conftest.py.

    python -m pytest -q              # everything (CPU only, a few minutes on 2 cores)
    python -m pytest test_all.py -q  # these
"""
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import bench
import config
import data
import evaluate
import grpo
import reflect
import tokenizer
import train
from checkpoint import load_checkpoint
from conftest import HERE
from conftest import train as run
from model import GPT, GPTConfig

FILES = ("ckpt.pt", "tokenizer.tiktoken", "metrics.jsonl", "eval.json")


@pytest.mark.parametrize("argv,needle", [(["--no_such_flag", "1"], "valid flags"), (["--preset", "huge"], "tiny"),
                                         (["--stage", "nope"], "rl1_nolang"), (["--lr", "fast"], "invalid float"),
                                         (["--rl_mix", "arith:9"], "difficulty 1-3"), (["--fp8", "int4"], "blockwise"),
                                         (["--loss_agg", "mean"], "token-mean")])
def test_bad_flags_exit_2(argv, needle):
    r = run(argv)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


# ----------------------------------------------------------------------------------------------
# the pipeline at --preset tiny

def test_every_stage_writes_its_files(tiny_run):
    for name in train.STAGES:
        for f in FILES:
            assert os.path.getsize(os.path.join(tiny_run, name, f)) > 0, (name, f)
        ev = json.load(open(os.path.join(tiny_run, name, "eval.json")))
        for k in ("accuracy", "format_rate", "lang_consistency", "lang_consistency_zh", "lang_consistency_en",
                  "mean_response_tokens", "n", "accuracy_general", "needless_chain_rate", "wall_s", "settings"):
            assert k in ev, (name, k)
        assert ev["n"] == 32 and ev["n_general"] == 16
        rows = [json.loads(line) for line in open(os.path.join(tiny_run, name, "metrics.jsonl"))]
        assert all("step" in r for r in rows)
        if train.STAGES[name].loop == "grpo":
            assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
            for k in ("reward", "accuracy", "format_rate", "response_tokens", "kl"):
                assert k in rows[-1], (name, k)
    base = json.load(open(os.path.join(tiny_run, "pretrain", "eval.json")))
    assert {"accuracy_forced_bare", "zh_accuracy_chain_zh", "zh_accuracy_chain_en", "heldout_loss"} <= set(base)
    rs = json.load(open(os.path.join(tiny_run, "sft2", "eval.json")))["rejection"]
    assert rs["drawn"] == 16 * 2 and rs["kept"] + sum(rs["dropped"].values()) == rs["drawn"] and rs["general"] == 16


def test_report_has_a_row_per_stage(tiny_run):
    text = open(os.path.join(tiny_run, "report.md")).read()
    for _, label in evaluate.REPORT_ROWS:
        assert f"| {label} |" in text
    assert text.count("Curves over GRPO steps") == 5  # zero, rl1, rl1_nolang, rl2, student_zero
    assert "Distillation against RL on the student" in text and "The student against its teacher" in text
    assert "rejection sampling" in text


@pytest.mark.parametrize("stage,extra", [("rl2", ["--general"]), ("rl1_nolang", []),
                                         ("sft1", ["--prompt", "Compute 12 * 3."]), ("distill", []),
                                         ("student_zero", ["--general"])])
def test_sample_shows_any_stage(tiny_run, stage, extra):
    r = subprocess.run([sys.executable, os.path.join(HERE, "sample.py"), "--stage", stage, "--out_dir", tiny_run,
                        "-n", "2", *extra], capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("reasoning:") == (1 if "--prompt" in extra else 2)
    assert ("gold:" in r.stdout) == ("--prompt" not in extra)
    r = subprocess.run([sys.executable, os.path.join(HERE, "sample.py"), "--stage", "rl2", "--out_dir", "/nowhere"],
                       capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 2 and "python train.py --stage rl2" in r.stderr


# ----------------------------------------------------------------------------------------------
# distillation (R1 §2.4) and its control (§4.1)

def test_students_are_the_small_dense_model_not_the_teacher(tiny_run):
    teacher = load_checkpoint(os.path.join(tiny_run, "rl2", "ckpt.pt"))
    want = config.student_shape(GPTConfig(**teacher["configs"]["model"]))
    assert (want.n_layer, want.n_embd, want.mlp_hidden, want.n_routed_experts) == (1, 48, 144, 0)  # tiny: 2 x 64, MoE
    for stage in ("student_base", "distill", "student_zero"):
        ckpt = load_checkpoint(os.path.join(tiny_run, stage, "ckpt.pt"))
        assert GPTConfig(**ckpt["configs"]["model"]) == want, stage
        assert sum(v.numel() for v in ckpt["model"].values()) < sum(v.numel() for v in teacher["model"].values())
        assert not any("experts" in k or "router" in k for k in ckpt["model"]), stage
        model = GPT(want)
        model.load_state_dict(ckpt["model"])  # every tensor of the student's shape
    narrow = config.student_shape(GPTConfig(**teacher["configs"]["model"]), width=32)  # --student_width 32
    assert (narrow.n_layer, narrow.n_embd, narrow.mlp_hidden, narrow.n_routed_experts) == (1, 32, 96, 0)


class Oracle:
    """A stand-in teacher whose answers are known. Its calls cycle: the right answer, a wrong one,
    the right answer with a computation in the chain (needless on a general task), a wrong one;
    every chain is written in the prompt's language."""
    def __init__(self, enc, problems):
        self.enc, self.by_prompt, self.calls = enc, {p.prompt: p for p in problems}, 0

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def flops_per_token(self):
        return 10.0

    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, generator=None, rows=None):
        out = []
        for ids in prompts:
            p, turn = self.by_prompt[self.enc.decode(ids)], self.calls % 4
            self.calls += 1
            gold = p.answer if turn in (0, 2) else p.answer + "1"
            think = ("ok" if p.lang == "en" else "好的") + (" 7 * 8 = 56" if turn == 2 else "")
            out.append(self.enc.encode_ordinary(f" <think> {think} </think> <answer> {gold} </answer>") + [eot])
        return out


def test_distillation_set_holds_only_samples_that_pass_the_checks(tiny_run, tmp_path, monkeypatch):
    """distill's data, with the teacher replaced by an oracle whose answers are known: every kept
    sample is right, well formed, in one language and without a needless chain; reasoning and
    general prompts are both asked; nothing the world wrote is added (sft2 adds that, distill not)."""
    args = train.parse_args(["--preset", "tiny", "--out_dir", str(tmp_path)])
    _, cfgs = train.build_configs(args, "cpu")
    dc = cfgs["data"]
    asked = data.rl_problems(dc, 16, seed=dc.seed + 19) + data.general_problems(dc, 8, seed=dc.seed + 19)
    enc = load_checkpoint(os.path.join(tiny_run, "rl2", "ckpt.pt"))["enc"]
    oracle = Oracle(enc, asked)
    monkeypatch.setattr(train, "load_checkpoint", lambda path: {"configs": {"model": {}}, "model": None})
    monkeypatch.setattr(train, "build_model", lambda *a: oracle)
    monkeypatch.setattr(train, "GPTConfig", lambda **kw: None)
    os.makedirs(tmp_path / "rl2")
    json.dump({"settings": "x"}, open(tmp_path / "rl2" / "eval.json", "w"))
    run_dir = tmp_path / "distill"
    os.makedirs(run_dir)
    pairs, stats = train.rejection_set(train.STAGES["distill"], cfgs, enc, "cpu", "off", args, contextlib.nullcontext(),
                                       type("R", (), {"dir": str(run_dir)})())
    assert stats["drawn"] == 24 * 2 and stats["prompts"] == 24 and stats["general"] == 0
    assert stats["teacher_flops"] == 10.0 * stats["tokens"]
    assert 0 < stats["kept"] == len(pairs) < stats["drawn"]
    n_general = sum(p.kind in data.GENERAL_KINDS for p in asked)
    assert n_general == 8 and stats["dropped"] == {"cut off": 0, "format": 0, "wrong": 24, "mixed language": 0,
                                                   "needless chain": 4, "duplicate": 0}
    kept = {prompt for prompt, _ in pairs}
    assert any(p.prompt in kept for p in asked[:16]) and any(p.prompt in kept for p in asked[16:])
    problems = [oracle.by_prompt[prompt] for prompt, _ in pairs]
    s = evaluate.score([r for _, r in pairs], problems, terms=("accuracy", "format"))
    for i in range(len(pairs)):
        assert grpo.rejection_reason(True, {k: s[k][i] for k in ("format", "accuracy", "lang", "needless")}) is None
    rows = [json.loads(line) for line in open(run_dir / "rejection.jsonl")]
    assert [(r["prompt"], r["response"]) for r in rows[1:]] == pairs  # what a rerun reuses


def test_tiny_distill_counts_its_teachers_compute(tiny_run):
    ev = json.load(open(os.path.join(tiny_run, "distill", "eval.json")))
    rs = ev["rejection"]
    assert rs["drawn"] == (16 + 8) * 2 and rs["kept"] + sum(rs["dropped"].values()) == rs["drawn"]
    assert rs["teacher_flops"] > 0 and ev["flops"] >= rs["teacher_flops"] and ev["teacher_flops"] == rs["teacher_flops"]


def test_stage_compute_counts_6n_trained_2n_sampled_and_scored_plus_the_teacher():
    rows = [{"step": 1, "tokens_trained": 10, "tokens_sampled": 4}, {"step": 2, "tokens_scored": 5, "loss": 1.0},
            {"step": 3, "tokens_trained": 1}]
    got = evaluate.stage_compute(2.0, rows, teacher_flops=7.0)  # 2 N per position with N = 1
    assert got == {"tokens_trained": 11, "tokens_sampled": 4, "tokens_scored": 5, "teacher_flops": 7.0,
                   "flops": 2.0 * (3 * 11 + 4 + 5) + 7.0}


def test_matched_compute_reads_the_rl_curve_up_to_distills_budget():
    """The FLOPs spent by each evaluation, from the stage's total and its rows' positions."""
    rows = [{"step": 1, "tokens_sampled": 100, "tokens_trained": 0},
            {"step": 2, "tokens_sampled": 100, "heldout_accuracy": 0.25},
            {"step": 3, "tokens_trained": 100, "heldout_accuracy": 0.5},
            {"step": 4, "tokens_scored": 100, "heldout_accuracy": 0.75}]
    z = evaluate.stage_compute(10.0, rows)  # 10 FLOPs per position sampled or scored, 30 per position trained
    line = evaluate.matched_compute(z, rows, budget=5000.0)[-1]
    assert "step 2 (0.00 TFLOP): 25.0%" in line and "step 3" in line and "step 4" not in line
    line = evaluate.matched_compute(z, rows, budget=4999.0)[-1]  # step 3 spent 1000 + 1000 + 3 x 1000
    assert "step 2" in line and "step 3" not in line
    assert "none" in evaluate.matched_compute(z, rows, budget=1999.0)[-1]


def test_report_refuses_mixed_heldout_sets(tiny_run, tmp_path):
    out = str(tmp_path / "mixed")
    shutil.copytree(tiny_run, out)
    path = os.path.join(out, "zero", "eval.json")
    ev = json.load(open(path))
    ev["heldout_set"] += " other"
    json.dump(ev, open(path, "w"))
    with pytest.raises(ValueError, match="different held-out sets"):
        evaluate.write_report(out)
    for where, needle in ((out, "different held-out sets"), (str(tmp_path / "none"), "python train.py --stage")):
        r = subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), "--out_dir", where],
                           capture_output=True, text=True, cwd=HERE)  # the CLI: one line, status 2
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_report_shows_reflection(tiny_run, tmp_path):
    """The report's reflection column, and a line per stage whose responses check a step."""
    out = str(tmp_path / "refl")
    shutil.copytree(tiny_run, out)
    path = os.path.join(out, "zero", "eval.json")
    ev = json.load(open(path))
    assert "accuracy_checks_banned" not in ev  # the tiny zero never checks: the probe does not run
    ev.update(reflection_rate=0.25, n_with_reflection=50, accuracy_with_reflection=0.5, accuracy_without_reflection=0.1,
              accuracy_checks_banned=0.125, accuracy_with_reflection_checks_banned=0.375,
              **{f"checks_{k}": i for i, k in enumerate(reflect.OUTCOMES)})
    json.dump(ev, open(path, "w"))
    evaluate.write_report(out)
    report = open(os.path.join(out, "report.md")).read()
    assert "| reflection |" in report and "| 25.0% |" in report
    assert ("zero (R1-Zero): 25.0% of held-out responses check a step; right 50.0% with a check, 10.0% without. "
            "The checks: 0 fixed, 1 confirmed, 2 missed, 3 broke, 4 looped, 5 unmatched. With every check forbidden "
            "at decode: 12.5% right (on the problems it checks: 37.5%, against 50.0% with the check).") in report
    assert report.count("of held-out responses check a step") == 1  # the other stages have no check
    assert "sampled at temperature 1" not in report  # a world without checks: no sampled comparison
    base = os.path.join(out, "pretrain", "eval.json")  # a base that checks only when sampled
    json.dump(dict(json.load(open(base)), reflection_rate_sampled=0.08, n_mixed_sampled=12,
                   accuracy_with_reflection_sampled=0.25, accuracy_without_reflection_sampled=0.125,
                   accuracy_gain_sampled_se=0.05, n_mixed_sampled_arith1=0, accuracy_with_reflection_sampled_arith1=None,
                   accuracy_without_reflection_sampled_arith1=None, n_mixed_sampled_poly2=12,
                   accuracy_with_reflection_sampled_poly2=0.25, accuracy_without_reflection_sampled_poly2=0.125),
              open(base, "w"))
    evaluate.write_report(out)
    report = open(os.path.join(out, "report.md")).read()
    assert ("base, sampled at temperature 1: 8.0% of samples check a step; on the 12 problems where some of its "
            "chains check and some do not, right 25.0% with a check, 12.5% without (the gap's standard error: "
            "5.0 points); by kind, with / without (problems): poly2 25.0% / 12.5% (12).") in report
    assert report.count("of held-out responses check a step") == 1


def test_finished_stage_is_skipped_and_force_redoes_it(tiny_run, tmp_path):
    out = str(tmp_path / "again")
    shutil.copytree(tiny_run, out)
    before = os.path.getmtime(os.path.join(out, "sft1", "eval.json"))
    r = run(["--stage", "rl1", "--preset", "tiny", "--out_dir", out, "--quiet"])
    assert r.returncode == 0 and "stage sft1: already done" in r.stdout and "stage rl1: already done" in r.stdout
    assert os.path.getmtime(os.path.join(out, "sft1", "eval.json")) == before
    r = run(["--stage", "sft1", "--preset", "tiny", "--out_dir", out, "--quiet", "--force"])
    assert r.returncode == 0 and "=== stage sft1" in r.stdout and "stage pretrain: already done" in r.stdout
    assert os.path.getmtime(os.path.join(out, "sft1", "eval.json")) > before
    # other settings: the stage and what depends on it are redone, what it depends on is not
    r = run(["--stage", "sft1", "--preset", "tiny", "--out_dir", out, "--quiet", "--sft_lr", "1e-4"])
    assert r.returncode == 0 and "=== stage sft1" in r.stdout and "=== stage pretrain" not in r.stdout


def test_sft2_starts_from_the_base_not_rl1(tiny_run):
    args = train.parse_args(["--preset", "tiny", "--out_dir", tiny_run])
    _, cfgs = train.build_configs(args, "cpu")
    model, enc = train.start_from(train.STAGES["sft2"], args, cfgs, "cpu", "off")
    state = model.state_dict()
    base = load_checkpoint(os.path.join(tiny_run, "pretrain", "ckpt.pt"))["model"]
    rl1 = load_checkpoint(os.path.join(tiny_run, "rl1", "ckpt.pt"))["model"]
    assert all(torch.equal(state[k], base[k]) for k in base)
    assert not all(torch.equal(state[k], rl1[k]) for k in rl1)


def test_stage_rows_override_the_preset_and_flags_override_rows():
    args = train.parse_args(["--preset", "tiny"])
    cfg = lambda stage: train.build_configs(args, "cpu", train.STAGES[stage].overrides)[1]
    assert cfg("sft1")["sft"].sft_lr == 1e-3 and cfg("sft2")["sft"].sft_lr == 5e-4  # GENTLE
    assert cfg("zero")["rl"].scale_std and not cfg("rl1")["rl"].scale_std  # DENSE
    assert cfg("rl1")["rl"].rl_lr == 1e-4 and cfg("rl2")["rl"].rl_lr == 5e-5 and not cfg("rl2")["rl"].scale_std  # POLISH
    args = train.parse_args(["--preset", "tiny", "--sft_lr", "2e-4"])
    assert cfg("sft2")["sft"].sft_lr == 2e-4


# ----------------------------------------------------------------------------------------------
# checkpoints that survive SIGKILL, and an exact resume

@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A tiny pretrain killed with SIGKILL after its first checkpoint, then resumed."""
    out = str(tmp_path_factory.mktemp("run"))
    ckpt = os.path.join(out, "pretrain", "ckpt.pt")
    args = ["--stage", "pretrain", "--preset", "tiny", "--out_dir", out, "--quiet", "--ckpt_every", "10"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train.py"), *args], cwd=HERE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.exists(ckpt) and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = torch.load(ckpt, map_location="cpu", weights_only=True)
    r = run(args + ["--resume"])
    assert r.returncode == 0, r.stderr[-2000:]
    return out, killed, r.stdout


def test_killed_run_resumes_exactly(killed_and_resumed, tiny_run):
    out, killed, stdout = killed_and_resumed
    assert 0 < killed["step"] < 60
    assert f"resuming from step {killed['step']}" in stdout
    final = torch.load(os.path.join(out, "pretrain", "ckpt.pt"), map_location="cpu", weights_only=True)
    assert final["step"] == 60
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "pretrain", "metrics.jsonl"))]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # no step logged twice
    # the same weights as the pipeline's pretrain, which ran the same settings without a kill
    # (--ckpt_every changes no result, only when files are written)
    uninterrupted = load_checkpoint(os.path.join(tiny_run, "pretrain", "ckpt.pt"))["model"]
    assert all(torch.equal(final["model"][k], uninterrupted[k]) for k in uninterrupted)


def test_resume_refuses_other_settings(killed_and_resumed):
    out, _, _ = killed_and_resumed
    r = run(["--stage", "pretrain", "--preset", "tiny", "--out_dir", out, "--quiet", "--resume", "--lr", "1e-3"])
    assert r.returncode != 0 and "other settings" in r.stderr


def test_tiny_pretrain_outputs(killed_and_resumed):
    out, _, _ = killed_and_resumed
    d = os.path.join(out, "pretrain")
    ev = json.load(open(os.path.join(d, "eval.json")))
    rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    assert rows[-1]["loss"] < ev["first_loss"] - 1.0  # it learned something
    enc = tokenizer.load_tokenizer(os.path.join(d, "tokenizer.tiktoken"))
    assert enc.decode(enc.encode_ordinary("Compute 12 * 3.")) == "Compute 12 * 3."

def copy_pretrain(tiny_run, out):
    """A fresh out_dir holding tiny_run's finished pretrain (so a stage after it starts at once)."""
    shutil.copytree(os.path.join(tiny_run, "pretrain"), os.path.join(out, "pretrain"))
    return str(out)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(tiny_run, tmp_path):
    """N GRPO steps, SIGTERM, --resume: the same weights, bitwise, as the pipeline's zero stage,
    which ran the same settings in one go (the sampler's generator, the prompts, the MoE biases
    and the optimizer all come back)."""
    out = copy_pretrain(tiny_run, tmp_path)
    args = ["--stage", "zero", "--preset", "tiny", "--out_dir", out, "--quiet"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train.py"), *args], cwd=HERE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics, t0 = os.path.join(out, "zero", "metrics.jsonl"), time.time()
    while (not os.path.exists(metrics) or not open(metrics).read()) and time.time() - t0 < 300:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 128 + signal.SIGTERM and "--resume" in err, err[-2000:]
    stopped = torch.load(os.path.join(out, "zero", "ckpt.pt"), map_location="cpu", weights_only=True)
    assert 1 <= stopped["step"] < 6
    r = run(args + ["--resume"])
    assert r.returncode == 0 and f"resuming from step {stopped['step']}" in r.stdout, r.stderr[-2000:]
    final = load_checkpoint(os.path.join(out, "zero", "ckpt.pt"))["model"]
    uninterrupted = load_checkpoint(os.path.join(tiny_run, "zero", "ckpt.pt"))["model"]
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)


def test_two_processes_run_a_stage_on_your_own_data(tiny_run, tmp_path):
    """torchrun, 2 CPU processes over gloo: the zero stage end to end on examples/problems.jsonl."""
    out = copy_pretrain(tiny_run, tmp_path)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py",
                        "--stage", "zero", "--preset", "tiny", "--out_dir", out, "--quiet", "--rl_steps", "2",
                        "--data", "examples/problems.jsonl", "--max_new_tokens", "20", "--eval_new_tokens", "20"],
                       capture_output=True, text=True, cwd=HERE, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "data parallel: 2 processes (gloo)" in r.stdout
    rows = [json.loads(line) for line in open(os.path.join(out, "zero", "metrics.jsonl"))]
    assert [row["step"] for row in rows] == [1, 2]  # rank 0 alone writes
    ev = json.load(open(os.path.join(out, "zero", "eval.json")))
    assert ev["n"] == 8 and "file=examples/problems.jsonl" in ev["heldout_set"]  # a fifth of 40 prompts


@pytest.mark.parametrize("line,reason", [('{"prompt": "What is 2 + 2?"}', "answer"), ("{not json", "JSON"),
                                         ('{"prompt": "What is 2 + 2?", "answer": "4 +* 5"}', "")])
def test_a_bad_data_file_exits_2_naming_the_line(line, reason, tmp_path):
    path = tmp_path / "mine.jsonl"
    good = [json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(6)]
    path.write_text("\n".join(good[:2] + [line] + good[2:]) + "\n")
    r = run(["--stage", "zero", "--preset", "tiny", "--out_dir", str(tmp_path / "out"), "--data", str(path)])
    assert r.returncode == 2 and f"{path}:3:" in r.stderr and reason in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "out")


# ----------------------------------------------------------------------------------------------
# bench.py

def test_bench_moe_runs_small():
    """bench.py's moe group at a small shape: every timer runs and gives a finite ratio (no
    timing is asserted; speed is bench.py's business)."""
    r = bench._ratios((2, 16, 32, 4, 2, 1, 16), repeats=1, with_loop=True, warmup=0)
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("dense", "loop", "floor", "moe_ms"))


def test_bench_flops_per_token_match_torchs_flop_counter():
    """GPT.flops_per_token (what every *_peak_frac divides by) against torch's own count of the
    matmul and attention FLOPs of a forward pass over T tokens: 2 N + 4 L C T per token."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    model = GPT(GPTConfig(vocab_size=300, block_size=64, n_layer=2, n_head=4, n_kv_head=4, n_embd=64,
                          mlp_hidden=128))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):  # attention as matmuls torch can count
        model(torch.zeros(2, 64, dtype=torch.long))
    # torch counts full (non-causal) attention, as flops_per_token does with ctx = T
    assert counter.get_total_flops() / (2 * 64) == pytest.approx(model.flops_per_token(64), rel=0.01)
