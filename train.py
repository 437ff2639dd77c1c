"""
The stages of nanoR1, their loops, checkpoints, logging and evaluation.

    python train.py --stage pretrain                # toy pretrain -> out/pretrain/ (the base model)
    python train.py --stage zero                    # R1-Zero: GRPO from the base -> out/zero/
    python train.py --stage pretrain --preset tiny  # the smoke-test size (well under a minute)
    python train.py --stage zero --lr 3e-4 --rl_lr 1e-4 --resume   # any config field is a flag

Every stage writes, under --out_dir/<stage>/: ckpt.pt (written atomically: temp file + rename,
loadable with weights_only=True), tokenizer.tiktoken (tiktoken's rank-file format),
metrics.jsonl (one JSON object per logged step) and eval.json (held-out results). A killed run
continues from its last checkpoint with --resume. A stage whose input is missing runs its
prerequisite first. Only `pretrain` and `zero` exist so far: the R1 pipeline's sft1 / rl1 / sft2
/ rl2 stages are not built yet.
"""
import argparse
import collections
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import torch

import data
from model import GPT, GPTConfig

STAGES = ("pretrain", "zero")


@dataclass
class TrainConfig:
    batch_size: int = 32          # sequences per micro-batch
    grad_accum: int = 1           # micro-batches per optimizer step
    max_iters: int = 1500         # optimizer steps
    lr: float = 3e-3              # peak learning rate (small models take large ones)
    min_lr_frac: float = 0.1      # cosine decays to lr * min_lr_frac
    warmup_iters: int = 100       # linear warmup steps
    weight_decay: float = 0.1     # AdamW decay on matrices only
    beta2: float = 0.95           # AdamW beta2
    grad_clip: float = 1.0        # global grad-norm clip (0 = off)
    eval_every: int = 250         # held-out loss every this many steps
    ckpt_every: int = 250         # checkpoint every this many steps
    log_every: int = 10           # metrics.jsonl line every this many steps
    eval_new_tokens: int = 128    # generation budget when evaluating on held-out problems
    train_seed: int = 1337        # torch seed: init and batch order (the data seed is --seed)


# Presets: overrides of the dataclass defaults. `cpu` is the default without a GPU.
PRESETS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=192, block_size=192,
                 n_routed_experts=4, n_experts_per_tok=2, moe_hidden=64, n_docs=3000, bpe_docs=400,
                 vocab_size=512, n_heldout=32, batch_size=8, max_iters=60, warmup_iters=10,
                 eval_every=30, ckpt_every=20, log_every=5, eval_new_tokens=48,
                 rl_steps=6, prompts_per_step=4, group_size=4, max_new_tokens=48),
    "cpu": dict(n_routed_experts=8, max_iters=550, warmup_iters=50, eval_every=110, ckpt_every=110),
    "gpu": dict(n_layer=8, n_embd=512, n_head=8, n_kv_head=4, mlp_hidden=1536, block_size=512,
                n_routed_experts=16, moe_hidden=256, n_docs=400_000, batch_size=64, max_iters=5000,
                lr=1e-3, prompts_per_step=64, group_size=16),
}


def config_classes():
    from grpo import RLConfig
    return {"model": GPTConfig, "data": data.DataConfig, "train": TrainConfig, "rl": RLConfig}


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
    p.add_argument("--stage", choices=STAGES, default="pretrain")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="default: gpu with CUDA, else cpu")
    p.add_argument("--out_dir", default="out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--fp8", choices=("auto", "off", "tensorwise", "rowwise", "blockwise"), default="auto",
                   help="default: blockwise on Hopper, off elsewhere")
    p.add_argument("--resume", action="store_true", help="continue from out_dir/<stage>/ckpt.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    seen = set()
    for group, cls in config_classes().items():
        for f in dataclasses.fields(cls):
            if (group, f.name) == ("model", "vocab_size"):
                continue  # set by the tokenizer; --vocab_size is the BPE target (data)
            assert f.name not in seen, f"config field {f.name} defined twice"
            seen.add(f.name)
            kind = {bool: parse_bool}.get(type(f.default), type(f.default))
            p.add_argument(f"--{f.name}", type=kind, default=None, help=f"[{group}] default {f.default}")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in eval.json
    try:
        if args.rl_mix is not None:
            data.parse_mix(args.rl_mix)
        if args.corpus_mix is not None:
            data.parse_mix(args.corpus_mix)
    except ValueError as e:
        p.error(str(e))
    return args


def parse_bool(s):
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected one of true/false/1/0/yes/no, got {s!r}")


def pick_device(choice):
    """Device and dtype, chosen in one place, with the reason printed."""
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
    dtype = torch.bfloat16 if choice == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    print(f"device: {choice} ({why}); compute dtype: {str(dtype).split('.')[-1]}"
          f"{' (bf16 autocast on CUDA only)' if dtype == torch.bfloat16 else ''}")
    return choice, dtype


def build_configs(args, device, saved=None):
    """Dataclass defaults <- preset <- saved checkpoint config <- explicit flags."""
    preset = args.preset or ("gpu" if device == "cuda" else "cpu")
    cfgs = {}
    for group, cls in config_classes().items():
        vals = {f.name: f.default for f in dataclasses.fields(cls)}
        vals.update({k: v for k, v in PRESETS[preset].items() if k in vals})
        if saved and group in saved:
            vals.update({k: v for k, v in saved[group].items() if k in vals})
        vals.update({k: getattr(args, k) for k in vals if getattr(args, k, None) is not None
                     and (group, k) != ("model", "vocab_size")})
        cfgs[group] = cls(**vals)
    return preset, cfgs


# ----------------------------------------------------------------------------------------------
# Checkpoints: plain tensors, numbers and strings only, so torch.load(weights_only=True) works.

def save_checkpoint(path, model, optimizer, step, cfgs, enc, extra=None):
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
        "step": step, "configs": {g: dataclasses.asdict(c) for g, c in cfgs.items()},
        "tokenizer": data.ranks_to_text(enc._mergeable_ranks),
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
        **(extra or {}),
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one
    data.save_tokenizer(enc, os.path.join(os.path.dirname(path), "tokenizer.tiktoken"))


def load_checkpoint(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["enc"] = data.make_encoding(data.ranks_from_text(ckpt["tokenizer"]))
    return ckpt


def restore_rng(ckpt):
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate((3, tuple(ckpt["rng"]["python"]), None))


def build_model(cfgs, enc, device, fp8_recipe):
    cfgs["model"].vocab_size = enc.n_vocab
    model = GPT(cfgs["model"]).to(device)
    if fp8_recipe != "off":
        import fp8
        fp8.convert_to_float8(model, fp8_recipe)
    return model


def resolve_fp8(choice, device):
    """--fp8: 'auto' is blockwise on a Hopper GPU that can run it, off elsewhere. An explicit
    recipe the accelerator cannot run exits 2; on the CPU every recipe runs its CPU path."""
    if choice == "off" or (choice == "auto" and device == "cpu"):
        return "off"
    import fp8
    if choice == "auto":
        return fp8.default_recipe(device)
    ok, why = fp8.fp8_supported(device, choice)
    if not ok:
        print(f"error: --fp8 {choice} cannot run on {device}: {why} (valid here: off)", file=sys.stderr)
        sys.exit(2)
    if device == "cpu":
        print(f"fp8: {choice} on cpu runs the CPU/emulated path (for correctness, not speed)")
    return choice


def log_jsonl(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def progress(total, initial, quiet, desc):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=quiet, desc=desc, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------
# Evaluation on the held-out problems, with the R1-Zero template.

def evaluate(model, enc, problems, max_new_tokens, prefix="", batch=100):
    """Greedy responses to the held-out prompts (optionally forced to begin with `prefix`),
    scored with the rule rewards. Returns the eval.json fields and the raw completions."""
    import rewards
    model.eval()
    texts, ntoks = [], []
    for i in range(0, len(problems), batch):
        chunk = problems[i:i + batch]
        prompts = [enc.encode_ordinary(p.prompt + prefix) for p in chunk]
        outs = model.generate(prompts, max_new_tokens, enc.eot_token, temperature=0)
        for o in outs:
            ntoks.append(len(o))
            texts.append(prefix + enc.decode([t for t in o if t != enc.eot_token]))
    s = rewards.score_batch(texts, [p.answer for p in problems], [p.lang for p in problems], terms=("accuracy", "format"))
    res = {"accuracy": mean(s["accuracy"]), "format_rate": mean(s["format"]),
           "lang_consistency": mean(s["lang"]), "mean_response_tokens": mean(ntoks), "n": len(problems)}
    for kind in sorted({(p.kind, p.difficulty) for p in problems}):
        res[f"accuracy_{kind[0]}{kind[1]}"] = mean([a for a, p in zip(s["accuracy"], problems) if (p.kind, p.difficulty) == kind])
    model.train()
    return res, texts


def mean(xs):
    xs = list(xs)
    return sum(xs) / max(1, len(xs))


def heldout_signature(cfgs):
    """What defines the held-out set and its evaluation, to tell whether two evals are comparable."""
    d = cfgs["data"]
    return f"seed={d.seed} n={d.n_heldout} mix={d.rl_mix} new_tokens={cfgs['train'].eval_new_tokens}"


def full_eval(model, enc, cfgs):
    """eval.json: greedy held-out results, plus the reasoning gap (forced bare vs forced chain)."""
    problems = data.heldout_problems(cfgs["data"])
    n = cfgs["train"].eval_new_tokens
    res, texts = evaluate(model, enc, problems, n)
    bare, _ = evaluate(model, enc, problems, n, prefix=" <think> " + data.BARE_OPENER["en"])
    chain, _ = evaluate(model, enc, problems, n, prefix=" <think> " + data.CHAIN_OPENER["en"])
    res["accuracy_forced_bare"], res["accuracy_forced_chain"] = bare["accuracy"], chain["accuracy"]
    res["heldout_set"] = heldout_signature(cfgs)
    res["examples"] = [{"prompt": p.question, "answer": p.answer, "response": t} for p, t in zip(problems[:5], texts[:5])]
    return res


# ----------------------------------------------------------------------------------------------
# Stage: pretrain. Next-token prediction on the corpus, held-out loss on held-out documents.

def lr_at(step, t):
    """Linear warmup, then cosine decay to min_lr_frac of the peak."""
    if step < t.warmup_iters:
        return t.lr * (step + 1) / t.warmup_iters
    prog = min(1.0, (step - t.warmup_iters) / max(1, t.max_iters - t.warmup_iters))
    return t.lr * (t.min_lr_frac + (1 - t.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))


def make_optimizer(model, lr, t, device):
    """AdamW; decay on matrices (and the stacked expert weights), none on gains and vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, t.beta2), fused=device == "cuda")


def stage_pretrain(args, device, dtype):
    out = os.path.join(args.out_dir, "pretrain")
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "ckpt.pt")
    saved = load_checkpoint(ckpt_path) if args.resume and os.path.exists(ckpt_path) else None
    if args.resume and saved is None:
        print(f"--resume: no checkpoint at {ckpt_path}, starting fresh")
    preset, cfgs = build_configs(args, device, saved and saved["configs"])
    t, dc = cfgs["train"], cfgs["data"]
    print(f"stage pretrain, preset {preset}, out {out}")
    t_start = time.time()
    torch.manual_seed(t.train_seed)

    # ---- data: the corpus, the tokenizer (trained here unless resuming), the token stream
    t0 = time.time()
    corpus = data.build_corpus(dc)
    enc = saved["enc"] if saved else data.build_tokenizer(dc, corpus)
    train_ids = torch.tensor(data.encode_docs(enc, corpus), dtype=torch.long)
    val_rng = random.Random(dc.seed + 7)  # one stream: every held-out document is drawn afresh
    val_docs = [data.make_document(val_rng, dc, k, d, split="heldout")  # a fixed set: 64 per kind
                for k, d in data.parse_mix(dc.rl_mix) for _ in range(64)]
    val_ids = torch.tensor(data.encode_docs(enc, val_docs), dtype=torch.long)
    print(f"data: {len(corpus)} docs, {len(train_ids):,} tokens, vocab {enc.n_vocab} ({time.time() - t0:.1f}s)")

    # ---- model and optimizer
    fp8_recipe = resolve_fp8(args.fp8, device)
    model = build_model(cfgs, enc, device, fp8_recipe)
    m = cfgs["model"]
    print(f"model: {m.n_layer} layers, d={m.n_embd}, {model.n_params() / 1e6:.2f}M params "
          f"({model.n_params(active=True) / 1e6:.2f}M active), fp8 {fp8_recipe}")
    opt = make_optimizer(model, t.lr, t, device)
    gen = torch.Generator().manual_seed(t.train_seed)  # picks the batches; saved so resume is exact
    step = 0
    if saved:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["gen"])
        restore_rng(saved)
        step = saved["step"]
        print(f"resuming from step {step}")
    elif os.path.exists(os.path.join(out, "metrics.jsonl")):
        os.remove(os.path.join(out, "metrics.jsonl"))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.autocast("cpu", enabled=False)
    T = m.block_size

    def get_batch(ids, g):
        ix = torch.randint(len(ids) - T - 1, (t.batch_size,), generator=g)
        x = torch.stack([ids[i:i + T] for i in ix])
        y = torch.stack([ids[i + 1:i + T + 1] for i in ix])
        return x.to(device), y.to(device)

    @torch.no_grad()
    def heldout_loss():
        """Mean loss over every held-out token, in non-overlapping windows of T (the same
        tokens for every run, so two runs' losses differ only by their models)."""
        model.eval()
        n = (len(val_ids) - 1) // T
        xs, ys = val_ids[:n * T].view(n, T), val_ids[1:n * T + 1].view(n, T)  # (n, T)
        total = 0.0
        for i in range(0, n, t.batch_size):
            xb, yb = xs[i:i + t.batch_size], ys[i:i + t.batch_size]  # (b, T), b <= batch_size
            with autocast:
                _, loss = model(xb.to(device), yb.to(device))
            total += loss.item() * len(xb)
        model.train()
        return total / n

    # ---- the loop
    import moe
    bar = progress(t.max_iters, step, args.quiet, "pretrain")
    first_loss, recent = None, collections.deque(maxlen=50)  # the last 50 steps' losses (since a resume)
    t_last, tok_since = time.time(), 0
    model.train()
    while step < t.max_iters:
        lr = lr_at(step, t)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(t.grad_accum):
            x, y = get_batch(train_ids, gen)
            with autocast:
                _, loss = model(x, y)
            (loss / t.grad_accum).backward()
            loss_sum += loss.item() / t.grad_accum
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        moe.update_bias(model)  # DeepSeek-V3 §2.1.2: aux-loss-free balancing, once per optimizer step
        step += 1
        tok_since += t.batch_size * t.grad_accum * T
        first_loss = first_loss if first_loss is not None else loss_sum
        recent.append(loss_sum)
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_iters:
            dt = time.time() - t_last
            row = {"step": step, "loss": loss_sum, "lr": lr, "grad_norm": float(norm), "tok_s": tok_since / dt}
            row.update(moe.load_stats(model))
            if step % t.eval_every == 0 or step == t.max_iters:
                row["heldout_loss"] = heldout_loss()
            log_jsonl(os.path.join(out, "metrics.jsonl"), row)
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{row['tok_s']:.0f}",
                            **({"load": f"{row['moe.max_mean']:.2f}"} if "moe.max_mean" in row else {}))
            t_last, tok_since = time.time(), 0
        if step % t.ckpt_every == 0 or step == t.max_iters:
            save_checkpoint(ckpt_path, model, opt, step, cfgs, enc, {"gen": gen.get_state()})
    bar.close()

    # ---- evaluation of the base model on the held-out set
    res = full_eval(model, enc, cfgs)
    res.update(heldout_loss=heldout_loss(), first_loss=first_loss, final_loss=loss_sum,
               final_loss_avg50=mean(recent) if recent else None, preset=preset, argv=args.argv,
               wall_s=time.time() - t_start)
    res.update(moe.load_stats(model))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(res, f, indent=1, ensure_ascii=False)
    print(f"base model on {res['n']} held-out problems: accuracy {res['accuracy']:.1%}, "
          f"format {res['format_rate']:.1%}, {res['mean_response_tokens']:.1f} response tokens; "
          f"forced bare {res['accuracy_forced_bare']:.1%} vs forced chain {res['accuracy_forced_chain']:.1%}")
    return model, enc, cfgs


# ----------------------------------------------------------------------------------------------
# Stage: zero. R1-Zero (R1 paper §2.2): GRPO from the base model, accuracy + format rewards only.

def stage_zero(args, device, dtype):
    import grpo
    import rewards
    out = os.path.join(args.out_dir, "zero")
    os.makedirs(out, exist_ok=True)
    base_path = os.path.join(args.out_dir, "pretrain", "ckpt.pt")
    if not os.path.exists(base_path):
        print(f"no base model at {base_path}: running --stage pretrain first")
        pre = argparse.Namespace(**{**vars(args), "stage": "pretrain", "resume": False})
        stage_pretrain(pre, device, dtype)
    base = load_checkpoint(base_path)
    ckpt_path = os.path.join(out, "ckpt.pt")
    saved = load_checkpoint(ckpt_path) if args.resume and os.path.exists(ckpt_path) else None
    # the model, data and tokenizer are the base's; RL settings come from flags and the preset
    preset, cfgs = build_configs(args, device, {**base["configs"], **(saved["configs"] if saved else {})})
    cfgs["model"] = GPTConfig(**base["configs"]["model"])
    rc, enc = cfgs["rl"], base["enc"]
    t_start = time.time()
    print(f"stage zero, preset {preset}, out {out}: {rc.rl_steps} steps x {rc.prompts_per_step} prompts x G={rc.group_size}")
    torch.manual_seed(rc.rl_seed)
    model = build_model(cfgs, enc, device, resolve_fp8(args.fp8, device))
    model.load_state_dict(base["model"])
    ref = grpo.make_reference(model) if rc.beta > 0 else None
    opt = make_optimizer(model, rc.rl_lr, cfgs["train"], device)
    gen = torch.Generator().manual_seed(rc.rl_seed)
    step, history = 0, []
    if saved:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["gen"])
        restore_rng(saved)
        step, history = saved["step"], json.loads(saved["history"])
        print(f"resuming from step {step}")
    elif os.path.exists(os.path.join(out, "metrics.jsonl")):
        os.remove(os.path.join(out, "metrics.jsonl"))

    def score(texts, problems):
        return rewards.score_batch(texts, [p.answer for p in problems], [p.lang for p in problems], terms=("accuracy", "format"))

    def prompts_for(k, salt=0):  # RL prompts: the RL split only, never the held-out one
        return data.rl_problems(cfgs["data"], rc.prompts_per_step, seed=rc.rl_seed * 100_003 + k * 7 + salt)

    # ---- the base model on the held-out set (its own eval.json, recomputed here for the table)
    base_eval = os.path.join(args.out_dir, "pretrain", "eval.json")
    before = json.loads(saved["before"]) if saved else None
    if before is None and os.path.exists(base_eval):  # reuse the base's eval if it is of the same set
        before = json.load(open(base_eval))
        if before.get("heldout_set") != heldout_signature(cfgs):
            before = None
    before = before or full_eval(model, enc, cfgs)
    print(f"base: held-out accuracy {before['accuracy']:.1%}, format {before['format_rate']:.1%}, "
          f"{before['mean_response_tokens']:.1f} tokens")
    bar = progress(rc.rl_steps, step, args.quiet, "zero")
    while step < rc.rl_steps:
        for g in opt.param_groups:
            g["lr"] = rc.rl_lr * min(1.0, (step + 1) / max(1, rc.rl_warmup))
        st = grpo.grpo_step(model, ref, opt, enc, prompts_for(step), rc, score, gen,
                            refill=lambda n: prompts_for(step, salt=1)[:n])
        step += 1
        example = st.pop("example")
        row = {"step": step, **st}
        if step % rc.rl_eval_every == 0 and step < rc.rl_steps:
            ev, _ = evaluate(model, enc, data.heldout_problems(cfgs["data"]), cfgs["train"].eval_new_tokens)
            row.update({f"heldout_{k}": v for k, v in ev.items() if k in ("accuracy", "format_rate", "mean_response_tokens")})
        if rc.ref_sync_every and step % rc.ref_sync_every == 0 and ref is not None:
            ref.load_state_dict(model.state_dict())
        history.append({k: row[k] for k in ("step", "reward", "accuracy", "format_rate", "response_tokens")})
        log_jsonl(os.path.join(out, "metrics.jsonl"), row)
        bar.update(1)
        bar.set_postfix(r=f"{st['reward']:.2f}", acc=f"{st['accuracy']:.2f}", fmt=f"{st['format_rate']:.2f}",
                        len=f"{st['response_tokens']:.0f}", kl=f"{st['kl']:.3f}", zv=f"{st['zero_var_frac']:.2f}",
                        gen=f"{st['t_generate'] / st['step_s']:.0%}")
        if step % rc.rl_ckpt_every == 0 or step == rc.rl_steps:
            save_checkpoint(ckpt_path, model, opt, step, cfgs, enc,
                            {"gen": gen.get_state(), "history": json.dumps(history), "before": json.dumps(before)})
    bar.close()
    print("example response:", repr(example[:300]))

    # ---- after: held-out evaluation, the before/after table and the curves
    after = full_eval(model, enc, cfgs)
    first = history[0] if history else {}
    after.update(base=before, wall_s=time.time() - t_start, first_step_response_tokens=first.get("response_tokens"),
                 last_step_response_tokens=history[-1]["response_tokens"] if history else None)
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(after, f, indent=1, ensure_ascii=False)
    print(f"\n{'held-out (' + str(after['n']) + ' problems)':<28}{'base':>10}{'zero':>10}")
    for k in ("accuracy", "format_rate", "mean_response_tokens", "accuracy_forced_bare", "accuracy_forced_chain"):
        fmt = "{:>10.1f}" if k == "mean_response_tokens" else "{:>10.1%}"
        print(f"{k:<28}" + fmt.format(before[k]) + fmt.format(after[k]))
    plot_curves(history, os.path.join(out, "curves.png"))


def sparkline(xs, width=60):
    bars = "▁▂▃▄▅▆▇█"
    xs = [xs[int(i * len(xs) / width)] for i in range(min(width, len(xs)))] if len(xs) > width else xs
    lo, hi = min(xs), max(xs)
    return "".join(bars[int((x - lo) / (hi - lo + 1e-12) * (len(bars) - 1))] for x in xs) + f"  [{lo:.2f} .. {hi:.2f}]"


def plot_curves(history, path):
    """curves.png with reward, accuracy and response length, or text sparklines without matplotlib."""
    keys = ("reward", "accuracy", "format_rate", "response_tokens")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: curves as sparklines instead of curves.png")
        for k in keys:
            print(f"{k:>16} {sparkline([h[k] for h in history])}")
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, k in zip(axes, keys):
        ax.plot([h["step"] for h in history], [h[k] for h in history])
        ax.set_title(k)
        ax.set_xlabel("GRPO step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv=None):
    args = parse_args(argv)
    device, dtype = pick_device(args.device)
    if args.stage == "pretrain":
        stage_pretrain(args, device, dtype)
    elif args.stage == "zero":
        stage_zero(args, device, dtype)


if __name__ == "__main__":
    main()
