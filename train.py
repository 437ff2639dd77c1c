"""
The stages of nanoR1 and their two loops: the toy pretrain, R1-Zero, and the R1 pipeline.

    python train.py --stage zero                    # base pretrain (if needed) + R1-Zero -> out/zero/
    python train.py --stage all                     # pretrain, zero, the R1 pipeline, out/report.md
    python train.py --stage r1                      # sft1 -> rl1 -> sft2 -> rl2 (and their inputs)
    python train.py --stage distill                 # rl2 distilled into a small dense student (R1 §2.4)
    python train.py --stage rl1 --lang_weight 0     # any config field is a flag
    python train.py --stage all --preset tiny       # the smoke-test size (well under two minutes)
    python train.py --stage zero --data mine.jsonl  # your own problems (datafile.py: the format)
    torchrun --nproc_per_node 8 train.py --stage all  # data parallel (dist.py); python train.py is N = 1

The stages (R1 paper §2.2-2.3), one row each of STAGES below:
  pretrain    next-token training on the toy corpus: the base model
  zero        R1-Zero: GRPO from the base with accuracy + format rewards only (§2.2)
  sft1        cold start: SFT of the base on a few hundred clean, single-language chains (§2.3.1)
  rl1         reasoning RL from sft1: accuracy + format + language consistency (§2.3.2)
  rl1_nolang  the ablation: rl1 without the language reward, for the report
  sft2        rejection sampling from rl1 plus general tasks; SFT restarts from the base (§2.3.3)
  rl2         all-scenario RL from sft2: reasoning and general prompts (§2.3.4)
  student_base  the toy pretrain of the student, a small dense model (config.student_shape)
  distill     SFT of the student base on rl2's rejection-sampled answers, no RL (§2.4)
  student_zero  the control: the zero stage on the student base, at no less compute (§4.1)
Two loops run them all: a supervised loop (pretrain, sft1, sft2, student_base, distill: a
pretrain is an SFT with nothing masked) and a GRPO loop (zero, rl1, rl1_nolang, rl2,
student_zero), both in loops.py. Every eval.json counts the FLOPs its stage spent
(evaluate.stage_compute).

Every stage writes, under --out_dir/<stage>/: ckpt.pt (atomically: temp file + rename, loadable
with weights_only=True), tokenizer.tiktoken (tiktoken's rank-file format), metrics.jsonl (one
JSON object per logged step) and eval.json (held-out results, written last: its presence marks
the stage done). A stage whose input is missing, or was made with other settings, runs it
first; a stage already done with the same settings is skipped (--force redoes it). A killed
run continues from its last checkpoint with --resume and the same flags; batches and samples
are a function of the step, so the result is the same as a run never killed. SIGTERM or
Ctrl-C checkpoints at the end of the step and exits 128 + the signal; a step with a non-finite
gradient norm is skipped and counted, and --max_bad_steps of them in a row stop the run.
The settings (config.py) are checked before any work: a bad one exits 2 naming its range.
"""
import collections
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass

import torch

import config
import data
import datafile
import dist
import evaluate
import fp8
import grpo
import loops
import moe
import rewards
import tokenizer
from checkpoint import Run, load_checkpoint
from config import build_configs
from model import GPT, GPTConfig


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
    student: bool = False      # a fresh model of the student preset (config.student_shape)


# rl1, its ablation and rl2 sum a dense term (language consistency, in [0, 1]) with the sparse
# accuracy. GRPO's division by the group std amplifies whatever varies when nothing else does:
# in an all-wrong group a 0.02 wobble of consistency becomes a full-size advantage, and RL learns
# to say less (measured: rl1 fell from 19% to 6.5% held-out, 68 to 40 tokens). Dr. GRPO's
# unscaled advantages (Liu et al. 2025 §3) keep each term at its own weight.
DENSE = (("scale_std", False),)
# sft2 restarts from the base on mostly general data; at sft1's rate it forgot the chains (rl1
# 24% -> sft2 15% held-out), at half of it distilling rl1's right samples pays (-> 27.5%).
GENTLE = (("sft_lr", 5e-4),)
# rl2 starts from a model that already reasons and answers the general tasks; its RL mostly
# polishes. From one sft2 (27.5% held-out, 97% general) rl2 at lr 3e-4 / 1e-4 / 5e-5 gave
# 17.5% / 26.0% / 27.5% and 61% / 94% / 96% general: at rl1's rate the reasoning updates wear the
# general tasks down, and their own groups, nearly all right, give little gradient to hold them.
POLISH = DENSE + (("rl_lr", 5e-5),)

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
                 own=("rl2_steps", "lang_weight", "general_frac", "needless_penalty"), overrides=POLISH),
    "student_base": Stage("the student's base: the toy pretrain of a small dense model (R1 §2.4)", "sft", None,
                          "corpus", own=("max_iters", "student_width"), student=True),
    "distill": Stage("distillation: SFT of the student base on rl2's rejection-sampled answers, no RL (R1 §2.4)",
                     "sft", "student_base", "distill", needs=("rl2",),
                     own=("distill_epochs", "distill_prompts", "distill_general", "distill_samples", "rs_temperature")),
    "student_zero": Stage("the control: R1-Zero's GRPO on the student base, at no less compute (R1 §4.1)", "grpo",
                          "student_base", "reasoning", ("accuracy", "format"), own=("student_rl_steps",)),
}
PIPELINES = {"r1": ("sft1", "rl1", "sft2", "rl2"), "all": tuple(STAGES)}
PROBED = ("pretrain", "zero", "student_base", "student_zero")  # their eval.json adds the forced-opening probes
OwnData = collections.namedtuple("OwnData", "train heldout")  # a --data file's problems, split


# ----------------------------------------------------------------------------------------------
# Command line: every dataclass field is a flag; bad input exits 2 naming the valid choices.

def parse_args(argv=None):
    p = config.Parser(description="nanoR1 training stages")
    p.add_argument("--stage", choices=(*STAGES, *PIPELINES), default="pretrain")
    p.add_argument("--preset", choices=tuple(config.PRESETS), default=None,
                   help="default: gpu with CUDA, else cpu (nocheck: the world before checks)")
    p.add_argument("--out_dir", default="out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--fp8", choices=("auto", "off", *fp8.RECIPES), default="auto",
                   help="default: blockwise on Hopper, off elsewhere")
    p.add_argument("--resume", action="store_true", help="continue a killed stage from its last checkpoint")
    p.add_argument("--force", action="store_true", help="redo the named stage(s) even if done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--data", default=None, metavar="FILE.jsonl",
                   help="your own problems for the RL and SFT stages (datafile.py has the format)")
    p.add_argument("--corpus", default=None, metavar="FILE.txt", help="your own pretraining documents")
    config.add_config_flags(p)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in eval.json
    args.own = args.own_corpus = None  # the files' contents, read by read_files
    return args


def settings_hash(name, cfgs, fp8_recipe, input_hashes, args):
    """What a stage's result depends on: the fields of its config groups that it reads (not the
    fields another stage owns), the fp8 recipe, its inputs' settings and the contents of the file
    it reads (--corpus for pretrain, --data for the others). Two runs with the same hash compute
    the same thing; a stage is redone when its hash changes."""
    st = STAGES[name]
    groups = ("model", "data", "train") if st.init is None else ("sft",) if st.loop == "sft" else ("rl",)
    others = {f for row in STAGES.values() for f in row.own} - set(st.own)
    fields = {k: v for g in groups for k, v in dataclasses.asdict(cfgs[g]).items() if k not in others}
    blob = {"stage": name, "fp8": fp8_recipe, "inputs": input_hashes, **fields}
    file = args.corpus if st.init is None else args.data
    if file:
        blob["file"] = hashlib.sha256(open(file, "rb").read()).hexdigest()
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def build_model(model_cfg, device, fp8_recipe, state=None):
    model = GPT(model_cfg)
    if state is not None:
        model.load_state_dict(state)
    model = model.to(device)
    if fp8_recipe != "off":
        fp8.convert_to_float8(model, fp8_recipe)
    return model


def rl_prompts(st, cfgs, own=None):
    """The step's prompts: reasoning problems from the RL split (never the held-out one); the
    all-scenario stage replaces a share general_frac of them with general tasks. own: the
    training share of a --data file, drawn from instead of the toy world."""
    data_cfg, rl_cfg = cfgs["data"], cfgs["rl"]
    n_general = round(rl_cfg.prompts_per_step * rl_cfg.general_frac) if st.data == "all_scenario" else 0

    def prompts_at(step, salt=0):
        seed = rl_cfg.rl_seed * 100_003 + step * 7 + salt
        reasoning = (data.rl_problems(data_cfg, rl_cfg.prompts_per_step - n_general, seed=seed) if own is None
                     else random.Random(seed).choices(own, k=rl_cfg.prompts_per_step - n_general))
        return reasoning + data.general_problems(data_cfg, n_general, seed=seed)
    return prompts_at


def reward_fn(st, rl_cfg):
    weights = rewards.RewardWeights(lang=rl_cfg.lang_weight, needless=-rl_cfg.needless_penalty)
    return lambda texts, problems: evaluate.score(texts, problems, terms=st.rewards, weights=weights)


def rejection_set(st, cfgs, enc, device, fp8_recipe, args, autocast, run):
    """The data of sft2 (R1 §2.3.3) and distill (§2.4): a teacher's samples (rl1's for sft2,
    rl2's for distill, st.needs[0]), kept when right, well formed, in one language and without
    a needless chain (grpo.rejection_reason), de-duplicated. sft2 samples reasoning prompts
    (more than rl1 saw) and adds general-task examples written by the world; distill samples the
    teacher on reasoning and general prompts alike. The kept samples go to rejection.jsonl,
    which a rerun with the same teacher and sampling settings reuses (so tuning the SFT does not
    redo the sampling). Returns the (prompt, response) pairs and the counts, with the FLOPs the
    teacher spent sampling (`teacher_flops`)."""
    data_cfg, sft_cfg, rl_cfg = cfgs["data"], cfgs["sft"], cfgs["rl"]
    teacher_name, sft2 = st.needs[0], st.data == "rejection"
    n, n_general, samples, seed = ((sft_cfg.rs_prompts, 0, sft_cfg.rs_samples, data_cfg.seed + 13) if sft2 else
                                   (sft_cfg.distill_prompts, sft_cfg.distill_general, sft_cfg.distill_samples,
                                    data_cfg.seed + 19))
    path = os.path.join(run.dir, "rejection.jsonl")
    key = (f"{teacher_name}={read_eval(args, teacher_name)['settings']} prompts={n} general={n_general} "
           f"samples={samples} temperature={sft_cfg.rs_temperature} budget={rl_cfg.max_new_tokens}")
    rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else [{}]
    if rows[0].get("key") == key:
        kept, stats = [(r["prompt"], r["response"]) for r in rows[1:]], rows[0]["stats"]
        print(f"rejection sampling: reusing {len(kept)} samples from {path}")
    else:
        ckpt = load_checkpoint(os.path.join(stage_dir(args, teacher_name), "ckpt.pt"))
        teacher = build_model(GPTConfig(**ckpt["configs"]["model"]), device, fp8_recipe, ckpt["model"])
        problems = (data.rl_problems(data_cfg, n, seed=seed) if args.own is None
                    else random.Random(seed).choices(args.own.train, k=n))
        problems += data.general_problems(data_cfg, n_general, seed=seed)
        print(f"rejection sampling: {len(problems)} prompts x {samples} samples from {teacher_name}")
        with autocast:  # each rank samples its share of the prompts
            kept, stats = grpo.rejection_sample(teacher, enc, problems[dist.my_share(len(problems), even=False)],
                                                samples, rl_cfg.max_new_tokens, sft_cfg.rs_temperature,
                                                reward_fn(STAGES[teacher_name], rl_cfg),
                                                torch.Generator().manual_seed(seed + dist.rank()))
        kept = dist.gather([(p.prompt, text) for p, text in kept])
        parts = dist.gather([stats])
        stats = {k: sum(p[k] for p in parts) for k in ("prompts", "drawn", "kept", "tokens")}
        stats["dropped"] = {why: sum(p["dropped"][why] for p in parts) for why in parts[0]["dropped"]}
        stats["teacher_flops"] = stats["tokens"] * teacher.flops_per_token()
        if dist.is_main():
            with open(path + ".tmp", "w") as f:
                for row in [{"key": key, "stats": stats}] + [{"prompt": p, "response": r} for p, r in kept]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            os.replace(path + ".tmp", path)
    general = data.general_problems(data_cfg, sft_cfg.n_general_sft if sft2 else 0, seed=data_cfg.seed + 17,
                                    split="corpus")
    stats = {**stats, "general": len(general)}
    print(f"rejection sampling kept {stats['kept']} of {stats['drawn']} (dropped: {stats['dropped']})"
          + (f"; + {len(general)} general-task examples" if sft2 else ""))
    return kept + [(p.prompt, data.general_response(p)) for p in general], stats


# ----------------------------------------------------------------------------------------------
# Running a stage, and the pipelines

def stage_dir(args, name):
    return os.path.join(args.out_dir, name)


def read_eval(args, name):
    path = os.path.join(stage_dir(args, name), "eval.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def heldout_set(args, cfgs):
    """The held-out reasoning problems: the toy world's, or the held-out share of --data."""
    return data.heldout_problems(cfgs["data"]) if args.own is None else args.own.heldout


def check_prompt_room(enc, cfgs, args):
    """The longest prompt plus the larger generation budget must fit the context: checked as
    soon as the tokenizer exists, before the stage trains (exit 2 otherwise)."""
    m, t, r = cfgs["model"], cfgs["train"], cfgs["rl"]
    mine = [] if args.own is None else args.own.train
    probe = [""] + [f" <think> {o[lang]}" for o in (data.CHAIN_OPENER, data.BARE_OPENER) for lang in o]  # evaluate
    longest = max(len(enc.encode_ordinary(p.prompt + x))
                  for p in heldout_set(args, cfgs) + data.heldout_general(cfgs["data"]) + mine for x in probe)
    budget = max(t.eval_new_tokens, r.max_new_tokens)
    if longest + budget > m.block_size:
        print(f"train.py: error: the longest prompt ({longest} tokens) + --max_new_tokens / --eval_new_tokens "
              f"({budget}) exceeds --block_size {m.block_size}: valid is a budget <= {m.block_size - longest}",
              file=sys.stderr)
        sys.exit(2)


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
        corpus = data.build_corpus(data_cfg) if args.corpus is None else args.own_corpus
        enc = run.saved["enc"] if run.saved else data.build_tokenizer(data_cfg, corpus)
        train_ids = torch.tensor(tokenizer.encode_docs(enc, corpus), dtype=torch.long)
        print(f"data: {len(corpus)} docs, {len(train_ids):,} tokens, vocab {enc.n_vocab} ({time.time() - t0:.1f}s)")
        cfgs["model"].vocab_size = enc.n_vocab
        model = build_model(cfgs["model"], device, fp8_recipe)
    else:
        model, enc = start_from(st, args, cfgs, device, fp8_recipe)
    model_cfg = cfgs["model"]
    check_prompt_room(enc, cfgs, args)
    print(f"model: {model_cfg.n_layer} layers, d={model_cfg.n_embd}, {model.n_params() / 1e6:.2f}M params "
          f"({model.n_params(active=True) / 1e6:.2f}M active), fp8 {fp8_recipe}"
          + (f", from {st.init}" if st.init else ""))

    # ---- its data, step count and optimizer
    lr = rl_cfg.rl_lr if st.loop == "grpo" else train_cfg.lr if st.init is None else sft_cfg.sft_lr
    opt = loops.make_optimizer(model, lr, train_cfg, device)
    if st.loop == "sft" and st.init is None:
        batch_at = loops.corpus_batches(train_ids, train_cfg, model_cfg.block_size, device)
        n_steps = train_cfg.max_iters
        lr_of = lambda s: loops.lr_at(s, train_cfg.lr, train_cfg.warmup_iters, n_steps, train_cfg.min_lr_frac)
        heldout_loss = None if args.corpus else evaluate.heldout_loss_fn(  # (the toy world's documents)
            model, enc, data_cfg, train_cfg.batch_size, model_cfg.block_size, device, autocast)
    elif st.loop == "sft":
        if st.data == "cold_start":
            cold = (data.cold_start_set(data_cfg, sft_cfg.n_cold_start, seed=data_cfg.seed + 11) if args.own is None
                    else [(p, p.response) for p in args.own.train if p.response])
            pairs = [(p.prompt, response) for p, response in cold]
        else:
            pairs, extra["rejection"] = rejection_set(st, cfgs, enc, device, fp8_recipe, args, autocast, run)
        batch_at, per_epoch = loops.example_batches(data.encode_sft(enc, pairs), sft_cfg.sft_batch_size,
                                                    train_cfg.grad_accum, train_cfg.train_seed, enc.eot_token, device)
        epochs = getattr(sft_cfg, st.own[0])
        n_steps, heldout_loss = per_epoch * epochs, None
        lr_of = lambda s: loops.lr_at(s, sft_cfg.sft_lr, sft_cfg.sft_warmup, n_steps, train_cfg.min_lr_frac)
        print(f"{len(pairs)} examples, {epochs} epochs, {n_steps} steps of {sft_cfg.sft_batch_size}")
        if not pairs:  # (the tiny preset's teacher gets nothing right)
            print(f"warning: {name} has no examples (its teacher's samples all failed the checks): it trains "
                  f"no step and keeps the weights of {st.init}", file=sys.stderr)
            run.log({"step": 0, "examples": 0, "tokens_trained": 0})
    ref = None
    if st.loop == "grpo":
        n_steps = getattr(rl_cfg, st.own[0])
        ref = grpo.make_reference(model) if rl_cfg.beta > 0 else None
        print(f"{n_steps} steps x {rl_cfg.prompts_per_step} prompts x G={rl_cfg.group_size}, "
              f"rewards: {' + '.join(st.rewards)}")
    keep_ref = ref is not None and rl_cfg.ref_sync_every > 0  # the reference moves: save it too
    if run.saved:
        model.load_state_dict(run.saved["model"])
        opt.load_state_dict(run.saved["optimizer"])
        if keep_ref:
            ref.load_state_dict(run.saved["ref"])
    save = lambda step: run.save(model, opt, step, cfgs, enc, ref.state_dict() if keep_ref else None)
    run.progress(n_steps)
    trained = dist.wrap(model)  # the model the training forward/backward runs through (DDP if N > 1)
    if st.loop == "sft" and st.init is None and train_cfg.compile:  # a pretrain: one batch shape
        x, y = batch_at(run.step, 0)
        trained = loops.compiled(trained, x[dist.my_share(len(x))], y[dist.my_share(len(y))], autocast)

    # ---- the loop
    if st.loop == "sft":
        extra.update(loops.train_sft(trained, opt, batch_at, n_steps, lr_of, train_cfg, run, autocast, heldout_loss,
                                     save))
        if n_steps == 0:
            save(0)
        if heldout_loss is not None:
            extra["heldout_loss"] = heldout_loss()
    else:
        problems = heldout_set(args, cfgs)

        def heldout_eval():
            with autocast:
                texts, ntoks = evaluate.respond(model, enc, problems, train_cfg.eval_new_tokens)
            res = evaluate.reasoning_summary(problems, texts, ntoks)
            return {k: res[k] for k in ("accuracy", "format_rate", "lang_consistency", "mean_response_tokens",
                                        "reflection_rate")}
        prompts_at = rl_prompts(st, cfgs, args.own and args.own.train)
        loops.train_grpo(trained, ref, opt, enc, prompts_at, reward_fn(st, rl_cfg), rl_cfg, train_cfg, n_steps, run,
                         autocast, heldout_eval, save)
        rows = evaluate.read_metrics(run.dir)
        extra.update(first_step_response_tokens=rows[0]["response_tokens"],
                     last_step_response_tokens=rows[-1]["response_tokens"])

    # ---- the compute it spent, then the held-out evaluation: eval.json, written last
    teacher_flops = extra.get("rejection", {}).get("teacher_flops", 0.0)
    extra.update(evaluate.stage_compute(model.flops_per_token(), evaluate.read_metrics(run.dir), teacher_flops))
    res = evaluate.full_eval(model, enc, cfgs, probes=name in PROBED, autocast=autocast,
                             heldout=None if args.own is None else (args.own.heldout, args.data))
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
    preset, cfgs = build_configs(args, device, st.overrides, st.student)
    fp8_recipe = config.resolve_fp8(args.fp8, device)
    settings = settings_hash(name, cfgs, fp8_recipe, {d: hashes[d] for d in inputs}, args)
    done = read_eval(args, name).get("settings") == settings and os.path.exists(
        os.path.join(stage_dir(args, name), "ckpt.pt"))
    if done and name not in forced:
        print(f"stage {name}: already done with these settings ({stage_dir(args, name)}), skipped; --force redoes it")
    else:
        run_stage(name, settings, args, device, autocast, preset, cfgs, fp8_recipe)
    hashes[name] = settings
    return settings


def read_files(args, data_cfg, names):
    """--data and --corpus, read and checked whole before any work (exit 2: FILE:LINE: reason)."""
    args.own = args.own_corpus = None
    try:
        if args.data:
            train, heldout = datafile.split_problems(datafile.load_problems(args.data), data_cfg.n_heldout,
                                                     data_cfg.seed)
            args.own = OwnData(train, heldout)
            if "sft1" in names and not any(p.response for p in train):
                raise datafile.DataFileError(args.data, 0, "sft1 needs worked responses: no training line has "
                                             "a 'response'")
        if args.corpus:
            args.own_corpus = datafile.load_corpus(args.corpus)
    except datafile.DataFileError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)


def inputs_of(names):
    """The stages `names` run, with everything they start from or read."""
    out = []
    for name in names:
        for dep in (STAGES[name].init, *STAGES[name].needs):
            if dep:
                out += [d for d in inputs_of([dep]) if d not in out]
        out += [name] if name not in out else []
    return out


def main(argv=None):
    args = parse_args(argv)
    device, autocast = config.pick_device(args.device)
    device = dist.init(device)
    names = PIPELINES.get(args.stage, (args.stage,))
    for name in inputs_of(names):  # every setting of every stage that may run, before any work
        config.check(build_configs(args, device, STAGES[name].overrides, STAGES[name].student)[1])
    read_files(args, build_configs(args, device)[1]["data"], inputs_of(names))
    dist.catch_signals()
    hashes = {}
    try:
        for name in names:
            ensure(name, args, device, autocast, hashes, set(names) if args.force else set())
        if args.stage in PIPELINES and dist.is_main():
            print("wrote", evaluate.write_report(args.out_dir))
    except dist.Stopped as stop:
        print(f"{stop}: checkpoint saved; continue with the same command and --resume", file=sys.stderr)
        sys.exit(128 + stop.signum)
    finally:
        dist.close()


if __name__ == "__main__":
    main()
