"""
GRPO: Group Relative Policy Optimization, the RL algorithm behind DeepSeek-R1-Zero and R1.

Run it through the trainer: `python train.py --stage zero` (R1-Zero: GRPO from the base model
with accuracy + format rewards only), or rl1 / rl2 of the R1 pipeline. This file holds the
pieces: group-relative advantages, the clipped objective with its KL penalty, per-token
log-probs and masks, and (at the bottom) the rollouts, the update step and the rejection
sampling of sft2 (R1 §2.3.3), which reuses the rollouts. The loss is a pure function of
tensors, tested on its own.

Why no critic. PPO estimates each token's advantage with a learned value function as large as
the policy. GRPO (DeepSeekMath §4.1, R1 paper §2.2.1) drops it: for each prompt q it samples a
group of G completions o_1..o_G, scores each with a rule reward r_i, and uses the group itself
as the baseline (R1 eq. 3):   A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G).
Every token of o_i gets the same A_i ("outcome supervision", DeepSeekMath §4.1.2). A group
whose rewards are all equal (all right or all wrong) has A = 0 and teaches nothing; we count
those groups, since their share says whether the prompts are at the right difficulty.

The objective (R1 eq. 1, per token as in DeepSeekMath eq. 3). With the ratio to the policy
that sampled the group, rho = pi(o_t) / pi_old(o_t), each token contributes
    min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)  -  beta * KL_t
The clip (PPO's) removes the incentive to move rho outside [1 - eps, 1 + eps] in the direction
A favours, so several inner updates on one batch of rollouts stay near the sampling policy.
At the first inner update pi == pi_old, rho == 1 and the gradient is plain REINFORCE, A * grad
log pi. KL_t keeps the policy near the frozen reference (the starting model) and uses the k3
estimator (R1 eq. 2, Schulman's "approximating KL"):
    KL_t = pi_ref/pi - log(pi_ref/pi) - 1 = exp(ref - logp) - (ref - logp) - 1  >= 0,
unbiased for KL(pi || pi_ref) on samples from pi, and never negative. As in the paper it is
added to the loss, not subtracted from the reward (PPO-RLHF style), so it does not leak into
the advantages.

Loss aggregation, and the length bias. How per-token terms become one number decides how much
each token weighs:
  seq-mean-token-mean      (R1 eq. 1 / DeepSeekMath eq. 3) mean over tokens of each sequence,
                           then over sequences: a token of an L-token answer weighs 1/L. For
                           A > 0 short answers get the larger push; for A < 0 long wrong
                           answers are penalised less per token, so wrong answers drift long.
  token-mean               (DAPO §3.3) sum over every token of the batch / number of tokens:
                           every token weighs the same, whatever its sequence's length; the
                           weight still depends on the batch's total length.
  seq-mean-token-sum-norm  (Dr. GRPO, Liu et al. 2025 §3) token sums divided by a constant
                           max_tokens (the generation budget), then mean over sequences: no
                           length-dependent weight at all.
Under gradient accumulation each micro-batch must be normalised by the WHOLE batch's sequence
count and token count (the `n_seqs` / `n_tokens` arguments), so that the micro-batch losses sum
exactly to the full-batch loss; normalising per micro-batch would silently reweight tokens.

Two later fixes, available as options. DAPO §3.1 "clip-higher": a larger upper clip
(eps_high = 0.28 against eps = 0.2) lets unlikely tokens with A > 0 grow faster, which keeps
entropy from collapsing (`clip_eps_high`). Dr. GRPO §3 drops the division by the group std: it
up-weights groups that are nearly all right or all wrong, a question-difficulty bias
(`scale_std=False`). It also amplifies a dense reward term: in a group that is all wrong, the
std of a language-consistency score that wobbles by 0.02 scales that wobble up to a full-size
advantage, so the R1 pipeline's rl1 and rl2 run without the division (train.py's stage table
has the measurement). DAPO's overlong filtering (mask truncated completions) is
`completion_mask(..., mask_truncated=True)`, which `pack` applies.

Where the time goes (bench.py grpo). A step samples, scores and updates, and each part is
cut to the tokens that matter, without changing a value. The G completions of a prompt share
its tokens, so every forward computes each distinct prompt once: sampling prefills it once
(model.generate), and scoring runs it once (`prefill`) and lets each of its rows read its keys
and values (`completion_logprobs`), which halves the positions a pass runs at this size.
Generation drops finished rows from the decode batch; scoring sorts rows by completion length
into micro-batches trimmed to their own longest row and runs the output head and one
log-softmax (log-probs and entropy together) on completion positions only; with mu = 1 the
old policy's forward is skipped. The update keeps micro-batches: each reads detached copies of
the prompts' keys and values, where its gradients pile up, and the last micro-batch carries
them back through the prefill inside its own backward, so that one backward (DDP's
all-reduce) covers every gradient.

Where this code deliberately differs from the paper:
- R1 eq. 1 writes the ratio per whole output; we use per-token ratios and clipping, as in
  DeepSeekMath eq. 3 and every public implementation.
- std is the sample std (Bessel's correction, as TRL does) plus eps = 1e-4 in the denominator
  (the paper has neither detail); groups of equal rewards get an advantage of exactly 0.
- The end-of-text token is part of the completion and is trained: it teaches the model to stop.
- beta defaults to 0.04 (DeepSeekMath §4.2); `beta=0` skips the reference model entirely.
- Zero-advantage groups stay in the batch and count in the sequence mean (the paper's 1/G);
  dropping and refilling them (DAPO dynamic sampling) is an option of the step, off by default.
"""

import copy
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

import dist
import reflect
from model import KVCache, attention_mask, distinct

LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


@dataclass
class RLConfig:
    rl_steps: int = 120           # GRPO steps of the zero stage (each: one batch of rollouts, mu passes)
    rl1_steps: int = 60           # GRPO steps of rl1 (and its ablation): it starts from a chain already
    rl2_steps: int = 60           # GRPO steps of rl2
    student_rl_steps: int = 240   # GRPO steps of student_zero, the control of distill (at least its compute)
    prompts_per_step: int = 16    # distinct prompts per step
    group_size: int = 8           # G completions per prompt (R1 uses 16)
    max_new_tokens: int = 128     # generation budget per completion
    temperature: float = 1.0      # sampling temperature, also used when scoring log-probs
    rl_lr: float = 1e-4           # policy learning rate (far below pretraining's)
    rl_warmup: int = 5            # linear warmup steps of the policy learning rate
    mu: int = 1                   # inner passes over each batch of rollouts (R1: 1)
    n_minibatches: int = 1        # optimizer steps per pass
    micro_batch: int = 16         # sequences per forward/backward (grad accumulation; similar lengths)
    clip_eps: float = 0.2         # PPO clip (R1 §2.2.1)
    clip_eps_high: float = 0.0    # DAPO clip-higher upper bound (0 = same as clip_eps)
    beta: float = 0.01            # KL weight to the reference (R1 eq. 1); 0 skips the reference
    loss_agg: str = "seq-mean-token-mean"  # one of LOSS_AGGS (the essay above)
    scale_std: bool = True        # divide advantages by the group std (False = Dr. GRPO)
    mask_truncated: bool = False  # DAPO overlong filtering
    dynamic_sampling: bool = False  # DAPO: replace zero-variance groups with fresh prompts (one refill)
    ref_sync_every: int = 0       # copy the policy into the reference every N steps (0 = never)
    lang_weight: float = 1.0      # weight of the language-consistency reward where a stage uses it (R1 §2.3.2)
    general_frac: float = 0.25    # share of general-task prompts in rl2's batches (R1 §2.3.4)
    needless_penalty: float = 0.5  # rl2: reward lost by a chain of thought on a general prompt
    rl_eval_every: int = 40       # held-out evaluation every this many steps
    rl_ckpt_every: int = 25       # checkpoint every this many steps
    rl_seed: int = 7              # seeds the prompt order and the sampling

# -----------------------------------------------------------------------------
# advantages


def _groups(rewards, group_size):
    # rewards (B,) with the G completions of a prompt adjacent -> (B/G, G)
    if rewards.dim() != 1 or group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be (B,) with B a multiple of group_size >= 2, "
                         f"got shape {tuple(rewards.shape)} and group_size {group_size}")
    return rewards.view(-1, group_size)


def _zero_var(groups):
    # compare max and min rather than std == 0: the float mean of equal values need not equal them
    return groups.amax(dim=1) == groups.amin(dim=1)  # (B/G,)


def group_advantages(rewards, group_size, scale_std=True, eps=1e-4):
    """Group-relative advantages (R1 eq. 3): (r - group mean) / (group std + eps), shape (B,).
    rewards (B,) hold the G = group_size completions of each prompt next to each other.
    scale_std=False is Dr. GRPO's unscaled r - mean. Equal-reward groups get exactly 0."""
    g = _groups(rewards, group_size).to(torch.float32)  # (B/G, G)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale_std:
        adv = adv / (g.std(dim=1, keepdim=True) + eps)  # sample std, as TRL
    adv = torch.where(_zero_var(g)[:, None], torch.zeros_like(adv), adv)
    return adv.reshape(-1)  # (B,)


def zero_variance_groups(rewards, group_size):
    """How many groups have all-equal rewards (and so no learning signal)."""
    return int(_zero_var(_groups(rewards, group_size)).sum())


# -----------------------------------------------------------------------------
# the loss


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, clip_eps_high=None,
              beta=0.04, loss_agg="seq-mean-token-mean", max_tokens=None,
              n_seqs=None, n_tokens=None, entropy=None):
    """The GRPO loss (to minimise) and detached stats.
    logp, old_logp, ref_logp, mask, entropy: (B, T) per completion token; advantages: (B,).
    old_logp / ref_logp are treated as constants. ref_logp may be None when beta == 0.
    clip_eps_high: DAPO's upper clip (defaults to clip_eps). max_tokens: the constant of
    seq-mean-token-sum-norm (required there). n_seqs / n_tokens: the whole batch's sequence
    count and mask sum when this is a micro-batch (default: this batch's own)."""
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}; got {loss_agg!r}")
    if ref_logp is None and beta != 0:
        raise ValueError("ref_logp is needed when beta != 0")
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = mask.to(logp.dtype)
    A = advantages.to(logp.dtype)[:, None]  # (B, 1): one advantage for every token of o_i

    # clipped surrogate (R1 eq. 1, DeepSeekMath eq. 3), per token
    ratio = torch.exp(logp - old_logp.detach())  # (B, T)
    unclipped = ratio * A
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + eps_high) * A  # DAPO §3.1 when eps_high > eps
    objective = torch.minimum(unclipped, clipped)

    # k3 KL to the frozen reference (R1 eq. 2), in the loss rather than the reward
    if ref_logp is not None:
        d = ref_logp.detach() - logp
        kl = torch.exp(d) - d - 1  # (B, T), >= 0
        if beta != 0:
            objective = objective - beta * kl
    else:
        kl = torch.zeros_like(logp)

    loss = -_aggregate(objective, mask, loss_agg, max_tokens, n_seqs, n_tokens)

    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        mean = lambda x: float((x * mask).sum() / n)  # masked mean over this batch
        stats = {
            "clip_frac": mean((clipped < unclipped).to(mask.dtype)),  # clipped branch won
            "kl": mean(kl),
            "ratio": mean(ratio),
            "tokens": float(mask.sum()),  # to weight the stats when averaging micro-batches
        }
        if entropy is not None:
            stats["entropy"] = mean(entropy)
    return loss, stats


def _aggregate(x, mask, loss_agg, max_tokens, n_seqs, n_tokens):
    # x, mask (B, T) -> scalar. Normalisers come from the whole batch when given, so that
    # micro-batch results add up to the full-batch value exactly.
    B = x.shape[0]
    n_seqs = B if n_seqs is None else n_seqs
    tok_sum = (x * mask).sum(dim=1)  # (B,)
    if loss_agg == "seq-mean-token-mean":
        # per-sequence length is local to the row; a fully masked row contributes 0
        return (tok_sum / mask.sum(dim=1).clamp(min=1)).sum() / n_seqs
    if loss_agg == "token-mean":
        n_tokens = mask.sum().clamp(min=1) if n_tokens is None else n_tokens
        return tok_sum.sum() / n_tokens
    if max_tokens is None:  # seq-mean-token-sum-norm
        raise ValueError("loss_agg='seq-mean-token-sum-norm' needs max_tokens "
                         "(the generation budget)")
    return tok_sum.sum() / (max_tokens * n_seqs)


# -----------------------------------------------------------------------------
# log-probs, entropy and masks


def token_logprobs(logits, targets, temperature=1.0, with_entropy=False):
    """log pi(target) under softmax(logits / temperature): (..., V), (...) -> (...). Score with
    the temperature you sampled with, or the ratio and KL measure the wrong policy.
    with_entropy also returns the entropy of that distribution (no grad), from the same softmax."""
    # fp32: bf16 log-probs are too coarse for a ratio that should be exactly 1 at the first update
    logits = logits.float() if temperature == 1 else logits.float() / temperature  # x / 1 == x: skip the pass
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp
    with torch.no_grad():
        return logp, -(logp_all.exp() * logp_all).sum(dim=-1)


def completion_mask(completion_ids, eos_id, mask_truncated=False):
    """Which completion tokens are trained, for right-padded completions (B, T) -> float (B, T).
    1 up to and including the first eos (so the model learns to stop), 0 after it. A row with
    no eos was cut at the token budget: kept whole by default; mask_truncated=True zeroes it
    (DAPO §3.4 overlong filtering: don't punish a reasoning chain only for being cut off)."""
    is_eos = (completion_ids == eos_id).long()
    eos_before = is_eos.cumsum(dim=1) - is_eos  # (B, T): eos tokens strictly before each position
    mask = (eos_before == 0).float()
    if mask_truncated:
        mask = mask * is_eos.any(dim=1, keepdim=True).float()
    return mask


# -----------------------------------------------------------------------------
# rollouts, the GRPO step, rejection sampling


def rollout(model, enc, problems, cfg, generator=None):
    """G sampled completions for each problem, with the KV cache, under inference mode.
    Returns the prompt ids and completion ids (each including its <|endoftext|> if it stopped),
    both repeated/ordered so the G completions of a prompt are adjacent. Under data parallel
    the rows are this rank's share of the global batch (every rank holds as many)."""
    prompts = [enc.encode_ordinary(p.prompt) for p in problems for _ in range(cfg.group_size)]
    model.eval()
    B = len(prompts)
    completions = model.generate(prompts, cfg.max_new_tokens, enc.eot_token, temperature=cfg.temperature,
                                 generator=generator, rows=(dist.rank() * B, dist.world() * B))
    model.train()
    return prompts, completions


class Rollouts(NamedTuple):
    """A batch of rollouts laid out for scoring (`pack`). The G completions of a prompt share
    its tokens, so each distinct prompt is computed once (`prefill`) and its keys and values are
    read by each of its rows. A completion's first token is predicted at its prompt's last
    token, so the prompt is split there: the context is the prompt but its last token."""
    context: torch.Tensor  # (U, P) each distinct prompt but its last token, left-padded with eot
    ctx_valid: torch.Tensor  # (U, P) bool: which context columns are real tokens
    group: torch.Tensor    # (B,) the context row each rollout continues
    ids: torch.Tensor      # (B, T) the prompt's last token, then the completion but its last, right-padded
    pos: torch.Tensor      # (B, T) their positions: column j of row i is at len(prompt_i) - 1 + j
    targets: torch.Tensor  # (B, T) the completion: the token that column j predicts, right-padded
    mask: torch.Tensor     # (B, T) which targets are trained (completion_mask)
    lengths: torch.Tensor  # (B,) len(completion_i): the real columns of row i


def pack(prompts, completions, eot, device, mask_truncated=False):
    """Rollouts (prompt and completion token lists, the G of a prompt adjacent or not) laid out
    for scoring; see Rollouts. The mask is completion_mask's."""
    T = max(len(c) for c in completions)
    firsts, of = distinct(prompts)                                   # (U,) (B,): each row's distinct prompt
    P = max(len(prompts[i]) - 1 for i in firsts)
    context = torch.full((len(firsts), P), eot, dtype=torch.long)
    ctx_valid = torch.zeros(len(firsts), P, dtype=torch.bool)
    for u, i in enumerate(firsts):
        p = prompts[i][:-1]
        context[u, P - len(p):], ctx_valid[u, P - len(p):] = torch.tensor(p, dtype=torch.long), True
    targets = torch.tensor([c + [eot] * (T - len(c)) for c in completions], dtype=torch.long)  # (B, T)
    ids = torch.cat([torch.tensor([p[-1] for p in prompts])[:, None], targets[:, :-1]], dim=1)
    pos = torch.tensor([len(p) - 1 for p in prompts])[:, None] + torch.arange(T)
    lengths = torch.tensor([len(c) for c in completions])
    mask = completion_mask(targets, eot, mask_truncated) * (torch.arange(T) < lengths[:, None])  # not the padding
    return Rollouts(*(t.to(device) for t in (context, ctx_valid, torch.tensor(of), ids, pos, targets, mask)), lengths)


def prefill(model, r):
    """The keys and values of every distinct prompt's context, per layer [k, v, k, v, ...], each
    (U, Hkv, P, D): one forward over U prompts instead of B rows. Part of the graph under grad."""
    c, (U, P) = model.cfg, r.context.shape
    caches = [KVCache(U, c.n_kv_head, P, c.n_embd // c.n_head, r.ids.device, model.tok_emb.weight.dtype)
              for _ in range(c.n_layer)]
    if P:
        pos = (r.ctx_valid.cumsum(1) - 1).clamp(min=0)              # (U, P): 0 at each prompt's first token
        model(r.context, pos=pos, mask=attention_mask(r.ctx_valid, 0, P), caches=caches)
    return [t for cache in caches for t in (cache.k, cache.v)]


def micro_batches(rows, lengths, size):
    """Split `rows` (1-D) into micro-batches of up to `size` rows of similar length, each with the
    longest real length among its rows: scored on columns :length, the padding columns after
    it are never computed. Causal attention makes every row's log-probs independent of the
    columns after it, so the trim changes no value."""
    rows = rows[lengths[rows].argsort(stable=True)]
    return [(r, int(lengths[r].max())) for r in rows.split(size)]


def completion_logprobs(model, r, rows, n, kv, temperature, with_entropy=False):
    """Log-probs (b, n) of the completion tokens of these rows (their first n columns), scored
    where the mask is set and 0 elsewhere, reading their prompts' keys and values from kv
    (prefill's). with_entropy adds the sampling distribution's entropy there (no grad). The
    output head and one log-softmax run on completion positions only (model's `select`).
    The prompts' keys and values reach their rows by index_select, not k[g]: the backward of k[g]
    adds each prompt's rows up in parallel on the CPU, in an order that changes from call to call
    (on 2 threads no two zero stages trained the same weights); index_select's backward adds
    them one row after another, so a run repeats bit for bit (test_grpo.py)."""
    g, b = r.group[rows], len(rows)
    caches = []
    for k, v in zip(kv[::2], kv[1::2]):  # the prompts' keys and values, room for n more: (b, Hkv, P + n, D)
        caches.append(KVCache(b, k.shape[1], k.shape[2] + n, k.shape[3], k.device, k.dtype))
        caches[-1].update(k.index_select(0, g), v.index_select(0, g))  # a copy: gradients flow back to kv
    valid = torch.cat([r.ctx_valid[g], r.ctx_valid.new_ones(b, n)], dim=1)  # (b, P + n) the prompt's padding hidden
    mask = attention_mask(valid, r.context.shape[1], n)             # (b, 1, n, P + n)
    m = r.mask[rows, :n]
    sel = m > 0
    logits, _ = model(r.ids[rows, :n], pos=r.pos[rows, :n], mask=mask, caches=caches, select=sel)  # (N, V)
    scored = token_logprobs(logits, r.targets[rows, :n][sel], temperature, with_entropy)
    put = lambda x: m.new_zeros(m.shape).masked_scatter(sel, x)    # (N,) -> (b, n)
    return tuple(map(put, scored)) if with_entropy else put(scored)


def sequence_logprobs(model, r, temperature, micro_batch):
    """completion_logprobs (B, T) of every row, no grad, in length-sorted trimmed micro-batches."""
    out = r.mask.new_zeros(r.mask.shape)
    with torch.no_grad():
        kv = prefill(model, r)
        for rows, n in micro_batches(torch.arange(len(r.lengths)), r.lengths, micro_batch):
            out[rows, :n] = completion_logprobs(model, r, rows, n, kv, temperature)
    return out


def positions(prompts, completions):
    """Positions that sampling runs through the model: each distinct prompt once (its prefill),
    then every completion token."""
    return sum(len(prompts[i]) for i in distinct(prompts)[0]) + sum(map(len, completions))


def sample_and_score(model, enc, problems, cfg, score_fn, generator):
    """Rollouts for `problems` and their rule rewards: prompt ids, completion ids, texts, scores."""
    prompts, comps = rollout(model, enc, problems, cfg, generator)
    texts = [enc.decode([t for t in c if t != enc.eot_token]) for c in comps]
    return prompts, comps, texts, score_fn(texts, [p for p in problems for _ in range(cfg.group_size)])


def grpo_step(model, ref_model, opt, enc, problems, cfg, score_fn, generator=None, refill=None, grad_clip=1.0):
    """One GRPO step. score_fn(texts, problems) -> dict of lists (reward, accuracy, format, lang).
    refill(n) -> n more problems, used only by dynamic sampling. Returns a dict of stats.
    Under data parallel `model` is the DDP-wrapped policy and `problems` this rank's share
    (whole groups); sampling and scoring use the bare model (dist.py)."""
    policy = getattr(model, "module", model)
    dev = next(policy.parameters()).device
    G, t0 = cfg.group_size, time.time()

    # ---- 1. rollouts: G completions per prompt, one batched generate with the KV cache
    prompts, comps, texts, scores = sample_and_score(policy, enc, problems, cfg, score_fn, generator)
    sampled = positions(prompts, comps)  # positions run through the model
    t1 = time.time()

    # ---- 2. rule rewards and group-relative advantages (R1 eq. 3)
    rewards = torch.tensor(scores["reward"], dtype=torch.float32)
    n_zero = zero_variance_groups(rewards, G)
    if cfg.dynamic_sampling and n_zero and refill is not None:  # DAPO §3.2, one refill round
        keep = ~_zero_var(_groups(rewards, G))
        rows = [i for g in range(len(problems)) if keep[g] for i in range(g * G, (g + 1) * G)]
        new_prompts, new_comps, new_texts, new_scores = sample_and_score(policy, enc, refill(n_zero), cfg, score_fn,
                                                                         generator)
        sampled += positions(new_prompts, new_comps)
        prompts = [prompts[i] for i in rows] + new_prompts
        comps = [comps[i] for i in rows] + new_comps
        texts = [texts[i] for i in rows] + new_texts
        scores = {k: [scores[k][i] for i in rows] + new_scores[k] for k in ("reward", "accuracy", "format", "lang")}
        rewards = torch.tensor(scores["reward"], dtype=torch.float32)
    adv = group_advantages(rewards, G, scale_std=cfg.scale_std).to(dev)
    t2 = time.time()

    # ---- 3. old-policy and reference log-probs, computed once per batch of rollouts
    r = pack(prompts, comps, enc.eot_token, dev, cfg.mask_truncated)
    B = len(r.lengths)
    scored = int(r.ctx_valid.sum() + r.lengths.sum())  # positions a scoring pass runs: each prompt once
    # With one pass and one minibatch the policy that sampled is the policy being updated, so
    # old == current exactly and its forward pass is skipped (ratio == 1: REINFORCE with a baseline).
    single = cfg.mu == 1 and cfg.n_minibatches == 1
    old = None if single else sequence_logprobs(policy, r, cfg.temperature, cfg.micro_batch)
    ref = sequence_logprobs(ref_model, r, cfg.temperature, cfg.micro_batch) if cfg.beta > 0 else None
    t3 = time.time()

    # ---- 4. mu passes of minibatch updates on the clipped objective
    agg = {"clip_frac": 0.0, "kl": 0.0, "ratio": 0.0, "entropy": 0.0, "tokens": 0.0}
    skipped = 0
    for _ in range(cfg.mu):
        order = torch.randperm(B, generator=generator)
        for minibatch in order.chunk(cfg.n_minibatches):
            # DDP averages gradients over the N ranks, so each normalises by 1/N of the total
            n_tokens = dist.total(r.mask[minibatch].sum()) / dist.world()
            # The prompts run once; the micro-batches read detached copies of their keys and
            # values, where gradients pile up, and the last one carries those back through the
            # prefill in its own backward (the surrogate term, whose gradient is exactly them):
            # one backward with DDP's gradient all-reduce covers everything.
            kv = prefill(policy, r)
            leaves = [t.detach().requires_grad_() for t in kv]
            micros = micro_batches(minibatch, r.lengths, cfg.micro_batch)
            for j, (micro, n) in enumerate(micros):
                last = j == len(micros) - 1
                with dist.no_sync(model, last):
                    m = r.mask[micro, :n]
                    logp, entropy = completion_logprobs(model, r, micro, n, kv if last else leaves,
                                                        cfg.temperature, with_entropy=True)
                    loss, st = grpo_loss(logp, logp.detach() if old is None else old[micro, :n],
                                         None if ref is None else ref[micro, :n], adv[micro], m,
                                         clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high or None,
                                         beta=cfg.beta, loss_agg=cfg.loss_agg, max_tokens=cfg.max_new_tokens,
                                         n_seqs=len(minibatch), n_tokens=n_tokens, entropy=entropy)
                    if last:
                        loss = loss + sum((t * leaf.grad).sum() for t, leaf in zip(kv, leaves) if leaf.grad is not None)
                    loss.backward()
                for k in agg:  # token-weighted, so the step's stats are per token of the whole batch
                    agg[k] += st.get(k, 0.0) * (st["tokens"] if k != "tokens" else 1.0)
            skipped += not dist.clip_and_step(model, opt, grad_clip)[1]  # a non-finite norm: no step
    t4 = time.time()

    n_tok = max(1.0, agg.pop("tokens"))
    stats = {k: v / n_tok for k, v in agg.items()}
    lens = [len(c) for c in comps]
    # the positions each phase ran through the model, for the compute of a stage (train.py)
    stats.update(tokens_sampled=sampled,
                 tokens_scored=scored * ((old is not None) + (ref is not None)),
                 tokens_trained=scored * cfg.mu)
    stats.update(reward=sum(scores["reward"]) / B, accuracy=sum(scores["accuracy"]) / B,
                 format_rate=sum(scores["format"]) / B, lang=sum(scores["lang"]) / B,
                 response_tokens=sum(lens) / B, zero_var_frac=n_zero / len(problems),
                 reflection_rate=sum(map(reflect.has_check, texts)) / B,  # the world's checks, never rewarded
                 sample_tok_s=sum(lens) / max(1e-9, t1 - t0), t_generate=t1 - t0, t_score=t2 - t1,
                 t_logprobs=t3 - t2, t_update=t4 - t3, step_s=t4 - t0)
    stats = dist.mean_stats(stats)
    for k in ("tokens_sampled", "tokens_scored", "tokens_trained"):
        stats[k] *= dist.world()  # totals over the ranks
    return {**stats, "skipped": skipped, "example": texts[0]}


def make_reference(model):
    """A frozen copy of the policy: the KL anchor (R1 eq. 2)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def rejection_sample(model, enc, problems, n_samples, max_new_tokens, temperature, score_fn, generator, batch=64):
    """Rejection sampling (R1 §2.3.3): n_samples completions per problem; keep those that
    `rejection_reason` passes, without duplicates per problem. Returns the kept (problem,
    completion text) pairs and the counts of what was drawn, kept and dropped why, with the
    positions the sampler ran through the model (`tokens`: `positions` of every batch of draws)."""
    cfg = RLConfig(group_size=n_samples, max_new_tokens=max_new_tokens, temperature=temperature)
    kept, seen, tokens = [], set(), 0
    dropped = {why: 0 for why in ("cut off", "format", "wrong", "mixed language", "needless chain", "duplicate")}
    for i in range(0, len(problems), batch):
        chunk = problems[i:i + batch]
        prompts, comps, texts, s = sample_and_score(model, enc, chunk, cfg, score_fn, generator)
        tokens += positions(prompts, comps)
        for j, (c, text) in enumerate(zip(comps, texts)):
            problem = chunk[j // n_samples]
            why = rejection_reason(enc.eot_token in c, {k: s[k][j] for k in ("format", "accuracy", "lang", "needless")})
            why = why or ("duplicate" if (problem.prompt, text) in seen else None)
            if why:
                dropped[why] += 1
            else:
                seen.add((problem.prompt, text))
                kept.append((problem, text))
    return kept, {"prompts": len(problems), "drawn": len(problems) * n_samples, "kept": len(kept), "dropped": dropped,
                  "tokens": tokens}


def rejection_reason(finished, scores):
    """Why a sampled completion is not kept, or None: it must finish within the budget (readable,
    not cut off), be well formed, right, in one language, and answer a general task without a
    chain of thought (R1 §2.3.3). scores: one completion's rewards.score_batch terms."""
    return ("cut off" if not finished else "format" if scores["format"] < 1 else "wrong" if scores["accuracy"] < 1
            else "mixed language" if scores["lang"] < 1 else "needless chain" if scores["needless"] > 0 else None)
