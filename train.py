"""
The stages of nanoR1 and their two loops: the toy pretrain, R1-Zero, and the R1 pipeline.

    python train.py --stage zero                    # base pretrain (if needed) + R1-Zero -> out/zero/
    python train.py --stage all                     # pretrain, zero, the R1 pipeline, out/report.md
    python train.py --stage r1                      # sft1 -> rl1 -> sft2 -> rl2 (and their inputs)
    python train.py --stage rl1 --lang_weight 0     # any config field is a flag
    python train.py --stage all --preset tiny       # the smoke-test size (well under two minutes)

The stages (R1 paper §2.2-2.3), one row each of STAGES below:
  pretrain    next-token training on the toy corpus: the base model
  zero        R1-Zero: GRPO from the base with accuracy + format rewards only (§2.2)
  sft1        cold start: SFT of the base on a few hundred clean, single-language chains (§2.3.1)
  rl1         reasoning RL from sft1: accuracy + format + language consistency (§2.3.2)
  rl1_nolang  the ablation: rl1 without the language reward, for the report
  sft2        rejection sampling from rl1 plus general tasks; SFT restarts from the base (§2.3.3)
  rl2         all-scenario RL from sft2: reasoning and general prompts (§2.3.4)
Two loops run them all: a supervised loop (pretrain, sft1, sft2: a pretrain is an SFT with
nothing masked) and a GRPO loop (zero, rl1, rl1_nolang, rl2).

Every stage writes, under --out_dir/<stage>/: ckpt.pt (atomically: temp file + rename, loadable
with weights_only=True), tokenizer.tiktoken (tiktoken's rank-file format), metrics.jsonl (one
JSON object per logged step) and eval.json (held-out results, written last: its presence marks
the stage done). A stage whose input is missing, or was made with other settings, runs it
first; a stage already done with the same settings is skipped (--force redoes it). A killed
run continues from its last checkpoint with --resume and the same flags; batches and samples
are a function of the step, so the result is the same as a run never killed.
"""
import argparse
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch

import data
import evaluate
import fp8
import grpo
import moe
import rewards
from checkpoint import Run, load_checkpoint
from grpo import RLConfig
from model import GPT, GPTConfig


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
    eval_every: int = 250         # held-out loss every this many pretrain steps
    ckpt_every: int = 250         # checkpoint every this many supervised steps
    log_every: int = 10           # metrics.jsonl line every this many supervised steps
    eval_new_tokens: int = 128    # generation budget when evaluating on held-out problems
    train_seed: int = 1337        # init and batch order (the data seed is --seed)


@dataclass
class SFTConfig:
    sft_lr: float = 1e-3          # peak learning rate of sft1 (a third of pretraining's; sft2: GENTLE)
    sft_batch_size: int = 32      # examples per step
    sft_warmup: int = 10          # linear warmup steps
    sft1_epochs: int = 4          # passes over the cold-start set (small, so several)
    n_cold_start: int = 400       # cold-start examples (R1 §2.3.1: thousands; here hundreds)
    sft2_epochs: int = 2          # passes over sft2's set (R1 §2.3.3: "two epochs")
    rs_prompts: int = 1200        # rejection sampling: prompts (more than rl1 sees)
    rs_samples: int = 4           # completions sampled per prompt
    rs_temperature: float = 1.0   # their sampling temperature
    n_general_sft: int = 8000     # general examples in sft2 (R1 §2.3.3; more than the reasoning samples, unlike
                                  # R1's 200k to 600k: measured 56% general accuracy with 2,400, 95% with 6,000)


CONFIGS = {"model": GPTConfig, "data": data.DataConfig, "train": TrainConfig, "sft": SFTConfig, "rl": RLConfig}

# Presets: overrides of the dataclass defaults. `cpu` is the default without a GPU.
PRESETS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=192, block_size=192,
                 n_routed_experts=4, n_experts_per_tok=2, moe_hidden=64, n_docs=3000, bpe_docs=400,
                 vocab_size=512, n_heldout=32, n_heldout_general=16, batch_size=8, max_iters=60,
                 warmup_iters=10, eval_every=30, ckpt_every=20, log_every=5, eval_new_tokens=48,
                 rl_steps=6, rl1_steps=4, rl2_steps=4, prompts_per_step=4, group_size=4, max_new_tokens=48,
                 n_cold_start=32, rs_prompts=16, rs_samples=2, n_general_sft=16, sft_batch_size=8, sft1_epochs=1,
                 sft2_epochs=1),
    "cpu": dict(n_routed_experts=8, max_iters=550, warmup_iters=50, eval_every=110, ckpt_every=110),
    "gpu": dict(n_layer=8, n_embd=512, n_head=8, n_kv_head=4, mlp_hidden=1536, block_size=512,
                n_routed_experts=16, moe_hidden=256, n_docs=400_000, batch_size=64, max_iters=5000,
                lr=1e-3, prompts_per_step=64, group_size=16, rs_prompts=8000),
}


# ----------------------------------------------------------------------------------------------
# The stages: one row each. A row says which loop runs it, what it starts from, what it trains
# on, which reward terms it sums, which config fields are its own (its length first) and where
# it departs from the configs' defaults; the configs hold the rest.

@dataclass(frozen=True)
class Stage:
    what: str                  # one line for the screen
    loop: str                  # "sft" or "grpo"
    init: str | None           # the stage whose weights it starts from (None: a fresh model)
    data: str                  # corpus | cold_start | rejection | reasoning | all_scenario
    rewards: tuple = ()        # GRPO reward terms (rewards.score_batch)
    needs: tuple = ()          # other stages whose outputs it reads
    own: tuple = ()            # config fields no other stage reads; own[0] is its length
    overrides: tuple = ()      # (field, value) pairs applied over the preset; flags still win


# rl1, its ablation and rl2 sum a dense term (language consistency, in [0, 1]) with the sparse
# accuracy. GRPO's division by the group std amplifies whatever varies when nothing else does:
# in an all-wrong group a 0.02 wobble of consistency becomes a full-size advantage, and RL learns
# to say less (measured: rl1 fell from 19% to 6.5% held-out, 68 to 40 tokens). Dr. GRPO's
# unscaled advantages (Liu et al. 2025 §3) keep each term at its own weight.
DENSE = (("scale_std", False),)
# sft2 restarts from the base on mostly general data; at sft1's rate it forgot the chains (rl1
# 24% -> sft2 15% held-out), at half of it distilling rl1's right samples pays (-> 27.5%).
GENTLE = (("sft_lr", 5e-4),)

STAGES = {
    "pretrain": Stage("toy pretrain: the base model", "sft", None, "corpus", own=("max_iters",)),
    "zero": Stage("R1-Zero: GRPO from the base, accuracy + format (R1 §2.2)", "grpo", "pretrain", "reasoning",
                  ("accuracy", "format"), own=("rl_steps",)),
    "sft1": Stage("cold start: SFT of the base on clean single-language chains (R1 §2.3.1)", "sft", "pretrain",
                  "cold_start", own=("sft1_epochs", "n_cold_start")),
    "rl1": Stage("reasoning RL: accuracy + format + language consistency (R1 §2.3.2)", "grpo", "sft1", "reasoning",
                 ("accuracy", "format", "lang"), own=("rl1_steps", "lang_weight"), overrides=DENSE),
    "rl1_nolang": Stage("ablation: rl1 without the language reward", "grpo", "sft1", "reasoning",
                        ("accuracy", "format"), own=("rl1_steps",), overrides=DENSE),
    "sft2": Stage("rejection sampling from rl1 + general tasks, SFT from the base (R1 §2.3.3)", "sft", "pretrain",
                  "rejection", needs=("rl1",),
                  own=("sft2_epochs", "rs_prompts", "rs_samples", "rs_temperature", "n_general_sft"),
                  overrides=GENTLE),
    "rl2": Stage("all-scenario RL: reasoning + general prompts (R1 §2.3.4)", "grpo", "sft2", "all_scenario",
                 ("accuracy", "format", "lang", "needless"),
                 own=("rl2_steps", "lang_weight", "general_frac", "needless_penalty"), overrides=DENSE),
}
PIPELINES = {"r1": ("sft1", "rl1", "sft2", "rl2"), "all": tuple(STAGES)}
PROBED = ("pretrain", "zero")  # their eval.json adds the forced-opening probes


# ----------------------------------------------------------------------------------------------
# Command line: every dataclass field is a flag; bad input exits 2 naming the valid choices.

class Parser(argparse.ArgumentParser):
    def error(self, message):
        if "unrecognized arguments" in message:
            flags = sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))
            message += " (valid flags: " + " ".join(flags) + ")"
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    p = Parser(description="nanoR1 training stages")
    p.add_argument("--stage", choices=(*STAGES, *PIPELINES), default="pretrain")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="default: gpu with CUDA, else cpu")
    p.add_argument("--out_dir", default="out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--fp8", choices=("auto", "off", *fp8.RECIPES), default="auto",
                   help="default: blockwise on Hopper, off elsewhere")
    p.add_argument("--resume", action="store_true", help="continue a killed stage from its last checkpoint")
    p.add_argument("--force", action="store_true", help="redo the named stage(s) even if done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    seen = set()
    for group, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            if (group, f.name) == ("model", "vocab_size"):
                continue  # set by the tokenizer; --vocab_size is the BPE target (data)
            assert f.name not in seen, f"config field {f.name} defined twice"
            seen.add(f.name)
            kind = {bool: parse_bool}.get(type(f.default), type(f.default))
            p.add_argument(f"--{f.name}", type=kind, default=None, help=f"[{group}] default {f.default}")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in eval.json
    for mix in (args.rl_mix, args.corpus_mix):
        try:
            if mix is not None:
                data.parse_mix(mix)
        except ValueError as e:
            p.error(str(e))
    if args.loss_agg is not None and args.loss_agg not in grpo.LOSS_AGGS:
        p.error(f"--loss_agg must be one of {', '.join(grpo.LOSS_AGGS)}")
    return args


def parse_bool(s):
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected one of true/false/1/0/yes/no, got {s!r}")


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
    print(f"device: {choice} ({why}); compute dtype: {'bfloat16 (autocast)' if bf16 else 'float32'}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    return choice, autocast


def build_configs(args, device, stage=None):
    """Dataclass defaults <- preset <- the stage's overrides <- explicit flags."""
    preset = args.preset or ("gpu" if device == "cuda" else "cpu")
    layers = [PRESETS[preset], dict(STAGES[stage].overrides) if stage else {}]
    cfgs = {}
    for group, cls in CONFIGS.items():
        vals = {f.name: f.default for f in dataclasses.fields(cls)}
        for layer in layers:
            vals.update({k: v for k, v in layer.items() if k in vals})
        vals.update({k: getattr(args, k) for k in vals if getattr(args, k, None) is not None
                     and (group, k) != ("model", "vocab_size")})
        cfgs[group] = cls(**vals)
    return preset, cfgs


def settings_hash(name, cfgs, fp8_recipe, input_hashes):
    """What a stage's result depends on: the fields of its config groups that it reads (not the
    fields another stage owns), the fp8 recipe and its inputs' settings. Two runs with the same
    hash compute the same thing; a stage is redone when its hash changes."""
    st = STAGES[name]
    groups = ("model", "data", "train") if st.init is None else ("sft",) if st.loop == "sft" else ("rl",)
    others = {f for row in STAGES.values() for f in row.own} - set(st.own)
    fields = {k: v for g in groups for k, v in dataclasses.asdict(cfgs[g]).items() if k not in others}
    blob = {"stage": name, "fp8": fp8_recipe, "inputs": input_hashes, **fields}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def build_model(model_cfg, device, fp8_recipe, state=None):
    model = GPT(model_cfg)
    if state is not None:
        model.load_state_dict(state)
    model = model.to(device)
    if fp8_recipe != "off":
        fp8.convert_to_float8(model, fp8_recipe)
    return model


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


def make_optimizer(model, lr, train_cfg, device):
    """AdamW; decay on matrices (and the stacked expert weights), none on gains and vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train_cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, train_cfg.beta2), fused=device == "cuda")
    moe.attach_bias_update(opt, model)  # DeepSeek-V3 §2.1.2: aux-loss-free balancing after every step
    return opt


def lr_at(step, peak, warmup, total, min_frac):
    """Linear warmup, then cosine decay to min_frac of the peak (min_frac = 1: constant)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def clip_and_step(model, opt, grad_clip):
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


# ----------------------------------------------------------------------------------------------
# The supervised loop: pretrain, sft1, sft2. batch_at(step, micro) -> (x, y), y = -1 where no
# loss is taken (prompt tokens, padding), so the pretrain is the case with nothing masked.

def train_sft(model, opt, batch_at, n_steps, lr_of, train_cfg, run, autocast, heldout_loss=None, save=None):
    first_loss, recent = None, collections.deque(maxlen=50)  # the last 50 steps' losses (since a resume)
    t_last, tok_since = time.time(), 0
    model.train()
    for step in range(run.step, n_steps):
        lr = lr_of(step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for micro in range(train_cfg.grad_accum):
            x, y = batch_at(step, micro)
            with autocast:
                _, loss = model(x, y)
            (loss / train_cfg.grad_accum).backward()
            loss_sum += loss.item() / train_cfg.grad_accum
            tok_since += int((y >= 0).sum())
        norm = clip_and_step(model, opt, train_cfg.grad_clip)
        done = step + 1
        first_loss = loss_sum if first_loss is None else first_loss
        recent.append(loss_sum)
        run.bar.update(1)
        if done % train_cfg.log_every == 0 or done == n_steps:
            row = {"step": done, "loss": loss_sum, "lr": lr, "grad_norm": norm,
                   "tok_s": tok_since / (time.time() - t_last)}
            row.update(moe.load_stats(model))
            if heldout_loss is not None and (done % train_cfg.eval_every == 0 or done == n_steps):
                row["heldout_loss"] = heldout_loss()
            run.log(row)
            run.bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{row['tok_s']:.0f}",
                                **({"load": f"{row['moe.max_mean']:.2f}"} if "moe.max_mean" in row else {}))
            t_last, tok_since = time.time(), 0
        if done % train_cfg.ckpt_every == 0 or done == n_steps:
            save(done)
    return {"first_loss": first_loss, "final_loss": recent[-1] if recent else None,
            "final_loss_avg50": evaluate.mean(recent) if recent else None}


def corpus_batches(ids, train_cfg, block, device):
    """Random windows of the token stream, a pure function of (step, micro)."""
    def batch_at(step, micro):
        g = torch.Generator().manual_seed(train_cfg.train_seed * 1_000_003 + step * 64 + micro)
        ix = torch.randint(len(ids) - block - 1, (train_cfg.batch_size,), generator=g)
        x = torch.stack([ids[i:i + block] for i in ix])
        y = torch.stack([ids[i + 1:i + block + 1] for i in ix])
        return x.to(device), y.to(device)
    return batch_at


def example_batches(examples, batch_size, grad_accum, seed, eot, device):
    """(prompt ids, response ids) examples in a fresh order each epoch, right-padded; the loss
    is taken on response tokens only (targets -1 on the prompt and the padding). Returns
    batch_at and the optimizer steps per epoch; the last batch of an epoch is filled up from
    the start of the same order."""
    n, per_step = len(examples), batch_size * grad_accum
    per_epoch = math.ceil(n / per_step)

    def batch_at(step, micro):
        epoch, j = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        first = j * per_step + micro * batch_size
        chunk = [examples[order[(first + i) % n]] for i in range(batch_size)]
        L = max(len(p) + len(r) for p, r in chunk) - 1
        x = torch.full((len(chunk), L), eot, dtype=torch.long)
        y = torch.full((len(chunk), L), -1, dtype=torch.long)
        for i, (p, r) in enumerate(chunk):
            seq = torch.tensor(p + r)
            x[i, :len(seq) - 1] = seq[:-1]
            y[i, len(p) - 1:len(seq) - 1] = seq[len(p):]  # position t predicts token t + 1
        return x.to(device), y.to(device)
    return batch_at, per_epoch


# ----------------------------------------------------------------------------------------------
# The GRPO loop: zero, rl1, rl1_nolang, rl2. prompts_at(step, salt) -> the step's problems.

def train_grpo(model, ref, opt, enc, prompts_at, score_fn, rl_cfg, n_steps, grad_clip, run, autocast, heldout_eval,
               save):
    for step in range(run.step, n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, rl_cfg.rl_lr, rl_cfg.rl_warmup, n_steps, 1.0)
        gen = torch.Generator().manual_seed(rl_cfg.rl_seed * 1_000_003 + step)  # the step's samples
        with autocast:
            st = grpo.grpo_step(model, ref, opt, enc, prompts_at(step), rl_cfg, score_fn, gen,
                                refill=lambda n: prompts_at(step, salt=1)[:n], grad_clip=grad_clip)
        done = step + 1
        example = st.pop("example")
        row = {"step": done, **st}
        if done % rl_cfg.rl_eval_every == 0 and done < n_steps:
            row.update({f"heldout_{k}": v for k, v in heldout_eval().items()})
        if rl_cfg.ref_sync_every and ref is not None and done % rl_cfg.ref_sync_every == 0:
            ref.load_state_dict(model.state_dict())
        run.log(row)
        run.bar.update(1)
        run.bar.set_postfix(r=f"{st['reward']:.2f}", acc=f"{st['accuracy']:.2f}", fmt=f"{st['format_rate']:.2f}",
                            lang=f"{st['lang']:.2f}", len=f"{st['response_tokens']:.0f}", kl=f"{st['kl']:.3f}",
                            zv=f"{st['zero_var_frac']:.2f}")
        if done % rl_cfg.rl_ckpt_every == 0 or done == n_steps:
            save(done)
    if run.step < n_steps:
        print("example response:", repr(example[:300]))


def rl_prompts(st, cfgs):
    """The step's prompts: reasoning problems from the RL split (never the held-out one); the
    all-scenario stage replaces a share general_frac of them with general tasks."""
    data_cfg, rl_cfg = cfgs["data"], cfgs["rl"]
    n_general = round(rl_cfg.prompts_per_step * rl_cfg.general_frac) if st.data == "all_scenario" else 0

    def prompts_at(step, salt=0):
        seed = rl_cfg.rl_seed * 100_003 + step * 7 + salt
        return (data.rl_problems(data_cfg, rl_cfg.prompts_per_step - n_general, seed=seed) +
                data.general_problems(data_cfg, n_general, seed=seed))
    return prompts_at


def reward_fn(st, rl_cfg):
    weights = rewards.RewardWeights(lang=rl_cfg.lang_weight, needless=-rl_cfg.needless_penalty)
    return lambda texts, problems: evaluate.score(texts, problems, terms=st.rewards, weights=weights)


def rejection_set(cfgs, enc, device, fp8_recipe, args, autocast, run):
    """sft2's data (R1 §2.3.3): rl1's samples over a prompt set larger than rl1's, kept when
    right, well formed and in one language, de-duplicated; plus general-task examples written
    by the world. The kept samples go to rejection.jsonl, which a rerun with the same rl1 and
    sampling settings reuses (so tuning sft2's training does not redo the sampling)."""
    data_cfg, sft_cfg, rl_cfg = cfgs["data"], cfgs["sft"], cfgs["rl"]
    path = os.path.join(run.dir, "rejection.jsonl")
    key = (f"rl1={read_eval(args, 'rl1')['settings']} prompts={sft_cfg.rs_prompts} samples={sft_cfg.rs_samples} "
           f"temperature={sft_cfg.rs_temperature} budget={rl_cfg.max_new_tokens}")
    rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else [{}]
    if rows[0].get("key") == key:
        kept, stats = [(r["prompt"], r["response"]) for r in rows[1:]], rows[0]["stats"]
        print(f"rejection sampling: reusing {len(kept)} samples from {path}")
    else:
        rl1 = load_checkpoint(os.path.join(stage_dir(args, "rl1"), "ckpt.pt"))
        teacher = build_model(GPTConfig(**rl1["configs"]["model"]), device, fp8_recipe, rl1["model"])
        problems = data.rl_problems(data_cfg, sft_cfg.rs_prompts, seed=data_cfg.seed + 13)
        print(f"rejection sampling: {sft_cfg.rs_prompts} prompts x {sft_cfg.rs_samples} samples from rl1 "
              f"(rl1 saw {rl_cfg.rl1_steps * rl_cfg.prompts_per_step} prompts)")
        with autocast:
            kept, stats = grpo.rejection_sample(teacher, enc, problems, sft_cfg.rs_samples, rl_cfg.max_new_tokens,
                                                sft_cfg.rs_temperature, reward_fn(STAGES["rl1"], rl_cfg),
                                                torch.Generator().manual_seed(data_cfg.seed + 13))
        kept = [(p.prompt, text) for p, text in kept]
        with open(path + ".tmp", "w") as f:
            for row in [{"key": key, "stats": stats}] + [{"prompt": p, "response": r} for p, r in kept]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
    general = data.general_problems(data_cfg, sft_cfg.n_general_sft, seed=data_cfg.seed + 17, split="corpus")
    stats = {**stats, "general": len(general)}
    print(f"rejection sampling kept {stats['kept']} of {stats['drawn']} (dropped: {stats['dropped']}); "
          f"+ {len(general)} general-task examples")
    return kept + [(p.prompt, data.general_response(p)) for p in general], stats


# ----------------------------------------------------------------------------------------------
# Running a stage, and the pipelines

def stage_dir(args, name):
    return os.path.join(args.out_dir, name)


def read_eval(args, name):
    path = os.path.join(stage_dir(args, name), "eval.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def start_from(st, args, cfgs, device, fp8_recipe):
    """The model and tokenizer a stage starts from: its init stage's checkpoint (sft2 and sft1
    restart from the base, R1 §2.3.3)."""
    init = load_checkpoint(os.path.join(stage_dir(args, st.init), "ckpt.pt"))
    cfgs["model"] = GPTConfig(**init["configs"]["model"])
    return build_model(cfgs["model"], device, fp8_recipe, init["model"]), init["enc"]


def run_stage(name, settings, args, device, autocast, preset, cfgs, fp8_recipe):
    st, t_start = STAGES[name], time.time()
    train_cfg, data_cfg, sft_cfg, rl_cfg = cfgs["train"], cfgs["data"], cfgs["sft"], cfgs["rl"]
    print(f"\n=== stage {name}: {st.what}\npreset {preset}, out {stage_dir(args, name)}")
    run = Run(args.out_dir, name, settings, args.resume, args.quiet)
    torch.manual_seed(train_cfg.train_seed)
    extra = {}

    # ---- the model and tokenizer it starts from
    if st.init is None:
        t0 = time.time()
        corpus = data.build_corpus(data_cfg)
        enc = run.saved["enc"] if run.saved else data.build_tokenizer(data_cfg, corpus)
        train_ids = torch.tensor(data.encode_docs(enc, corpus), dtype=torch.long)
        print(f"data: {len(corpus)} docs, {len(train_ids):,} tokens, vocab {enc.n_vocab} ({time.time() - t0:.1f}s)")
        cfgs["model"].vocab_size = enc.n_vocab
        model = build_model(cfgs["model"], device, fp8_recipe)
    else:
        model, enc = start_from(st, args, cfgs, device, fp8_recipe)
    model_cfg = cfgs["model"]
    print(f"model: {model_cfg.n_layer} layers, d={model_cfg.n_embd}, {model.n_params() / 1e6:.2f}M params "
          f"({model.n_params(active=True) / 1e6:.2f}M active), fp8 {fp8_recipe}"
          + (f", from {st.init}" if st.init else ""))

    # ---- its data, step count and optimizer
    lr = rl_cfg.rl_lr if st.loop == "grpo" else train_cfg.lr if st.init is None else sft_cfg.sft_lr
    opt = make_optimizer(model, lr, train_cfg, device)
    if st.loop == "sft" and st.init is None:
        batch_at, n_steps = corpus_batches(train_ids, train_cfg, model_cfg.block_size, device), train_cfg.max_iters
        lr_of = lambda s: lr_at(s, train_cfg.lr, train_cfg.warmup_iters, n_steps, train_cfg.min_lr_frac)
        heldout_loss = evaluate.heldout_loss_fn(model, enc, data_cfg, train_cfg.batch_size, model_cfg.block_size,
                                                      device, autocast)
    elif st.loop == "sft":
        if st.data == "cold_start":
            cold = data.cold_start_set(data_cfg, sft_cfg.n_cold_start, seed=data_cfg.seed + 11)
            pairs = [(p.prompt, response) for p, response in cold]
        else:
            pairs, extra["rejection"] = rejection_set(cfgs, enc, device, fp8_recipe, args, autocast, run)
        batch_at, per_epoch = example_batches(data.encode_sft(enc, pairs), sft_cfg.sft_batch_size,
                                              train_cfg.grad_accum, train_cfg.train_seed, enc.eot_token, device)
        epochs = getattr(sft_cfg, st.own[0])
        n_steps, heldout_loss = per_epoch * epochs, None
        lr_of = lambda s: lr_at(s, sft_cfg.sft_lr, sft_cfg.sft_warmup, n_steps, train_cfg.min_lr_frac)
        print(f"{len(pairs)} examples, {epochs} epochs, {n_steps} steps of {sft_cfg.sft_batch_size}")
    else:
        n_steps = getattr(rl_cfg, st.own[0])
        ref = grpo.make_reference(model) if rl_cfg.beta > 0 else None
        print(f"{n_steps} steps x {rl_cfg.prompts_per_step} prompts x G={rl_cfg.group_size}, "
              f"rewards: {' + '.join(st.rewards)}")
    if run.saved:
        model.load_state_dict(run.saved["model"])
        opt.load_state_dict(run.saved["optimizer"])
    save = lambda step: run.save(model, opt, step, cfgs, enc)
    run.progress(n_steps)

    # ---- the loop
    if st.loop == "sft":
        extra.update(train_sft(model, opt, batch_at, n_steps, lr_of, train_cfg, run, autocast, heldout_loss, save))
        if heldout_loss is not None:
            extra["heldout_loss"] = heldout_loss()
    else:
        problems = data.heldout_problems(data_cfg)

        def heldout_eval():
            with autocast:
                texts, ntoks = evaluate.respond(model, enc, problems, train_cfg.eval_new_tokens)
            res = evaluate.reasoning_summary(problems, texts, ntoks)
            return {k: res[k] for k in ("accuracy", "format_rate", "lang_consistency", "mean_response_tokens")}
        train_grpo(model, ref, opt, enc, rl_prompts(st, cfgs), reward_fn(st, rl_cfg), rl_cfg, n_steps,
                   train_cfg.grad_clip, run, autocast, heldout_eval, save)
        rows = evaluate.read_metrics(run.dir)
        extra.update(first_step_response_tokens=rows[0]["response_tokens"],
                     last_step_response_tokens=rows[-1]["response_tokens"])

    # ---- held-out evaluation: eval.json, written last
    res = evaluate.full_eval(model, enc, cfgs, probes=name in PROBED, autocast=autocast)
    res.update(extra, stage=name, init=st.init, preset=preset, argv=args.argv, wall_s=time.time() - t_start,
               **moe.load_stats(model))
    run.finish(res)
    evaluate.print_table(res, name, read_eval(args, st.init) if st.init else {}, st.init)


def ensure(name, args, device, autocast, hashes, forced):
    """Make `name` done with the current settings: its inputs first (recursively), then itself
    unless its eval.json already carries these settings. Returns its settings hash."""
    if name in hashes:
        return hashes[name]
    st = STAGES[name]
    inputs = [d for d in (st.init, *st.needs) if d]
    for dep in inputs:
        ensure(dep, args, device, autocast, hashes, forced)
    preset, cfgs = build_configs(args, device, name)
    fp8_recipe = resolve_fp8(args.fp8, device)
    settings = settings_hash(name, cfgs, fp8_recipe, {d: hashes[d] for d in inputs})
    done = read_eval(args, name).get("settings") == settings and os.path.exists(
        os.path.join(stage_dir(args, name), "ckpt.pt"))
    if done and name not in forced:
        print(f"stage {name}: already done with these settings ({stage_dir(args, name)}), skipped; --force redoes it")
    else:
        run_stage(name, settings, args, device, autocast, preset, cfgs, fp8_recipe)
    hashes[name] = settings
    return settings


def main(argv=None):
    args = parse_args(argv)
    device, autocast = pick_device(args.device)
    names = PIPELINES.get(args.stage, (args.stage,))
    hashes = {}
    for name in names:
        ensure(name, args, device, autocast, hashes, set(names) if args.force else set())
    if args.stage in PIPELINES:
        print("wrote", evaluate.write_report(args.out_dir))


if __name__ == "__main__":
    main()
