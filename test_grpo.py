"""
Tests of grpo.py: the loss and advantages against hand loops over python floats, the packing
mask, the wiring of the step's options (minibatches, mu > 1, DAPO switches) against reference
computations, rejection sampling on constructed samples, and a step that raises a reward.

    python -m pytest test_grpo.py -q
"""
import copy
import math
import os
import types

import pytest
import torch

import data
import evaluate
import grpo
from checkpoint import load_checkpoint
from grpo import (LOSS_AGGS, completion_mask, group_advantages, grpo_loss, token_logprobs,
                  zero_variance_groups)
from model import GPT, GPTConfig



# a tiny batch: 3 completions, 4 positions, ragged masks, both advantage signs
MASK = [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
ADV = [1.5, -0.7, 0.9]
OLD = [[-1.0, -2.0, -0.5, -3.0], [-1.2, -0.3, -2.2, -0.9], [-0.4, -1.6, -2.0, -1.0]]
# logp - old: +0.3 (ratio 1.35, clipped for A>0), -0.4 (ratio 0.67, clipped for A<0), small shifts
DELTA = [[0.30, -0.10, 0.05, 0.7], [-0.40, 0.25, 0.02, -0.30], [0.22, -0.35, 0.5, 0.0]]
REF = [[-1.1, -1.8, -0.7, -2.0], [-1.0, -0.5, -2.0, -1.0], [-0.6, -1.5, -1.0, -1.2]]


def tensors():
    old = torch.tensor(OLD, dtype=torch.float64)
    logp = (old + torch.tensor(DELTA, dtype=torch.float64)).requires_grad_(True)
    return (logp, old, torch.tensor(REF, dtype=torch.float64),
            torch.tensor(ADV, dtype=torch.float64), torch.tensor(MASK, dtype=torch.float64))


def reference_loss(agg, eps=0.2, eps_high=None, beta=0.04, max_tokens=None):
    # the paper's formula, one token at a time
    eps_high = eps if eps_high is None else eps_high
    per_seq, total, n_tok, n_clip = [], 0.0, 0, 0
    for b in range(3):
        s, L = 0.0, 0
        for t in range(4):
            if not MASK[b][t]:
                continue
            lp = OLD[b][t] + DELTA[b][t]
            r = math.exp(lp - OLD[b][t])
            A = ADV[b]
            surr = min(r * A, min(max(r, 1 - eps), 1 + eps_high) * A)
            n_clip += min(max(r, 1 - eps), 1 + eps_high) * A < r * A
            d = REF[b][t] - lp
            obj = surr - beta * (math.exp(d) - d - 1)
            s += obj
            L += 1
        per_seq.append(s / L)
        total += s
        n_tok += L
    if agg == "seq-mean-token-mean":
        J = sum(per_seq) / 3
    elif agg == "token-mean":
        J = total / n_tok
    else:
        J = total / max_tokens / 3
    return -J, n_clip / n_tok


@pytest.mark.parametrize("agg", LOSS_AGGS)
@pytest.mark.parametrize("eps_high", [None, 0.4])
@pytest.mark.parametrize("beta", [0.04, 1.0])
def test_loss_matches_hand_computation(agg, eps_high, beta):
    logp, old, ref, adv, mask = tensors()
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, clip_eps_high=eps_high,
                            beta=beta, loss_agg=agg, max_tokens=6)
    want, clip_frac = reference_loss(agg, eps_high=eps_high, beta=beta, max_tokens=6)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    assert stats["clip_frac"] == pytest.approx(clip_frac)
    # the example really exercises clipping: ratios 1.35, 1.25 (A > 0) and 0.67, 0.74 (A < 0);
    # eps_high=0.4 unclips the two upper ones
    assert clip_frac == (pytest.approx(4 / 9) if eps_high is None else pytest.approx(2 / 9))
    assert stats["kl"] > 0


@pytest.mark.parametrize("agg", LOSS_AGGS)
def test_a_one_token_completion_weighs_one_token(agg):
    """A completion that stops at once (its eos alone: one trained token) is divided by its one
    token, no more, in the loss and in the stats; so is a batch that holds one token in all."""
    logp = torch.tensor([[-0.5, 0.0, 0.0], [-1.0, -2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    ref = logp.detach() - 0.3  # every token's k3 KL: exp(-0.3) + 0.3 - 1
    adv = torch.tensor([2.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.float64)
    # at ratio 1 each trained token's objective is its row's advantage: 2 (one token), -1 (three)
    loss, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.0, loss_agg=agg, max_tokens=3)
    want = {"seq-mean-token-mean": -(2 / 1 + -3 / 3) / 2, "token-mean": -(2 - 3) / 4,
            "seq-mean-token-sum-norm": -(2 - 3) / (3 * 2)}[agg]
    assert loss.item() == pytest.approx(want, abs=1e-12)
    one, st = grpo_loss(logp[:1], logp[:1].detach(), ref[:1], adv[:1], mask[:1], beta=0.0, loss_agg=agg,
                        max_tokens=3)
    assert one.item() == pytest.approx(-2.0 if agg != "seq-mean-token-sum-norm" else -2 / 3, abs=1e-12)
    assert st["kl"] == pytest.approx(math.exp(-0.3) + 0.3 - 1) and st["tokens"] == 1


def normaliser(agg, mask, max_tokens):
    # d loss / d (A * logp) per token, at ratio 1: the weight each token gets in REINFORCE
    B = mask.shape[0]
    if agg == "seq-mean-token-mean":
        return mask / mask.sum(1, keepdim=True) / B
    if agg == "token-mean":
        return mask / mask.sum()
    return mask / (max_tokens * B)


@pytest.mark.parametrize("agg", LOSS_AGGS)
def test_first_inner_update_is_reinforce(agg):
    _, _, _, adv, mask = tensors()
    logp = torch.tensor(OLD, dtype=torch.float64, requires_grad=True)
    loss, stats = grpo_loss(logp, logp.detach(), None, adv, mask, beta=0.0, loss_agg=agg,
                            max_tokens=6)
    loss.backward()
    assert stats["ratio"] == 1.0 and stats["clip_frac"] == 0.0
    want = -adv[:, None] * normaliser(agg, mask, 6)
    torch.testing.assert_close(logp.grad, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("agg", LOSS_AGGS)
def test_linear_policy_gradient_is_analytic_reinforce(agg):
    # policy: logits = x @ W / temperature; REINFORCE gradient of the loss w.r.t. W is
    # -sum_bt w_bt A_b x_bt (onehot(y_bt) - softmax_bt) / temperature
    g = torch.Generator().manual_seed(0)
    B, T, D, V, temp = 3, 4, 5, 7, 0.7
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    W = torch.randn(D, V, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (B, T), generator=g)
    _, _, _, adv, mask = tensors()
    logp = token_logprobs(x @ W, y, temperature=temp)
    loss, _ = grpo_loss(logp.double(), logp.detach().double(), None, adv, mask, beta=0.0,
                        loss_agg=agg, max_tokens=6)
    loss.backward()
    want = torch.zeros(D, V, dtype=torch.float64)
    w = normaliser(agg, mask, 6)
    with torch.no_grad():
        for b in range(B):
            for t in range(T):
                p = torch.softmax(x[b, t] @ W / temp, dim=-1)
                onehot = torch.zeros(V, dtype=torch.float64)
                onehot[y[b, t]] = 1
                want -= w[b, t] * adv[b] * torch.outer(x[b, t], onehot - p) / temp
    # token_logprobs scores in fp32, so compare at fp32 precision
    torch.testing.assert_close(W.grad, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("agg", LOSS_AGGS)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_micro_batches_sum_to_full_batch(agg, beta):
    logp, old, ref, adv, mask = tensors()
    full, _ = grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_agg=agg, max_tokens=6)
    (full_grad,) = torch.autograd.grad(full, logp)
    n_seqs, n_tokens = mask.shape[0], mask.sum()
    total = 0.0
    for sl in (slice(0, 1), slice(1, 3)):  # unequal token counts: 3 vs 6
        part, _ = grpo_loss(logp[sl], old[sl], ref[sl], adv[sl], mask[sl], beta=beta,
                            loss_agg=agg, max_tokens=6, n_seqs=n_seqs, n_tokens=n_tokens)
        total = total + part
    (split_grad,) = torch.autograd.grad(total, logp)
    assert total.item() == pytest.approx(full.item(), abs=1e-14)
    torch.testing.assert_close(split_grad, full_grad, rtol=0, atol=1e-14)
    if agg == "token-mean":  # without the whole-batch count the split is wrong: the test can fail
        naive = sum(grpo_loss(logp[sl], old[sl], ref[sl], adv[sl], mask[sl], beta=beta,
                              loss_agg=agg)[0] for sl in (slice(0, 1), slice(1, 3)))
        assert abs(naive.item() - full.item()) > 1e-3


def test_stats_and_errors():
    logp, old, ref, adv, mask = tensors()
    ent = torch.full_like(logp, 2.0)
    ent[0, 3] = 100.0  # a masked position must not count
    _, stats = grpo_loss(logp, old, ref, adv, mask, entropy=ent)
    assert stats["entropy"] == 2.0 and stats["tokens"] == 9.0
    ratios = [math.exp(DELTA[b][t]) for b in range(3) for t in range(4) if MASK[b][t]]
    assert stats["ratio"] == pytest.approx(sum(ratios) / 9)
    with pytest.raises(ValueError, match="token-mean"):
        grpo_loss(logp, old, ref, adv, mask, loss_agg="mean")
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(logp, old, ref, adv, mask, loss_agg="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, None, adv, mask, beta=0.1)


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0,  0.1, 0.1, 0.1, 0.1,  1.0, 1.0, 0.0, 1.0,
                      0.3, 0.3, 0.3, 0.3])
    adv = group_advantages(r, 4)
    # group 1 by hand: mean 0.25, sample std sqrt(0.75/3) = 0.5
    want0 = [(v - 0.25) / (0.5 + 1e-4) for v in (1.0, 0.0, 0.0, 0.0)]
    assert adv[:4].tolist() == pytest.approx(want0)
    # equal rewards (0.1 and 0.3 have inexact float means) give exactly zero, and are counted
    assert (adv[4:8] == 0).all() and (adv[12:] == 0).all()
    assert zero_variance_groups(r, 4) == 2
    raw = group_advantages(r, 4, scale_std=False)  # Dr. GRPO
    assert raw[8:12].tolist() == pytest.approx([0.25, 0.25, -0.75, 0.25])
    assert (raw[4:8] == 0).all()
    with pytest.raises(ValueError):
        group_advantages(r, 3)


def test_completion_mask_includes_eos():
    EOS = 9
    ids = torch.tensor([[5, 6, EOS, EOS, EOS],   # padded with eos after stopping
                        [EOS, 1, 2, 3, 4],       # stops at once: only the eos is trained
                        [1, 2, 3, 4, 5],         # truncated: no eos
                        [1, 2, 3, 4, EOS]])      # eos on the last position
    want = [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert completion_mask(ids, EOS).tolist() == want
    want[2] = [0, 0, 0, 0, 0]
    assert completion_mask(ids, EOS, mask_truncated=True).tolist() == want


def test_logprobs_and_entropy_with_temperature():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]])
    targets = torch.tensor([[0, 2]])
    temp = 0.5
    lp = token_logprobs(logits, targets, temperature=temp)
    for t, row in enumerate(logits[0].tolist()):
        z = [v / temp for v in row]
        lse = math.log(sum(math.exp(v) for v in z))
        assert lp[0, t].item() == pytest.approx(z[targets[0, t]] - lse, rel=1e-6)
        p = [math.exp(v - lse) for v in z]
        H = -sum(q * math.log(q) for q in p)
        entropy = token_logprobs(logits, targets, temp, with_entropy=True)[1]
        assert entropy[0, t].item() == pytest.approx(H, rel=1e-6)
    entropy = token_logprobs(logits, targets, 1.0, with_entropy=True)[1]
    assert entropy[0, 1].item() == pytest.approx(math.log(3), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# the step: packing, the options' wiring, the DAPO switches

def test_pack_splits_each_distinct_prompt_once_and_places_the_completion_mask():
    EOT = 9
    prompts, comps = [[1, 2, 3], [4], [1, 2, 3]], [[5, 6, EOT], [7, 8, 8], [6, EOT]]  # row 1 cut at the budget
    r = grpo.pack(prompts, comps, EOT, "cpu")
    # each distinct prompt once, but its last token, left-padded; rows 0 and 2 share one
    assert r.context.tolist() == [[1, 2], [EOT, EOT]] and r.ctx_valid.tolist() == [[1, 1], [0, 0]]
    assert r.group.tolist() == [0, 1, 0]
    # column j holds the token before completion token j, at its position in the whole row
    assert r.ids.tolist() == [[3, 5, 6], [4, 7, 8], [3, 6, EOT]]
    assert r.pos.tolist() == [[2, 3, 4], [0, 1, 2], [2, 3, 4]]
    assert r.targets.tolist() == [[5, 6, EOT], [7, 8, 8], [6, EOT, EOT]]
    assert r.mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]] and r.lengths.tolist() == [3, 3, 2]
    assert grpo.pack(prompts, comps, EOT, "cpu", mask_truncated=True).mask.tolist() == [[1, 1, 1], [0, 0, 0],
                                                                                       [1, 1, 0]]
    # tokens after an eot inside a completion are never trained
    assert grpo.pack([[1]], [[5, EOT, 6]], EOT, "cpu").mask.tolist() == [[1, 1, 0]]


def _rows_and_model(moe):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, mlp_hidden=48,
                          n_routed_experts=4 if moe else 0, moe_hidden=16, seq_aux_alpha=0.0, init_std=0.1))
    prompts = [[1, 2, 3, 4], [5], [6, 7], [1, 2, 3, 4], [6, 7], [1, 2, 3, 4]]
    comps = [[8, 9, 10, 49], [11, 12], [13, 14, 15, 16, 17, 18], [19], [20, 21, 49], [22, 23, 24]]
    return model, prompts, comps


def _plain_logprobs(model, prompts, comps):
    """The reference: each row alone, prompt + completion through the plain causal forward."""
    out = []
    for p, c in zip(prompts, comps):
        logits, _ = model(torch.tensor([p + c[:-1]]))
        out.append(torch.log_softmax(logits[0, len(p) - 1:], -1).gather(1, torch.tensor(c)[:, None])[:, 0])
    return out


@pytest.mark.parametrize("moe", [False, True])
def test_shared_prompt_scoring_equals_each_row_alone(moe):
    """sequence_logprobs computes each distinct prompt once and reads its keys and values from
    every row (micro-batches of 2 rows, trimmed): the same log-probs as each row alone."""
    model, prompts, comps = _rows_and_model(moe)
    model.eval()
    r = grpo.pack(prompts, comps, 49, "cpu")
    got = grpo.sequence_logprobs(model, r, 1.0, micro_batch=2)
    with torch.no_grad():
        want = _plain_logprobs(model, prompts, comps)
    for i, w in enumerate(want):
        n = int(r.mask[i].sum())
        torch.testing.assert_close(got[i, :n], w[:n], rtol=1e-5, atol=1e-5)
        assert (got[i, n:] == 0).all()


def test_the_gradient_through_shared_prompts_is_the_same_every_time():
    """Each prompt's keys and values are read by its G rows; the gradient adds the rows back up,
    and must do so in a fixed order: the zero stage's weights then come out the same run after
    run. On 2 threads the backward of k[g] (a parallel accumulate) gave a different sum at each
    call at these sizes; index_select's adds the rows one after another."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=64, n_layer=1, n_head=4, n_kv_head=2, n_embd=64,
                          mlp_hidden=64, init_std=0.1))
    gen = torch.Generator().manual_seed(0)
    prompts = [p for p in (torch.randint(0, 49, (41,), generator=gen).tolist() for _ in range(8)) for _ in range(16)]
    comps = [torch.randint(0, 49, (8,), generator=gen).tolist() for _ in prompts]
    r = grpo.pack(prompts, comps, 49, "cpu")
    kv = [t.detach().requires_grad_() for t in grpo.prefill(model, r)]  # (8, 2, 40, 16) each: 8 prompts
    assert kv[0].shape == (8, 2, 40, 16)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = torch.randperm(len(prompts), generator=gen)  # a micro-batch's rows: by length, prompts mixed
        grads = [torch.autograd.grad(grpo.completion_logprobs(model, r, rows, 8, kv, 1.0).sum(), kv) for _ in range(5)]
    finally:
        torch.set_num_threads(threads)
    for g in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(g, grads[0]))


@pytest.mark.parametrize("micro_batch", [1, 2, 6])
def test_the_update_gradient_equals_the_plain_one(monkeypatch, micro_batch):
    """grpo_step's update (the prompts once, micro-batches on detached keys and values, the
    gradients carried back through the prefill by the last one) gives the gradient of the same
    loss computed row by row through the plain forward."""
    model, prompts, comps = _rows_and_model(moe=True)
    eot = 49
    enc = types.SimpleNamespace(eot_token=eot, encode_ordinary=lambda s: list(map(int, s.split())),
                                decode=lambda ids: " ".join(map(str, ids)))
    problems = [types.SimpleNamespace(prompt=" ".join(map(str, p))) for p in prompts[:3]]
    rows = {tuple(p): [] for p in prompts[:3]}
    for p, c in zip(prompts, comps):
        rows[tuple(p)].append(c)
    # G = 2 completions per prompt, in the order the rollout yields them
    order_p = [list(p) for p in rows for _ in range(2)]
    order_c = [c for p in rows for c in (rows[p] + rows[p])[:2]]
    monkeypatch.setattr(grpo, "rollout", lambda m, e, probs, cfg, g: (order_p, order_c))
    reward = [1.0, 0.0, 0.0, 1.0, 0.5, 0.0]
    score = lambda texts, ps: {"reward": reward, "accuracy": reward, "format": reward, "lang": reward}
    rc = grpo.RLConfig(prompts_per_step=3, group_size=2, max_new_tokens=8, micro_batch=micro_batch, beta=0.0,
                       loss_agg="token-mean")
    want_model = copy.deepcopy(model).train()
    got = {}
    monkeypatch.setattr(grpo.dist, "clip_and_step", lambda m, opt, clip: (got.update(
        (name, p.grad.clone()) for name, p in m.named_parameters()), (0.0, True))[1])
    grpo.grpo_step(model, None, None, enc, problems, rc, score, torch.Generator().manual_seed(0))
    # the same loss by hand: token-mean of -A * logp (ratio 1, its gradient is REINFORCE's)
    adv = grpo.group_advantages(torch.tensor(reward), 2)
    logps = _plain_logprobs(want_model, order_p, order_c)
    masks = [grpo.completion_mask(torch.tensor([c]), eot)[0] for c in order_c]
    n_tok = sum(float(m.sum()) for m in masks)
    loss = -sum((a * lp * m).sum() for a, lp, m in zip(adv, logps, masks)) / n_tok
    loss.backward()
    for name, q in want_model.named_parameters():
        torch.testing.assert_close(got[name], q.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def world():
    cfg = data.DataConfig(n_docs=600, bpe_docs=200, vocab_size=400)
    enc = data.build_tokenizer(cfg, data.build_corpus(cfg))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=160, n_layer=1, n_head=2, n_kv_head=1, n_embd=32,
                          mlp_hidden=64))
    return cfg, enc, model, data.rl_problems(cfg, 6, seed=0)


def alternating(texts, problems):  # every group has rewards 0, 1, 0, 1, ...: no zero-variance group
    r = [float(i % 2) for i in range(len(texts))]
    return {"reward": r, "accuracy": r, "format": r, "lang": r}


def recorded_step(monkeypatch, world, score=None, **options):
    """One grpo_step from a copy of the tiny model; returns the arguments of every grpo_loss
    call, the model before the step and the config."""
    cfg, enc, model, problems = world
    model = copy.deepcopy(model)
    before = copy.deepcopy(model)
    rc = grpo.RLConfig(**{"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "micro_batch": 64,
                          "beta": 0.0, **options})
    calls, real = [], grpo.grpo_loss

    def spy(logp, old_logp, ref_logp, adv, mask, **kw):
        loss, stats = real(logp, old_logp, ref_logp, adv, mask, **kw)
        calls.append(dict(kw, logp=logp.detach().clone(), old=old_logp.detach().clone(), mask=mask.clone(),
                          stats=stats))
        return loss, stats
    monkeypatch.setattr(grpo, "grpo_loss", spy)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    st = grpo.grpo_step(model, grpo.make_reference(before) if rc.beta else None, opt, enc, problems[:2], rc,
                        score or alternating, torch.Generator().manual_seed(0))
    return calls, before, model, rc, st


def test_step_wires_the_loss_options(monkeypatch, world):
    calls, _, _, rc, _ = recorded_step(monkeypatch, world, clip_eps=0.15, clip_eps_high=0.28, beta=0.04,
                                       loss_agg="token-mean", micro_batch=3)
    assert len(calls) == 3  # 8 sequences in micro-batches of 3
    whole = sum(float(c["mask"].sum()) for c in calls)
    for c in calls:
        assert (c["clip_eps"], c["clip_eps_high"], c["beta"], c["loss_agg"]) == (0.15, 0.28, 0.04, "token-mean")
        assert c["max_tokens"] == rc.max_new_tokens and c["n_seqs"] == 8 and float(c["n_tokens"]) == whole
    calls, *_ = recorded_step(monkeypatch, world, clip_eps_high=0.0)
    assert calls[0]["clip_eps_high"] is None  # 0 means "same as clip_eps"


@pytest.mark.parametrize("mu,n_minibatches", [(1, 2), (2, 1), (2, 2)])
def test_later_updates_use_the_sampling_policy_as_old(monkeypatch, world, mu, n_minibatches):
    """Every update after the first must score the ratio against the policy that sampled
    (computed once, before any update), not against itself."""
    calls, before, _, rc, st = recorded_step(monkeypatch, world, mu=mu, n_minibatches=n_minibatches)
    cfg, enc, _, problems = world
    assert len(calls) == mu * n_minibatches
    for c in calls[1:]:
        assert not torch.equal(c["old"], c["logp"])  # the policy moved: ratio != 1
    assert abs(st["ratio"] - 1) > 1e-6
    # the old log-probs equal a fresh scoring by the model as it was before the step
    prompts, comps = grpo.rollout(before, enc, problems[:2], rc, torch.Generator().manual_seed(0))
    r = grpo.pack(prompts, comps, enc.eot_token, "cpu")
    old = grpo.sequence_logprobs(before, r, rc.temperature, 64)
    order = torch.randperm(len(r.lengths), generator=_generator_after_rollout(before, enc, problems[:2], rc))
    rows, n = grpo.micro_batches(order.chunk(n_minibatches)[0], r.lengths, rc.micro_batch)[0]
    torch.testing.assert_close(calls[0]["old"], old[rows, :n])


def test_step_counts_the_positions_each_phase_runs(monkeypatch, world):
    """tokens_sampled / scored / trained (a stage's compute, train.py): each distinct prompt once
    (a scoring pass runs it but its last token, which opens every row), then every completion
    token; scoring counts the old policy's pass and the reference's, training each of mu passes."""
    _, before, _, rc, st = recorded_step(monkeypatch, world, beta=0.04, mu=2)
    cfg, enc, _, problems = world
    prompts, comps = grpo.rollout(before, enc, problems[:2], rc, torch.Generator().manual_seed(0))
    distinct = {tuple(p) for p in prompts}
    assert len(distinct) == 2 and len(prompts) == 8
    comp = sum(map(len, comps))
    assert st["tokens_sampled"] == sum(map(len, distinct)) + comp
    scored = sum(len(p) - 1 for p in distinct) + comp
    assert st["tokens_scored"] == 2 * scored and st["tokens_trained"] == 2 * scored


def _generator_after_rollout(model, enc, problems, rc):
    g = torch.Generator().manual_seed(0)
    grpo.rollout(model, enc, problems, rc, g)
    return g


def test_step_stats_are_batch_means(monkeypatch, world):
    """The step's reward terms are means over the batch's completions; its loss statistics are
    token-weighted means over every micro-batch."""
    seen = []

    def score(texts, problems):
        n = len(texts)
        seen.extend(texts)
        return {"reward": [i / 10 for i in range(n)], "accuracy": [float(i % 3 == 0) for i in range(n)],
                "format": [float(i < 3) for i in range(n)], "lang": [0.25] * n}
    monkeypatch.setattr(grpo.reflect, "has_check", lambda text: len(text) % 2 == 0)  # (no check in 8 tokens)
    calls, _, _, rc, st = recorded_step(monkeypatch, world, score, micro_batch=3, beta=0.04, mu=2)
    assert 0 < st["reflection_rate"] == sum(len(t) % 2 == 0 for t in seen) / 8 < 1
    assert st["reward"] == pytest.approx(sum(i / 10 for i in range(8)) / 8)
    assert (st["accuracy"], st["format_rate"], st["lang"]) == (3 / 8, 3 / 8, 0.25)
    assert st["zero_var_frac"] == 0.0 and 1 <= st["response_tokens"] <= rc.max_new_tokens
    tokens = sum(c["stats"]["tokens"] for c in calls)
    for k in ("clip_frac", "kl", "ratio", "entropy"):
        want = sum(c["stats"][k] * c["stats"]["tokens"] for c in calls) / tokens
        assert st[k] == pytest.approx(want), k
    assert st["step_s"] >= st["t_generate"] + st["t_update"] and st["sample_tok_s"] > 0


def test_single_pass_skips_the_old_forward(monkeypatch, world):
    calls, *_ = recorded_step(monkeypatch, world)
    assert len(calls) == 1 and torch.equal(calls[0]["old"], calls[0]["logp"])  # ratio exactly 1: REINFORCE


def test_mask_truncated_trains_nothing_on_cut_rows(monkeypatch, world):
    """A budget too short to finish: with DAPO's overlong filtering no token is trained, so the
    weights stay put; without it they move."""
    cfg, enc, model, problems = world
    for truncated, moved in ((True, False), (False, True)):
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
        rc = grpo.RLConfig(prompts_per_step=2, group_size=4, max_new_tokens=6, beta=0.0, mask_truncated=truncated)
        st = grpo.grpo_step(m, None, opt, enc, problems[:2], rc, alternating, torch.Generator().manual_seed(0))
        assert st["response_tokens"] == 6  # the untrained model never stops within 6 tokens
        changed = any(not torch.equal(a, b) for a, b in zip(m.parameters(), model.parameters()))
        assert changed == moved


def test_dynamic_sampling_replaces_zero_variance_groups(world):
    cfg, enc, model, problems = world
    model = copy.deepcopy(model)
    rc = grpo.RLConfig(prompts_per_step=2, group_size=4, max_new_tokens=6, beta=0.0, dynamic_sampling=True)
    refilled = []

    def score(texts, probs):  # the first prompt's group is all-equal, so it must be replaced
        r = [0.0 if p is problems[0] else float(i % 4 != 2) if p is problems[1] else float(i % 2)
             for i, p in enumerate(probs)]
        return {"reward": r, "accuracy": r, "format": r, "lang": r}

    def refill(n):
        refilled.append(n)
        return problems[2:2 + n]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    st = grpo.grpo_step(model, None, opt, enc, problems[:2], rc, score, torch.Generator().manual_seed(0), refill)
    assert refilled == [1] and st["zero_var_frac"] == 0.5
    # the batch trained on: the kept group (1, 1, 0, 1) and the refill (0, 1, 0, 1); before the refill: 0.375
    assert st["reward"] == 0.625
    rc.dynamic_sampling = False
    st = grpo.grpo_step(model, None, opt, enc, problems[:2], rc, score, torch.Generator().manual_seed(0), refill)
    assert refilled == [1] and st["reward"] == 0.375


def test_grpo_step_raises_reward_on_easy_task(tiny_run):
    """GRPO on the tiny base with an easy verifiable reward (the share of digit characters in
    the response) must raise the reward, measured on fresh samples before and after."""
    ckpt = load_checkpoint(os.path.join(tiny_run, "pretrain", "ckpt.pt"))
    enc, cfgs = ckpt["enc"], ckpt["configs"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfgs["model"]))
    model.load_state_dict(ckpt["model"])
    rc = grpo.RLConfig(prompts_per_step=4, group_size=8, max_new_tokens=24, rl_lr=3e-3, beta=0.0)
    problems = data.rl_problems(data.DataConfig(**cfgs["data"]), 4, seed=0)

    def score(texts, probs):
        r = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
        return {"reward": r, "accuracy": r, "format": [0.0] * len(r), "lang": [0.0] * len(r)}

    def measure():
        g = torch.Generator().manual_seed(123)
        _, comps = grpo.rollout(model, enc, problems * 4, rc, g)
        return sum(score([enc.decode([t for t in c if t != enc.eot_token]) for c in comps], None)["reward"]) / len(comps)

    before = measure()
    opt = torch.optim.AdamW(model.parameters(), lr=rc.rl_lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        st = grpo.grpo_step(model, None, opt, enc, problems, rc, score, g)
        assert st["zero_var_frac"] <= 1.0 and math.isfinite(st["clip_frac"])
    after = measure()
    assert after > before + 0.1, (before, after)


# ----------------------------------------------------------------------------------------------
# rejection sampling (sft2's data)

class Scripted:
    """A stand-in policy that answers each prompt with scripted completions, in order."""
    def __init__(self, enc, script):
        self.enc, self.script = enc, list(script)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, generator=None, rows=None):
        out = []
        for _ in prompts:
            text, finished = self.script.pop(0)
            out.append(self.enc.encode_ordinary(text) + ([eot] if finished else []))
        return out


def test_rejection_sampling_keeps_only_right_clean_finished_samples(world):
    cfg, enc, _, _ = world
    en = data.Problem("Compute 12 * 3.", "36", "arith", "en", 1, (1, 12, 3), [])
    zh = data.Problem("计算 12 * 3。", "36", "arith", "zh", 1, (1, 12, 3), [])
    good_en = " <think> 2 * 3 = 6, 1 * 3 = 3, so 12 * 3 = 36. </think> <answer> 36 </answer>"
    good_zh = " <think> 我一步一步来算。 2 * 3 = 6，所以 12 * 3 = 36。 </think> <answer> 36 </answer>"
    script = [(good_en, True), (good_en, True),                                   # kept, then a duplicate
              (good_en.replace("36 <", "37 <"), True),                             # wrong
              (" <think> 2 * 3 = 6 </think> 36", True),                            # no answer block: format
              (good_en, False),                                                    # cut at the budget
              (good_zh, True), (good_en.replace("12", "12 我"), True),                # zh: kept; en: mixed language
              (" <think> so 12 * 3 = 36 </think> <answer> 36 </answer>", True)]      # zh prompt, English chain
    # distill also samples general tasks: a chain of thought where none is needed is dropped
    general = data.Problem("Which is larger, 722 or 99?", "722", "compare", "en", 0, (722, 99), [])
    good_general = " <think> No working needed. </think> <answer> 722 </answer>"
    needless = " <think> Subtract: 722 - 99 = 623, so 722 is larger. </think> <answer> 722 </answer>"
    script += [(good_general, True), (needless, True),
               (good_general.replace("722 <", "99 <"), True), (good_general, True)]  # wrong, duplicate
    kept, stats = grpo.rejection_sample(Scripted(enc, script), enc, [en, zh, general], 4, 64, 1.0,
                                        lambda t, p: evaluate.score(t, p, terms=("accuracy", "format", "lang")),
                                        torch.Generator().manual_seed(0), batch=1)
    assert [(p.lang, t) for p, t in kept] == [("en", good_en), ("zh", good_zh), ("en", good_general)]
    assert stats["drawn"] == 12 and stats["kept"] == 3 and stats["prompts"] == 3
    assert stats["dropped"] == {"cut off": 1, "format": 1, "wrong": 2, "mixed language": 2, "needless chain": 1,
                                "duplicate": 2}
    # tokens: each prompt once per batch (its 4 draws share its prefill) and every completion
    # (the eot of a finished one included), for distill's compute
    prompt_len = lambda p: len(enc.encode_ordinary(p.prompt))
    answers = sum(len(enc.encode_ordinary(text)) + finished for text, finished in script)
    assert stats["tokens"] == prompt_len(en) + prompt_len(zh) + prompt_len(general) + answers
