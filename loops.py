"""
The two training loops of nanoR1, which train.py's stages run: a supervised loop (pretrain,
sft1, sft2, student_base, distill; a pretrain is an SFT with nothing masked) and a GRPO loop
(zero, rl1, rl1_nolang, rl2, student_zero), with their optimizer, learning-rate schedule,
batches and fault checks. Not run on its own: `python train.py --stage ...` drives them.
"""
import collections
import math
import sys
import time

import torch

import dist
import evaluate
import grpo
import moe


# ----------------------------------------------------------------------------------------------
# The optimizer, the schedule and the fault checks of both loops

def make_optimizer(model, lr, train_cfg, device):
    """AdamW; decay on matrices (and the stacked expert weights), none on gains and vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train_cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, train_cfg.beta2), fused=device == "cuda")
    moe.attach_bias_update(opt, model)  # DeepSeek-V3 §2.1.2: aux-loss-free balancing after every step
    return opt


def compiled(model, x, y, autocast):
    """torch.compile(model) for the pretrain's training step if it compiles here, else model.
    The pretrain's batches all have one shape, so it compiles once, here, on a first forward and
    backward of (x, y) whose gradients and expert counts are then cleared. From then on each step
    runs fused kernels: the same function as eager, in another float order, and 1.3x faster on 2
    CPU cores (bench.py model: train_tok_s against train_tok_s_eager; README, Benchmarks).
    Without a working compiler (inductor needs a C++ toolchain on a CPU) one line says why and
    training runs eager."""
    t0 = time.time()
    fast = torch.compile(model)
    try:
        with autocast:
            _, loss = fast(x, y)
        loss.backward()
        print(f"compile: the training step compiled in {time.time() - t0:.1f}s")
    except Exception as e:  # a missing toolchain, an op the compiler does not take, ...
        print(f"compile: off ({type(e).__name__}: {str(e).strip().splitlines()[0][:160]}); training runs eager",
              file=sys.stderr)
        fast = model
    model.zero_grad(set_to_none=True)
    for m in moe._moe_layers(model):  # the compiling step's expert counts: not a training step's
        m.tokens_per_expert.zero_()
    return fast


def lr_at(step, peak, warmup, total, min_frac):
    """Linear warmup, then cosine decay to min_frac of the peak (min_frac = 1: constant)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def after_step(stepped, bad, done, train_cfg, save):
    """The fault checks after each optimizer step of either loop. Returns the count of
    non-finite steps in a row. Too many in a row, or a SIGTERM / SIGINT, saves and stops."""
    bad = 0 if stepped else bad + 1
    if bad >= train_cfg.max_bad_steps:
        save(done)
        print(f"error: {bad} steps in a row had a non-finite loss or gradient norm (each skipped); stopped "
              f"after step {done}. ckpt.pt holds the last good weights; lower the learning rate and rerun",
              file=sys.stderr)
        sys.exit(1)
    signum = dist.stop_requested()
    if signum:
        save(done)
        raise dist.Stopped(signum, done)
    return bad


# ----------------------------------------------------------------------------------------------
# The supervised loop: pretrain, sft1, sft2, student_base, distill. batch_at(step, micro) ->
# (x, y), y = -1 where no loss is taken (prompt tokens, padding), so the pretrain is the case with nothing masked. The
# step's loss is the mean over its target tokens, all micro-batches and all ranks together.

def train_sft(model, opt, batch_at, n_steps, lr_of, train_cfg, run, autocast, heldout_loss=None, save=None):
    first_loss, recent = None, collections.deque(maxlen=50)  # the last 50 steps' losses (since a resume)
    t_last, tok_since, pos_since, bad, skipped = time.time(), 0, 0, 0, 0
    model.train()
    for step in range(run.step, n_steps):
        lr = lr_of(step)
        for g in opt.param_groups:
            g["lr"] = lr
        micros = [[t[dist.my_share(len(t))] for t in batch_at(step, m)] for m in range(train_cfg.grad_accum)]
        n_tok = dist.total(sum(int((y >= 0).sum()) for _, y in micros))  # the step's targets, every rank
        loss_sum = 0.0
        for m, (x, y) in enumerate(micros):
            with dist.no_sync(model, last=m == len(micros) - 1):
                with autocast:
                    _, loss = model(x, y)  # mean over this micro-batch's targets
                share = int((y >= 0).sum()) / n_tok
                (loss * (share * dist.world())).backward()  # DDP then averages over the N ranks
            loss_sum += loss.item() * share
            tok_since += int((y >= 0).sum())
            pos_since += x.numel()  # positions through forward and backward, padding included
        loss_sum = dist.total(loss_sum)
        norm, stepped = dist.clip_and_step(model, opt, train_cfg.grad_clip)
        skipped += not stepped
        done = step + 1
        first_loss = loss_sum if first_loss is None else first_loss
        recent.append(loss_sum)
        run.bar.update(1)
        if done % train_cfg.log_every == 0 or done == n_steps:
            row = {"step": done, "loss": loss_sum, "lr": lr, "grad_norm": norm, "skipped": skipped,
                   "tok_s": dist.total(tok_since) / (time.time() - t_last), "tokens_trained": dist.total(pos_since)}
            row.update(moe.load_stats(model))
            if heldout_loss is not None and (done % train_cfg.eval_every == 0 or done == n_steps):
                row["heldout_loss"] = heldout_loss()
            run.log(row)
            run.bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{row['tok_s']:.0f}",
                                **({"load": f"{row['moe.max_mean']:.2f}"} if "moe.max_mean" in row else {}))
            t_last, tok_since, pos_since, skipped = time.time(), 0, 0, 0
        if done % train_cfg.ckpt_every == 0 or done == n_steps:
            save(done)
        bad = after_step(stepped, bad, done, train_cfg, save)
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
# The GRPO loop: zero, rl1, rl1_nolang, rl2, student_zero. prompts_at(step, salt) -> its problems.

def train_grpo(model, ref, opt, enc, prompts_at, score_fn, rl_cfg, train_cfg, n_steps, run, autocast, heldout_eval,
               save):
    bad, mine = 0, dist.my_share(rl_cfg.prompts_per_step)  # whole groups: a rank rolls out its prompts
    for step in range(run.step, n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, rl_cfg.rl_lr, rl_cfg.rl_warmup, n_steps, 1.0)
        gen = torch.Generator().manual_seed(rl_cfg.rl_seed * 1_000_003 + step)  # the step's samples
        with autocast:
            st = grpo.grpo_step(model, ref, opt, enc, prompts_at(step)[mine], rl_cfg, score_fn, gen,
                                refill=lambda n: prompts_at(step, salt=1 + dist.rank())[:n],
                                grad_clip=train_cfg.grad_clip)
        done = step + 1
        example = st.pop("example")
        row = {"step": done, **st}
        if done % rl_cfg.rl_eval_every == 0 and done < n_steps:
            row.update({f"heldout_{k}": v for k, v in heldout_eval().items()})
        if rl_cfg.ref_sync_every and ref is not None and done % rl_cfg.ref_sync_every == 0:
            ref.load_state_dict(getattr(model, "module", model).state_dict())
        run.log(row)
        run.bar.update(1)
        run.bar.set_postfix(r=f"{st['reward']:.2f}", acc=f"{st['accuracy']:.2f}", fmt=f"{st['format_rate']:.2f}",
                            lang=f"{st['lang']:.2f}", len=f"{st['response_tokens']:.0f}", kl=f"{st['kl']:.3f}",
                            zv=f"{st['zero_var_frac']:.2f}")
        if done % rl_cfg.rl_ckpt_every == 0 or done == n_steps:
            save(done)
        bad = after_step(st["skipped"] == 0, bad, done, train_cfg, save)
    if run.step < n_steps:
        print("example response:", repr(example[:300]))
