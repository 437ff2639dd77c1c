"""
The nanoR1 test suite: CPU only, a few minutes on 2 cores.

    python -m pytest -q    # this file, test_verify.py and test_rewards.py

Every test compares against something independent of the code under test: a per-token MoE loop
in fp64, an fp64 matmul, a hand-computed GRPO loss, known-equivalent answers, the uncached
forward pass, a run that was never killed.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import math

import data
from grpo import (LOSS_AGGS, completion_mask, group_advantages, grpo_loss, token_entropy,
                  token_logprobs, zero_variance_groups)
from model import GPT, GPTConfig

# The suites of moe.py and fp8.py live in their own files (each would make this one too long
# to read); importing them here makes `pytest test_all.py` run them. Imported first, so
# this file's own helpers keep their names. verify.py's and rewards.py's suites are
# test_verify.py and test_rewards.py, which pytest finds by itself.
from tests_fp8 import *  # noqa: E402,F401,F403
from tests_moe import *  # noqa: E402,F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))


# ==============================================================================================
# data.py: the toy world and the tokenizer

@pytest.fixture(scope="module")
def small_world():
    cfg = data.DataConfig(n_docs=1500, bpe_docs=300, vocab_size=512, n_heldout=100)
    corpus = data.build_corpus(cfg)
    return cfg, corpus, data.build_tokenizer(cfg, corpus)


def test_same_seed_same_corpus():
    a = data.build_corpus(data.DataConfig(n_docs=300, seed=5))
    b = data.build_corpus(data.DataConfig(n_docs=300, seed=5))
    c = data.build_corpus(data.DataConfig(n_docs=300, seed=6))
    assert a == b and a != c


def test_heldout_never_in_training_data(small_world):
    cfg, corpus, _ = small_world
    text = "\n".join(corpus)
    held = data.heldout_problems(cfg)
    rl = data.rl_problems(cfg, 300, seed=3)
    assert {p.key for p in held}.isdisjoint({p.key for p in rl})
    for p in held:  # the question, in either language, never occurs in the pretraining corpus
        assert p.question not in text, p.question
        assert data.split_of(p.kind, p.key) == "heldout"
    # both phrasings of every held-out problem are absent too (the key decides, not the language)
    for p in held[:50]:
        other = data.make_problem(random.Random(1), p.kind, p.difficulty, "zh" if p.lang == "en" else "en", "heldout")
        assert other.question not in text


def test_problem_answers_are_right():
    """The solution writers' gold answers agree with exact arithmetic (sympy-free reference)."""
    from fractions import Fraction
    assert (data.poly_str(1, -1, 0), data.poly_str(2, 0, -4), data.poly_str(-1, 1, 1)) == ("x^2 - x", "2x^2 - 4", "-x^2 + x + 1")
    rng = random.Random(0)
    for _ in range(200):
        key, q, _, steps, ans = data.gen_arith(rng, rng.randint(1, 3))
        assert int(ans) == key[0] * key[1] and ans in steps[-1][0]
        (a, b, c), _, _, steps, ans = data.gen_linear(rng, rng.randint(1, 3))
        assert Fraction(int(ans.split("=")[1]) * a + b) == c
        (op, a, b, c, e), _, _, steps, ans = data.gen_frac(rng, rng.randint(1, 2))
        assert Fraction(ans) == Fraction(a, b) + (1 if op == "+" else -1) * Fraction(c, e)
        (c, a, b), _, _, steps, ans = data.gen_poly(rng, rng.randint(1, 2))
        assert ans == data.poly_str(c, c * b + a, a * b)  # (cx + a)(x + b) = cx^2 + (cb + a)x + ab


def test_tokenizer_roundtrip(small_world):
    _, _, enc = small_world
    samples = ["Compute 347 * 6.", "计算 347 * 6。所以结果是 -5/12。", "<think> x </think> <answer> 2082 </answer>",
               "  leading and trailing  \n\n\t", "emoji 🙂 and ünïcödé", "１２３ full-width", "", "a<|endoftext|>b"]
    rng = random.Random(0)
    chars = [c for c in map(chr, range(0x80, 0x10FFF)) if not 0xD800 <= ord(c) <= 0xDFFF]  # no lone surrogates
    samples += ["".join(rng.choice([chr(rng.randint(32, 126)), chr(rng.randint(0x4E00, 0x9FFF)), rng.choice(chars)])
                        for _ in range(rng.randint(1, 40))) for _ in range(200)]
    for s in samples:
        assert enc.decode(enc.encode_ordinary(s)) == s
    ids = enc.encode("a<|endoftext|>b", allowed_special="all")
    assert enc.eot_token in ids and enc.decode(ids) == "a<|endoftext|>b"
    for tok in enc.encode_ordinary("12345 + 67890 = 80235"):  # digits are one per token
        assert sum(ch.isdigit() for ch in enc.decode([tok])) <= 1


def test_tokenizer_rank_file(small_world, tmp_path):
    import base64
    _, _, enc = small_world
    path = tmp_path / "tok.tiktoken"
    data.save_tokenizer(enc, str(path))
    lines = path.read_text().splitlines()
    tok, rank = lines[300].split()
    assert int(rank) == 300 and enc._mergeable_ranks[base64.b64decode(tok)] == 300
    enc2 = data.load_tokenizer(str(path))
    s = "题目：计算 1/4 + 2/3。 Expand (x + 3)(x - 5)."
    assert enc2.encode_ordinary(s) == enc.encode_ordinary(s) and enc2.eot_token == enc.eot_token


# ==============================================================================================
# model.py

def tiny_model(moe=True, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, mlp_hidden=64,
                    n_routed_experts=4 if moe else 0, moe_hidden=16, n_dense_layers=1, init_std=0.2)
    return GPT(cfg).eval()


def test_cached_and_uncached_generation_agree():
    model = tiny_model()
    prompts = [[1, 2, 3, 4, 5, 6], [7], [9, 9, 9]]
    cached = model.generate(prompts, 30, eot=96, temperature=0)
    uncached = model.generate(prompts, 30, eot=96, temperature=0, use_cache=False)
    assert cached == uncached
    # a row's continuation does not depend on the other rows' lengths (padding is invisible)
    for p, c in zip(prompts, cached):
        assert model.generate([p], 30, eot=96, temperature=0) == [c]


def test_cached_logits_match_full_forward():
    model = tiny_model()
    idx = torch.randint(0, 96, (2, 20))
    full, _ = model(idx)
    from model import KVCache
    caches = [KVCache(2, 2, 20, 8, "cpu", torch.float32) for _ in range(2)]
    outs = []
    for t in range(20):
        mask = torch.ones(2, 1, 1, t + 1, dtype=torch.bool)
        logits, _ = model(idx[:, t:t + 1], pos=torch.full((2, 1), t), mask=mask, caches=caches)
        outs.append(logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-4)


def test_generate_stops_at_eot_and_sampling_filters():
    model = tiny_model()
    out = model.generate([[1, 2]], 40, eot=96, temperature=0)[0]
    with torch.no_grad():
        model.lm_head.weight[96] += 50.0  # (tied) eot now dominates every position
    stop = model.generate([[1, 2], [3]], 40, eot=96, temperature=1.0)
    assert all(s[-1] == 96 and s.count(96) == 1 for s in stop)
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    from model import sample_token
    assert {int(sample_token(logits, 1.0, 1, None, g)) for _ in range(20)} == {3}
    assert {int(sample_token(logits, 1.0, None, 0.5, g)) for _ in range(50)} <= {2, 3}
    assert len(out) > 0


def test_training_reduces_loss():
    model = tiny_model(seed=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 96, (4, 32))
    losses = []
    for _ in range(30):
        _, loss = model(x, x.roll(-1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ==============================================================================================
# train.py: the CLI, the tiny pretrain, checkpoints that survive SIGKILL

def run(args, **kw):
    return subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *args], capture_output=True, text=True,
                          cwd=HERE, **kw)


@pytest.mark.parametrize("argv,needle", [(["--no_such_flag", "1"], "valid flags"), (["--preset", "huge"], "tiny"),
                                         (["--stage", "nope"], "pretrain"), (["--lr", "fast"], "invalid float"),
                                         (["--rl_mix", "arith:9"], "difficulty 1-3"), (["--fp8", "int4"], "blockwise")])
def test_bad_flags_exit_2(argv, needle):
    r = run(argv)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


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


def test_killed_run_resumes(killed_and_resumed):
    out, killed, stdout = killed_and_resumed
    assert killed["step"] > 0 and killed["step"] < 60
    assert f"resuming from step {killed['step']}" in stdout
    final = torch.load(os.path.join(out, "pretrain", "ckpt.pt"), map_location="cpu", weights_only=True)
    assert final["step"] == 60
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "pretrain", "metrics.jsonl"))]
    assert steps[-1] == 60 and max(steps) == 60


def test_tiny_pretrain_outputs(killed_and_resumed):
    out, _, _ = killed_and_resumed
    d = os.path.join(out, "pretrain")
    ev = json.load(open(os.path.join(d, "eval.json")))
    for k in ("accuracy", "format_rate", "lang_consistency", "mean_response_tokens", "n"):
        assert k in ev
    rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    assert rows[-1]["loss"] < ev["first_loss"] - 1.0  # it learned something
    enc = data.load_tokenizer(os.path.join(d, "tokenizer.tiktoken"))
    assert enc.decode(enc.encode_ordinary("Compute 12 * 3.")) == "Compute 12 * 3."


# ==============================================================================================
# grpo.py: the loss and advantages against hand loops over python floats

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
def test_loss_matches_hand_computation(agg, eps_high):
    logp, old, ref, adv, mask = tensors()
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, clip_eps_high=eps_high,
                            beta=0.04, loss_agg=agg, max_tokens=6)
    want, clip_frac = reference_loss(agg, eps_high=eps_high, max_tokens=6)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    assert stats["clip_frac"] == pytest.approx(clip_frac)
    # the example really exercises clipping: ratios 1.35, 1.25 (A > 0) and 0.67, 0.74 (A < 0);
    # eps_high=0.4 unclips the two upper ones
    assert clip_frac == (pytest.approx(4 / 9) if eps_high is None else pytest.approx(2 / 9))
    assert stats["kl"] > 0


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
        assert token_entropy(logits, temp)[0, t].item() == pytest.approx(H, rel=1e-6)
    assert token_entropy(logits, 1.0)[0, 1].item() == pytest.approx(math.log(3), rel=1e-6)


# ==============================================================================================
# grpo.py + train.py: the step end to end

def test_grpo_step_raises_reward_on_easy_task(killed_and_resumed):
    """GRPO on the tiny base with an easy verifiable reward (the share of digit characters in
    the response) must raise the reward, measured on fresh samples before and after."""
    import grpo
    import train
    out, _, _ = killed_and_resumed
    ckpt = train.load_checkpoint(os.path.join(out, "pretrain", "ckpt.pt"))
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


def test_grpo_step_options_run(killed_and_resumed):
    """The off-by-default options: dynamic sampling refills zero-variance groups; mu > 1 with
    minibatches moves the ratio to the old policy away from 1 and the KL away from 0."""
    import grpo
    import train
    out, _, _ = killed_and_resumed
    ckpt = train.load_checkpoint(os.path.join(out, "pretrain", "ckpt.pt"))
    enc, cfgs = ckpt["enc"], ckpt["configs"]
    model = GPT(GPTConfig(**cfgs["model"]))
    model.load_state_dict(ckpt["model"])
    ref = grpo.make_reference(model)
    rc = grpo.RLConfig(prompts_per_step=2, group_size=4, max_new_tokens=12, rl_lr=1e-2, beta=0.04, mu=2,
                       n_minibatches=2, micro_batch=3, dynamic_sampling=True)
    problems = data.rl_problems(data.DataConfig(**cfgs["data"]), 4, seed=0)
    refilled = []

    def score(texts, probs):  # the first prompt's group is all-equal, so it must be replaced
        r = [0.0 if p is problems[0] else float(i % 2) for i, p in enumerate(probs)]
        return {"reward": r, "accuracy": r, "format": r, "lang": r}

    def refill(n):
        refilled.append(n)
        return problems[2:2 + n]
    opt = torch.optim.AdamW(model.parameters(), lr=rc.rl_lr)
    st = grpo.grpo_step(model, ref, opt, enc, problems[:2], rc, score, torch.Generator().manual_seed(0), refill)
    assert refilled == [1] and st["zero_var_frac"] == 0.5
    assert all(math.isfinite(st[k]) for k in ("kl", "clip_frac", "ratio", "entropy"))
    assert st["kl"] > 0 and abs(st["ratio"] - 1) > 1e-6  # later minibatches see a moved policy


def test_bench_moe_runs_small():
    """bench.py's moe group at a small shape: every timer runs and gives a finite ratio (no
    timing is asserted; speed is bench.py's business)."""
    import bench
    r = bench._ratios((2, 16, 32, 4, 2, 1, 16), repeats=1, with_loop=True, warmup=0)
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("dense", "loop", "floor", "moe_ms"))
