"""
config.py: the settings of every stage, their presets, their flags and their valid ranges.

A library module for train.py (which documents the command line). Five dataclasses hold every
setting, each field with its default and a comment: GPTConfig (model.py), DataConfig (data.py),
TrainConfig and SFTConfig (here) and RLConfig (grpo.py). Every field is a flag of train.py; a
preset overrides some defaults, a stage's row in train.STAGES overrides a few more, and an
explicit flag wins over both.

Every setting is checked before any work starts (`check`): a value outside its range, or two
values that cannot go together (a prompt plus the generation budget longer than the context, a
batch that does not split over the processes), exits with status 2 and one line that names the
valid range. RANGES has an entry for every field; test_all.py walks them.
"""
import argparse
import contextlib
import ctypes
import dataclasses
import math
import sys
from dataclasses import dataclass

import torch

import data
import dist
import fp8
import grpo
import reflect
from grpo import RLConfig
from model import GPTConfig


@dataclass
class TrainConfig:
    batch_size: int = 32          # sequences per micro-batch (pretrain)
    grad_accum: int = 1           # micro-batches per optimizer step
    max_iters: int = 1500         # pretrain optimizer steps
    lr: float = 3e-3              # pretrain peak learning rate (small models take large ones)
    min_lr_frac: float = 0.1      # cosine decays to lr * min_lr_frac
    warmup_iters: int = 100       # linear warmup steps
    weight_decay: float = 0.1     # AdamW decay on matrices only (every stage)
    beta2: float = 0.95           # AdamW's second-moment decay (0.999 is too slow for short runs)
    grad_clip: float = 1.0        # global grad-norm clip of every stage (0 = off)
    max_bad_steps: int = 5        # non-finite steps in a row (each skipped) that stop the run
    eval_every: int = 250         # held-out loss every this many pretrain steps
    ckpt_every: int = 250         # checkpoint every this many supervised steps
    log_every: int = 10           # metrics.jsonl line every this many supervised steps
    eval_new_tokens: int = 128    # generation budget when evaluating on held-out problems
    train_seed: int = 1337        # init and batch order (the data seed is --seed)
    student_width: int = 0        # the student's n_embd (student_base); 0: 3/4 of the run's (student_shape)
    compile: bool = False         # torch.compile the pretrain step (loops.compiled; the cpu preset: on)


@dataclass
class SFTConfig:
    sft_lr: float = 1e-3          # peak learning rate of sft1 (a third of pretraining's; sft2: GENTLE)
    sft_batch_size: int = 32      # examples per step
    sft_warmup: int = 10          # linear warmup steps
    sft1_epochs: int = 4          # passes over the cold-start set (small, so several)
    n_cold_start: int = 400       # cold-start examples (R1 §2.3.1: thousands; here hundreds)
    sft2_epochs: int = 2          # passes over sft2's set (R1 §2.3.3: "two epochs")
    rs_prompts: int = 2400        # rejection sampling: prompts (more than rl1 sees)
    rs_samples: int = 8           # completions sampled per prompt (from one rl1: 1200 x 4 kept 372 and sft2 / rl2
                                  # reached 21.5% / 22.0% held-out; 2400 x 8 kept 830 and 28.0% / 29.0%)
    rs_temperature: float = 1.0   # their sampling temperature
    n_general_sft: int = 8000     # general examples in sft2 (R1 §2.3.3; more than the reasoning samples, unlike
                                  # R1's 200k to 600k: measured 56% general accuracy with 2,400, 95% with 6,000)
    distill_prompts: int = 2400   # distill: reasoning prompts the teacher (rl2) answers (R1 §2.4)
    distill_general: int = 600    # distill: general prompts the teacher answers
    distill_samples: int = 8      # distill: completions sampled per prompt (rs_temperature), filtered as sft2's
    distill_epochs: int = 2       # distill: passes over the kept samples


CONFIGS = {"model": GPTConfig, "data": data.DataConfig, "train": TrainConfig, "sft": SFTConfig, "rl": RLConfig}

# Presets: overrides of the dataclass defaults. `cpu` is the default without a GPU.
PRESETS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=192, block_size=192,
                 n_routed_experts=4, n_experts_per_tok=2, moe_hidden=64, n_docs=3000, bpe_docs=400,
                 vocab_size=512, n_heldout=32, n_heldout_general=16, batch_size=8, max_iters=60,
                 warmup_iters=10, eval_every=30, ckpt_every=20, log_every=5, eval_new_tokens=48,
                 rl_steps=6, rl1_steps=4, rl2_steps=4, prompts_per_step=4, group_size=4, max_new_tokens=48,
                 n_cold_start=32, rs_prompts=16, rs_samples=2, n_general_sft=16, sft_batch_size=8, sft1_epochs=1,
                 sft2_epochs=1, distill_prompts=16, distill_general=8, distill_samples=2, distill_epochs=1,
                 student_rl_steps=4),
    # the world before checks: the README's first pipeline, distillation and benchmark figures
    "nocheck": dict(n_routed_experts=8, max_iters=550, warmup_iters=50, eval_every=110, ckpt_every=110, compile=True),
    "gpu": dict(n_layer=8, n_embd=512, n_head=8, n_kv_head=4, mlp_hidden=1536, block_size=512,
                n_routed_experts=16, moe_hidden=256, n_docs=400_000, batch_size=64, max_iters=5000,
                lr=1e-3, prompts_per_step=64, group_size=16, micro_batch=64, rs_prompts=8000),
}
# cpu, the default without a GPU: the world whose chains check their sums (reflect.py), where
# R1-Zero's reflection emerges (README, Reflection): twice the pretrain, room for the checks,
# Dr. GRPO's loss (no length bias: a longer response is not worth less per token), rl1 and rl2
# as long as zero (from one checked cold start, rl1 at 60 steps: 85.5% held-out, at 120: 95.0%),
# and student_zero at no less compute than distill spends here (240 steps: 5.75 TFLOP against 8.54)
PRESETS["cpu"] = dict(PRESETS["nocheck"], max_iters=1100, check_mode="fix", p_check=1.0, p_template_check=0.2,
                      p_check_slip=0.3, max_new_tokens=200, eval_new_tokens=200, loss_agg="seq-mean-token-sum-norm",
                      rl1_steps=120, rl2_steps=120, student_rl_steps=400)
UNSET = {("model", "vocab_size")}  # set by the tokenizer, not a flag (--vocab_size is the BPE's target)


# ----------------------------------------------------------------------------------------------
# Flags

class Parser(argparse.ArgumentParser):
    """argparse, but bad input exits 2 with one line that names the valid choices."""

    def error(self, message):
        if "unrecognized arguments" in message:
            flags = sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))
            message += " (valid flags: " + " ".join(flags) + ")"
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_bool(s):
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected one of true/false/1/0/yes/no, got {s!r}")


def add_config_flags(p):
    """One --flag per dataclass field (default None: 'not given')."""
    seen = set()
    for group, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            if (group, f.name) in UNSET:
                continue
            assert f.name not in seen, f"config field {f.name} defined twice"
            seen.add(f.name)
            kind = {bool: parse_bool}.get(type(f.default), type(f.default))
            p.add_argument(f"--{f.name}", type=kind, default=None, help=f"[{group}] default {f.default}")


def build_configs(args, device, overrides=(), student=False):
    """Dataclass defaults <- preset <- a stage's overrides <- explicit flags; student=True then
    shrinks the model to the student preset."""
    preset = args.preset or ("gpu" if device == "cuda" else "cpu")
    layers = [PRESETS[preset], dict(overrides)]
    cfgs = {}
    for group, cls in CONFIGS.items():
        vals = {f.name: f.default for f in dataclasses.fields(cls)}
        for layer in layers:
            vals.update({k: v for k, v in layer.items() if k in vals})
        vals.update({k: getattr(args, k) for k in vals if getattr(args, k, None) is not None
                     and (group, k) not in UNSET})
        cfgs[group] = cls(**vals)
    if student:
        cfgs["model"] = student_shape(cfgs["model"], cfgs["train"].student_width)
    return preset, cfgs


def student_shape(m, width=0):
    """The `student` preset, the small dense model of distillation (R1 §2.4 distils into dense
    Qwen and Llama models): the run's model at half the layers and three quarters of the width
    (or `width`), every block a dense SwiGLU with its hidden width scaled alike. At the cpu
    preset: 2 x d=96, 0.30M parameters against the teacher's 1.78M (0.89M active). README's
    Results hold the sweep over widths: at d=64 nothing is learned, at d=128 the student's own
    RL beats distillation and the teacher."""
    width = width or m.n_embd * 3 // 4
    return dataclasses.replace(m, n_layer=max(1, m.n_layer // 2), n_routed_experts=0, n_embd=width,
                               mlp_hidden=m.mlp_hidden * width // m.n_embd)


# ----------------------------------------------------------------------------------------------
# The device, the compute dtype and the FP8 recipe: chosen here, once, and printed

def pick_device(choice):
    """Device, dtype and the autocast context of every loop, chosen in one place, with the
    reason printed."""
    if choice == "auto":
        if torch.cuda.is_available():
            choice, why = "cuda", "CUDA is available"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            choice, why = "mps", "Apple MPS is available"
        else:
            choice, why = "cpu", "no GPU found"
    else:
        why = "asked for with --device"
    if choice == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available (valid here: cpu)", file=sys.stderr)
        sys.exit(2)
    bf16 = choice == "cuda" and torch.cuda.is_bf16_supported()
    kept = choice == "cpu" and keep_freed_memory()
    print(f"device: {choice} ({why}); compute dtype: {'bfloat16 (autocast)' if bf16 else 'float32'}"
          + ("; malloc keeps freed memory" if kept else ""))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    return choice, autocast


def keep_freed_memory():
    """A CPU training step allocates the same large tensors every time (the cpu preset's logits
    and their gradient: 8192 x 790 floats, 26 MB). glibc's malloc returns large freed blocks to
    the OS, so each step page-faults them back in (6,200 faults a step; 1,800 after this). Keep
    freed memory in the process, as the jemalloc or tcmalloc of PyTorch's CPU tuning guide do:
    blocks up to 32 MB come from the heap, and the heap is trimmed only past 1 GB free. 2-3% of
    a compiled pretrain step on 2 cores. glibc (Linux) only; elsewhere nothing changes. Returns
    whether it applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


def resolve_fp8(choice, device):
    """--fp8: 'auto' is blockwise on a Hopper GPU that can run it, off elsewhere. An explicit
    recipe the accelerator cannot run exits 2; on the CPU every recipe runs its CPU path."""
    if choice == "off" or (choice == "auto" and device == "cpu"):
        return "off"
    if choice == "auto":
        return fp8.default_recipe(device)
    ok, why = fp8.fp8_supported(device, choice)
    if not ok:
        print(f"error: --fp8 {choice} cannot run on {device}: {why} (valid here: off)", file=sys.stderr)
        sys.exit(2)
    if device == "cpu":
        print(f"fp8: {choice} on cpu runs the CPU/emulated path (for correctness, not speed)")
    return choice


# ----------------------------------------------------------------------------------------------
# Valid ranges: one entry per field. (lo, hi, open ends) for numbers, a tuple of strings for a
# choice, a function raising ValueError for anything else; ANY for what has no bad value.

@dataclass(frozen=True)
class Range:
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v):
        return ((self.lo < v) if self.lo_open else (self.lo <= v)) and ((v < self.hi) if self.hi_open else (v <= self.hi))

    def __str__(self):
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


COUNT, SOME, POSITIVE, NONNEG, FRACTION = Range(1), Range(0), Range(0, lo_open=True), Range(0.0), Range(0, 1)
ANY = Range()
RANGES = {
    # model
    "block_size": Range(16), "n_layer": COUNT, "n_head": COUNT, "n_kv_head": COUNT, "n_embd": COUNT,
    "mlp_hidden": COUNT, "rope_theta": POSITIVE, "norm_eps": POSITIVE, "init_std": POSITIVE,
    "n_routed_experts": SOME, "n_experts_per_tok": COUNT, "n_shared_experts": SOME, "moe_hidden": COUNT,
    "n_dense_layers": SOME, "n_expert_groups": COUNT, "n_limited_groups": COUNT, "route_scale": POSITIVE,
    "score_func": ("sigmoid", "softmax"), "bias_update_gamma": NONNEG, "seq_aux_alpha": NONNEG,
    "moe_dispatch": ("grouped", "loop"),
    # data
    "n_docs": COUNT, "p_zh": FRACTION, "p_chain": FRACTION, "p_bare": FRACTION, "p_slip": FRACTION,
    "p_switch": FRACTION, "p_template_tagged": FRACTION, "p_template_chain": FRACTION,
    "p_template_en_on_zh": FRACTION, "p_general": FRACTION, "check_mode": reflect.CHECK_MODES, "p_check": FRACTION,
    "p_template_check": FRACTION, "p_check_slip": FRACTION, "corpus_mix": data.parse_mix, "rl_mix": data.parse_mix,
    "vocab_size": Range(258), "bpe_docs": COUNT, "rl_p_zh": FRACTION, "n_heldout": COUNT,
    "n_heldout_general": Range(len(data.GENERAL_KINDS)), "seed": ANY,
    # train
    "batch_size": COUNT, "grad_accum": COUNT, "max_iters": COUNT, "lr": POSITIVE, "min_lr_frac": FRACTION,
    "warmup_iters": SOME, "weight_decay": NONNEG, "beta2": Range(0, 1, hi_open=True), "grad_clip": NONNEG,
    "max_bad_steps": COUNT, "eval_every": COUNT, "ckpt_every": COUNT, "log_every": COUNT,
    "eval_new_tokens": COUNT, "train_seed": ANY, "student_width": SOME, "compile": ANY,
    # sft
    "sft_lr": POSITIVE, "sft_batch_size": COUNT, "sft_warmup": SOME, "sft1_epochs": COUNT, "n_cold_start": COUNT,
    "sft2_epochs": COUNT, "rs_prompts": COUNT, "rs_samples": COUNT, "rs_temperature": POSITIVE,
    "n_general_sft": SOME, "distill_prompts": COUNT, "distill_general": SOME, "distill_samples": COUNT,
    "distill_epochs": COUNT,
    # rl
    "rl_steps": COUNT, "rl1_steps": COUNT, "rl2_steps": COUNT, "student_rl_steps": COUNT,
    "prompts_per_step": COUNT, "group_size": Range(2),
    "max_new_tokens": COUNT, "temperature": POSITIVE, "rl_lr": POSITIVE, "rl_warmup": SOME, "mu": COUNT,
    "n_minibatches": COUNT, "micro_batch": COUNT, "clip_eps": Range(0, 1, lo_open=True, hi_open=True),
    "clip_eps_high": NONNEG, "beta": NONNEG, "loss_agg": grpo.LOSS_AGGS, "scale_std": ANY, "mask_truncated": ANY,
    "dynamic_sampling": ANY, "ref_sync_every": SOME, "lang_weight": NONNEG, "general_frac": Range(0, 1, hi_open=True),
    "needless_penalty": NONNEG, "rl_eval_every": COUNT, "rl_ckpt_every": COUNT, "rl_seed": ANY,
}


def relations(cfgs):
    """(holds, message) for the settings that must go together."""
    m, d, t, s, r = (cfgs[g] for g in CONFIGS)
    N, E = dist.world(), m.n_routed_experts
    return [
        (t.student_width % (2 * m.n_head) == 0,
         f"--student_width {t.student_width} must be an even multiple of --n_head {m.n_head} (0: 3/4 of --n_embd)"),
        (m.n_embd % m.n_head == 0 and (m.n_embd // m.n_head) % 2 == 0,
         f"--n_embd {m.n_embd} must be an even multiple of --n_head {m.n_head} (RoPE rotates pairs)"),
        (m.n_head % m.n_kv_head == 0, f"--n_kv_head {m.n_kv_head} must divide --n_head {m.n_head}"),
        (E == 0 or m.n_experts_per_tok <= E,
         f"--n_experts_per_tok {m.n_experts_per_tok} must be at most --n_routed_experts {E}"),
        (E == 0 or E % m.n_expert_groups == 0, f"--n_expert_groups {m.n_expert_groups} must divide {E} experts"),
        (m.n_limited_groups <= m.n_expert_groups,
         f"--n_limited_groups {m.n_limited_groups} must be at most --n_expert_groups {m.n_expert_groups}"),
        (d.p_chain + d.p_bare + d.p_slip + d.p_switch <= 1,
         "--p_chain + --p_bare + --p_slip + --p_switch must be at most 1 (the rest is the template)"),
        (d.bpe_docs <= d.n_docs, f"--bpe_docs {d.bpe_docs} must be at most --n_docs {d.n_docs}"),
        (t.warmup_iters < t.max_iters, f"--warmup_iters {t.warmup_iters} must be below --max_iters {t.max_iters}"),
        (max(r.max_new_tokens, t.eval_new_tokens) + 16 <= m.block_size,
         f"a prompt + --max_new_tokens {r.max_new_tokens} / --eval_new_tokens {t.eval_new_tokens} must fit "
         f"--block_size {m.block_size}"),
        (r.n_minibatches <= r.prompts_per_step * r.group_size // N,
         f"--n_minibatches {r.n_minibatches} must be at most the rollouts per step and process"),
        (t.batch_size % N == 0, f"--batch_size {t.batch_size} must split evenly over {N} processes"),
        (s.sft_batch_size % N == 0, f"--sft_batch_size {s.sft_batch_size} must split evenly over {N} processes"),
        (r.prompts_per_step % N == 0, f"--prompts_per_step {r.prompts_per_step} must split evenly over {N} processes"),
        (round(r.prompts_per_step * r.general_frac) < r.prompts_per_step,
         f"--general_frac {r.general_frac} leaves no reasoning prompt in a step of {r.prompts_per_step}"),
    ]


def problems(cfgs):
    """Every complaint about these settings: one line each."""
    out = []
    for group, cfg in cfgs.items():
        for f in dataclasses.fields(cfg):
            if (group, f.name) in UNSET:
                continue
            v, spec = getattr(cfg, f.name), RANGES[f.name]
            if isinstance(spec, Range) and v not in spec:
                out.append(f"--{f.name} {v} is out of range: valid is {spec}")
            elif isinstance(spec, tuple) and v not in spec:
                out.append(f"--{f.name} {v!r} is not one of: {', '.join(spec)}")
            elif callable(spec):
                try:
                    spec(v)
                except ValueError as e:
                    out.append(f"--{f.name}: {e}")
    if not out:  # relations assume each value is in its own range
        out = [msg for holds, msg in relations(cfgs) if not holds]
    return out


def check(cfgs, prog="train.py"):
    """Exit 2 with the first complaint, if any."""
    bad = problems(cfgs)
    if bad:
        print(f"{prog}: error: {bad[0]}", file=sys.stderr)
        sys.exit(2)
