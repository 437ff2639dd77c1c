"""
test_moe.py -- tests of moe.py against independent references:
a per-token fp64 loop written in the paper's notation (routing in plain Python), hand-written
formulas for the balance loss, the bias update and the load statistics.
Run: python -m pytest -q test_moe.py
"""
import math
import types

import pytest
import torch
import torch.nn as nn

import fp8
import moe
from moe import MoE, attach_bias_update, load_stats, update_bias

pytestmark = pytest.mark.usefixtures("one_thread")


def make_cfg(**kw):
    cfg = dict(n_embd=12, n_routed_experts=8, n_experts_per_tok=2, n_shared_experts=1, moe_hidden=6,
               n_expert_groups=1, n_limited_groups=1, route_scale=2.5, score_func="sigmoid",
               bias_update_gamma=0.01, seq_aux_alpha=0.0, moe_dispatch="grouped")
    cfg.update(kw)
    return types.SimpleNamespace(**cfg)


def make_moe(dtype=torch.float64, seed=0, bias=None, **kw):
    torch.manual_seed(seed)
    m = MoE(make_cfg(**kw)).to(dtype)
    with torch.no_grad():  # weights large enough that the routing and the SwiGLU matter
        for p in m.parameters():
            p.normal_(0, 0.5)
        if bias is not None:
            m.expert_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return m


# ---- the independent reference: one token at a time, routing in plain Python ----
def ref_choose(s, bias, cfg):
    """s: list of E affinities -> the K chosen expert ids (DeepSeek-V3 §2.1.2)."""
    E, G = cfg.n_routed_experts, cfg.n_expert_groups
    biased = [s[i] + bias[i] for i in range(E)]
    allowed = set(range(E))
    if G > 1:
        size = E // G
        gscore = [sum(sorted(biased[g * size:(g + 1) * size], reverse=True)[:2]) for g in range(G)]
        best = sorted(range(G), key=lambda g: -gscore[g])[:cfg.n_limited_groups]
        allowed = {i for i in range(E) if i // size in best}
    return sorted(allowed, key=lambda i: -biased[i])[:cfg.n_experts_per_tok]


def ref_swiglu(u, w1, w3, w2):  # u (C,), w1/w3 (H, C), w2 (C, H)
    a = w1 @ u
    return w2 @ (a / (1 + torch.exp(-a)) * (w3 @ u))


def ref_moe(m, x, cfg):
    """Per-token loop. Returns y (B, T, C) and the chosen experts of every token."""
    B, T, C = x.shape
    bias = m.expert_bias.tolist()
    ys, choices = [], []
    for u in x.reshape(-1, C):
        logits = m.gate @ u  # (E,)
        sigmoid = cfg.score_func == "sigmoid"
        s = 1 / (1 + torch.exp(-logits)) if sigmoid else torch.softmax(logits, 0)
        chosen = ref_choose(s.tolist(), bias, cfg)
        g = torch.stack([s[i] for i in chosen])
        if cfg.score_func == "sigmoid":
            g = g / g.sum()
        g = g * cfg.route_scale
        y = sum(g[j] * ref_swiglu(u, m.w1[e], m.w3[e], m.w2[e]) for j, e in enumerate(chosen))
        if m.shared is not None:
            y = y + ref_swiglu(u, m.shared.w1.weight, m.shared.w3.weight, m.shared.w2.weight)
        ys.append(y)
        choices.append(chosen)
    return torch.stack(ys).view(B, T, C), choices


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def grads_of(m, x, y, seed=1):
    """Gradients of a fixed random projection of y w.r.t. x and every parameter."""
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    r = r.to(y.dtype)  # the same projection whatever the dtype of y
    names = ["x"] + [n for n, _ in m.named_parameters()]
    gs = torch.autograd.grad((y * r).sum(), [x] + list(m.parameters()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g)
            for n, g, p in zip(names, gs, [x] + list(m.parameters()))}


# bias -10 on experts 5 and 6: they never win, so some experts get no tokens
SKEW = [0.3, -0.2, 0.1, 0.0, 0.25, -10.0, -10.0, 0.05]


class Pad8(moe.ExpertGEMM):
    """The seam as bf16 on CUDA sees it: groups start at multiples of 8 rows (zero-padded)."""

    def row_align(self, a, w):
        return 8


# the grouped dispatch unpadded (the CPU default), padded as on CUDA, and the naive loop
SEAMS = {"grouped": moe.ExpertGEMM, "grouped_pad8": Pad8, "loop": moe.ExpertGEMM}


def set_dispatch(m, name):
    m.dispatch = "loop" if name == "loop" else "grouped"
    m.expert_gemm = SEAMS[name](m.expert_gemm.dim, m.expert_gemm.hidden)


@pytest.mark.parametrize("dispatch", list(SEAMS))
@pytest.mark.parametrize("score_func", ["sigmoid", "softmax"])
@pytest.mark.parametrize("groups", [(1, 1), (4, 2), (2, 1)])  # groups of 2 and 4 experts
@pytest.mark.parametrize("shared", [0, 2])
def test_matches_per_token_reference_fp64(dispatch, score_func, groups, shared):
    kw = dict(score_func=score_func, n_expert_groups=groups[0], n_limited_groups=groups[1],
              n_shared_experts=shared)
    cfg = make_cfg(**kw)
    m = make_moe(bias=SKEW, **kw)
    set_dispatch(m, dispatch)
    x = torch.randn(2, 12, 12, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_ref, choices = ref_moe(m, x, cfg)
    assert rel_err(y, y_ref) < 1e-6
    g, g_ref = grads_of(m, x, y), grads_of(m, x, y_ref)
    for name in g_ref:
        assert torch.isfinite(g[name]).all(), name
        assert rel_err(g[name], g_ref[name]) < 1e-6, name
    used = {e for c in choices for e in c}
    assert 5 not in used and 6 not in used
    for e in (5, 6):  # experts without tokens: exactly zero gradients
        for w in ("w1", "w3", "w2"):
            assert (g[w][e] == 0).all()


@pytest.mark.parametrize("dispatch", ["grouped", "grouped_pad8"])
def test_grouped_mm_kernel_fp32_matches_reference(dispatch, monkeypatch):
    calls = []
    real = torch._grouped_mm
    monkeypatch.setattr(torch, "_grouped_mm", lambda *a, **k: calls.append(k["offs"]) or real(*a, **k))
    kw = dict(n_embd=16, moe_hidden=8)  # strides of 16 bytes in fp32: _grouped_mm can run
    m = make_moe(bias=SKEW, **kw)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    m32, x32 = make_moe(torch.float32, bias=SKEW, **kw), x.float().requires_grad_()
    m32.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    set_dispatch(m32, dispatch)
    y32 = m32(x32)
    assert len(calls) == 3  # w1, w3, w2 each as one grouped GEMM
    ends = calls[0].tolist()
    if dispatch == "grouped_pad8":  # every group starts on a multiple of 8; an empty one is a block
        assert all(e % 8 == 0 for e in ends) and min(b - a for a, b in zip([0] + ends, ends)) >= 8
    else:
        assert ends[-1] == 2 * 12 * 2  # exactly the M pairs, unpadded
    y_ref, _ = ref_moe(m, x.requires_grad_(), make_cfg(**kw))
    assert rel_err(y32.double(), y_ref) < 1e-5
    g32, g_ref = grads_of(m32, x32, y32), grads_of(m, x, y_ref)
    for name in g_ref:
        assert rel_err(g32[name].double(), g_ref[name]) < 1e-5, name
        assert torch.isfinite(g32[name]).all()
    for w in ("w1", "w3", "w2"):
        assert (g32[w][5] == 0).all() and (g32[w][6] == 0).all()


@pytest.mark.parametrize("C,H", [(32, 16), (6, 3)])  # aligned (_grouped_mm) and not (fallback)
def test_grouped_and_loop_agree_fp32(C, H):
    m = make_moe(torch.float32, n_embd=C, moe_hidden=H, n_routed_experts=8, n_experts_per_tok=3)
    x = torch.randn(4, 32, C, requires_grad=True)
    y_g = m(x)
    g_g = grads_of(m, x, y_g)
    m.dispatch = "loop"
    y_l = m(x)
    g_l = grads_of(m, x, y_l)
    assert rel_err(y_g, y_l) < 1e-5
    for name in g_l:
        assert rel_err(g_g[name], g_l[name]) < 1e-5, name


def test_pad_groups_layout_by_hand():
    # counts 3, 0, 9, 1 padded to blocks of 8 (an empty group still gets one block); the
    # slack of P = round_up(13, 8) + 4 * 8 = 48 goes to the last group: offs[-1] == P
    pos, offs, P = moe._pad_groups(torch.tensor([3, 0, 9, 1]), 13, 8)
    assert P == 48 and offs.dtype == torch.int32 and offs.tolist() == [8, 16, 32, 48]
    assert pos.tolist() == [0, 1, 2] + list(range(16, 25)) + [32]
    # a group of exactly 8 rows takes one block, of 7 one block: P = 32 + 6 * 8 = 80
    pos, offs, P = moe._pad_groups(torch.tensor([3, 0, 9, 1, 8, 7]), 28, 8)
    assert P == 80 and offs.tolist() == [8, 16, 32, 40, 48, 80]
    assert pos.tolist() == [0, 1, 2] + list(range(16, 25)) + [32] + list(range(40, 48)) + list(range(48, 55))
    pos, offs, P = moe._pad_groups(torch.tensor([9, 3, 0, 5]), 17, 1)  # the CPU: no padding
    assert pos is None and offs.dtype == torch.int32 and offs.tolist() == [9, 12, 12, 17] and P == 17


@pytest.mark.parametrize("dispatch", ["grouped", "loop"])
def test_one_token_and_one_expert_for_everyone(dispatch):
    m = make_moe(moe_dispatch=dispatch, bias=[0, 0, 0, 0, 5.0, 5.0, 0, 0]).eval()
    for shape in [(1, 1, 12), (3, 9, 12)]:  # a sampling step; every token picks experts 4 and 5
        x = torch.randn(*shape, dtype=torch.float64)
        assert rel_err(m(x), ref_moe(m, x, make_cfg())[0]) < 1e-6


def test_row_align_is_16_bytes_only_where_cuda_runs_the_grouped_kernel():
    seam, w = moe.ExpertGEMM(16, 8), torch.zeros(4, 8, 16)

    def on(device, dtype, shape=(5, 16)):  # row_align reads only these: no GPU needed
        t = torch.zeros(shape, dtype=dtype)
        return types.SimpleNamespace(is_cuda=device == "cuda", device=torch.device(device), dtype=dtype,
                                     element_size=t.element_size)
    assert seam.row_align(on("cuda", torch.bfloat16), w) == 8
    assert seam.row_align(on("cuda", torch.float32), w) == 4
    assert seam.row_align(on("cuda", torch.float64), w) == 1  # no grouped kernel: no rule
    assert seam.row_align(on("cuda", torch.bfloat16), torch.zeros(4, 8, 12)) == 1  # 24-byte rows
    assert seam.row_align(on("cpu", torch.bfloat16), w) == 1
    assert moe._grouped_mm_ok(torch.zeros(5, 16), w) and not moe._grouped_mm_ok(torch.zeros(5, 16).to("meta"), w)
    bf = torch.bfloat16  # every dimension of w is a row of some operand: 16-byte multiples, out and in
    assert not moe._grouped_mm_ok(torch.zeros(5, 16, dtype=bf), torch.zeros(4, 12, 16, dtype=bf))  # out: 24 bytes
    assert not moe._grouped_mm_ok(torch.zeros(5, 12, dtype=bf), torch.zeros(4, 8, 12, dtype=bf))  # in: 24 bytes


class Record(moe.ExpertGEMM):
    """The default seam, keeping what each grouped GEMM was given."""

    def forward(self, a, w, offs):
        self.calls = getattr(self, "calls", []) + [(a.detach().clone(), offs.clone())]
        return super().forward(a, w, offs)


def test_buffer_holds_each_experts_tokens_in_token_order():
    """A stable sort: group e holds the tokens that chose e, in token order, the same rows in
    the same order as the loop's x[tok] (so FP8 quantizes the same tensors on either path)."""
    m = make_moe(n_routed_experts=8, n_experts_per_tok=3)  # 1,200 pairs: argsort(stable=False) reorders
    m.expert_gemm = Record(12, 6)
    x = torch.randn(4, 100, 12, dtype=torch.float64)
    m(x)
    a, offs = m.expert_gemm.calls[0]
    idx = m.route(x.view(-1, 12))[0]
    ends = offs.tolist()
    for e, (s, t) in enumerate(zip([0] + ends[:-1], ends)):
        tok = torch.where((idx == e).any(1))[0]  # ascending
        assert torch.equal(a[s:t], x.view(-1, 12)[tok]), e


def test_config_rules():
    MoE(make_cfg(n_expert_groups=4, n_limited_groups=1, n_experts_per_tok=2))  # K = 1 group of 2: ok
    with pytest.raises(AssertionError):
        MoE(make_cfg(n_expert_groups=3, n_limited_groups=1))  # 8 experts in 3 groups
    with pytest.raises(AssertionError):
        MoE(make_cfg(n_expert_groups=4, n_limited_groups=1, n_experts_per_tok=3))  # 3 of 2 allowed
    with pytest.raises(AssertionError):
        MoE(make_cfg(moe_dispatch="batched"))


def test_deterministic():
    m = make_moe(torch.float32, n_embd=16, moe_hidden=8)
    x = torch.randn(2, 20, 16, requires_grad=True)
    a, b = m(x), m(x)
    assert torch.equal(a, b)
    ga, gb = grads_of(m, x, a), grads_of(m, x, b)
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def test_bias_changes_choice_not_weights():
    m = make_moe()
    x = torch.randn(40, 12, dtype=torch.float64)
    idx0, w0, _ = m.route(x)
    with torch.no_grad():
        m.expert_bias[3] = 1.0  # sigmoid scores live in (0, 1): expert 3 now always wins
    idx1, w1, _ = m.route(x)
    assert not (idx0 == 3).any(dim=1).all() and (idx1 == 3).any(dim=1).all()
    s = torch.sigmoid(x @ m.gate.t())  # (N, E) the unbiased affinities
    s_chosen = s.gather(1, idx1)  # (N, K)
    want = s_chosen / s_chosen.sum(1, keepdim=True) * 2.5  # eq. 13 times route_scale, no bias
    torch.testing.assert_close(w1, want, rtol=1e-12, atol=0)


def test_group_limited_routing_masks_with_minus_inf():
    kw = dict(n_expert_groups=4, n_limited_groups=2, n_experts_per_tok=3)
    m = make_moe(**kw)
    with torch.no_grad():  # all biased scores negative: a 0-mask would pick the dropped groups
        m.expert_bias.fill_(-2.0)
        m.expert_bias[0] = -1.2
    x = torch.randn(64, 12, dtype=torch.float64)
    idx, _, _ = m.route(x)
    biased = (torch.sigmoid(x @ m.gate.t()) + m.expert_bias.double()).view(64, 4, 2)
    best = biased.sum(-1).topk(2, dim=-1).indices  # group score: the sum of its (two) experts
    for t in range(64):
        assert set((idx[t] // 2).tolist()) <= set(best[t].tolist())
    masked = m._limit_groups(biased.view(64, 8)).view(64, 4, 2)
    for t in range(64):
        for grp in set(range(4)) - set(best[t].tolist()):
            assert (masked[t, grp] == -math.inf).all()
    # a group's score is the sum of its two best experts' affinities (DeepSeek-V3 §2.1.2, node-limited
    # routing; two in its reference inference code), not of all of them: two strong beat three good
    m = make_moe(n_expert_groups=2, n_limited_groups=1)  # 2 groups of 4
    strong, broad = [0.9, 0.9, 0.0, 0.0], [0.8, 0.8, 0.8, 0.0]  # top-2 sums 1.8 > 1.6; top-3: 1.8 < 2.4
    kept = m._limit_groups(torch.tensor([strong + broad, broad + strong]))
    assert torch.isinf(kept[0, 4:]).all() and torch.equal(kept[0, :4], torch.tensor(strong))
    assert torch.isinf(kept[1, :4]).all() and torch.equal(kept[1, 4:], torch.tensor(strong))


def test_seq_aux_loss_hand_formula():
    alpha, (B, T, E, K) = 0.01, (3, 10, 8, 2)
    cfg = make_cfg(seq_aux_alpha=alpha)
    m = make_moe(seq_aux_alpha=alpha, bias=SKEW).train()
    x = torch.randn(B, T, 12, dtype=torch.float64)
    m(x)
    _, choices = ref_moe(m, x, cfg)
    total = 0.0
    for b in range(B):
        for i in range(E):
            f = E / (K * T) * sum(i in choices[b * T + t] for t in range(T))  # eq. 18
            p = 0.0
            for t in range(T):
                s = torch.sigmoid(m.gate @ x[b, t])
                p += (s[i] / s.sum()).item() / T  # eq. 19-20
            total += f * p
    assert abs(m.aux_loss.item() - alpha * total / B) < 1e-12  # eq. 17, mean over sequences
    m.aux_loss.backward()
    assert m.gate.grad.abs().sum() > 0  # the loss trains the router
    m.eval()
    m(x)
    assert m.aux_loss.item() == 0.0
    m2 = make_moe(seq_aux_alpha=0.0).train()
    m2(x)
    assert m2.aux_loss.item() == 0.0


def test_counts_accumulate_over_micro_batches_in_training_only():
    m = make_moe(bias=SKEW).train()
    xs = [torch.randn(2, 7, 12, dtype=torch.float64) for _ in range(2)]
    want = torch.zeros(8)
    for x in xs:
        m(x)
        for c in ref_moe(m, x, make_cfg())[1]:
            want[c] += 1
    assert torch.equal(m.tokens_per_expert, want)
    m.eval()
    m(xs[0])
    assert torch.equal(m.tokens_per_expert, want)  # eval forwards don't count
    m.train()
    update_bias(m)
    assert torch.equal(m.last_load, want) and (m.tokens_per_expert == 0).all()
    st = load_stats(m)
    assert st["moe0.max_mean"] == pytest.approx(want.max().item() / (2 * 14 * 2 / 8))
    assert st["moe0.dead"] == 2 and st["moe.max_mean"] == st["moe0.max_mean"]


def test_bias_update_reduces_imbalance():
    m = make_moe(torch.float32, bias_update_gamma=0.005, n_shared_experts=0).train()
    torch.manual_seed(3)
    g0 = m.gate[0].detach()
    history = []
    with torch.no_grad():
        for _ in range(100):  # fresh skewed data every step: every token leans to expert 0
            m(torch.randn(8, 128, 12) + 4 * g0 / g0.square().sum())
            update_bias(m)
            history.append(load_stats(m)["moe0.max_mean"])
    assert history[0] >= 3.0  # skewed: expert 0 takes most tokens
    late = sum(history[-20:]) / 20  # the +-gamma steps keep it jittering around balance
    assert late <= 1.4, (history[:3], history[-20:])
    assert abs(m.expert_bias.mean().item()) < 1e-6  # re-centred


def test_gamma_zero_freezes_bias_but_keeps_stats():
    m = make_moe(bias_update_gamma=0.0, bias=SKEW).train()
    m(torch.randn(2, 5, 12, dtype=torch.float64))
    update_bias(m)
    assert torch.equal(m.expert_bias, torch.tensor(SKEW))
    assert m.last_load.sum() == 2 * 5 * 2 and m.tokens_per_expert.sum() == 0


def test_load_stats_layers():
    cfg = make_cfg()
    model = nn.Sequential(MoE(cfg), nn.Linear(12, 12), MoE(cfg))
    assert load_stats(nn.Linear(3, 3)) == {}
    before = load_stats(model)  # before the first step
    assert before["moe.max_mean"] == 0.0 and before["moe0.dead"] == before["moe1.dead"] == 0
    model[0].tokens_per_expert.copy_(torch.tensor([4., 4, 4, 4, 4, 4, 4, 4]))
    model[2].tokens_per_expert.copy_(torch.tensor([16., 8, 8, 0, 0, 0, 0, 0]))
    update_bias(model)
    st = load_stats(model)
    assert st == {"moe0.max_mean": 1.0, "moe0.dead": 0, "moe1.max_mean": 4.0, "moe1.dead": 5,
                  "moe.max_mean": 4.0}
    model[0].tokens_per_expert.copy_(torch.tensor([1., 0, 0, 0, 0, 0, 0, 0]))  # a mean below 1
    update_bias(model)
    st = load_stats(model)
    assert st["moe0.max_mean"] == 8.0 and st["moe0.dead"] == 7


def test_routing_state_stays_fp32():
    m = make_moe(torch.bfloat16)
    assert m.expert_bias.dtype == m.tokens_per_expert.dtype == torch.float32
    assert m.w1.dtype == torch.bfloat16


def test_autocast_bf16_routes_in_fp32():
    m = make_moe(torch.float32, n_embd=16, moe_hidden=8).train()
    x = torch.randn(2, 16, 16)
    y32 = m(x)
    counts32 = m.tokens_per_expert.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = m(x)
    assert y16.dtype == torch.bfloat16
    assert torch.equal(m.tokens_per_expert, 2 * counts32)  # same choices: router in fp32
    assert rel_err(y16.float(), y32) < 5e-2


def spy_paths(monkeypatch):
    """Record which dispatch of MoE runs: a list that gets "_grouped", "_loop" or "_few" per forward."""
    ran = []

    def spy(name):
        real = getattr(MoE, name)

        def run(self, *args):
            ran.append(name)
            return real(self, *args)
        return run
    for name in ("_grouped", "_loop", "_few"):
        monkeypatch.setattr(MoE, name, spy(name))
    return ran


@pytest.mark.parametrize("n_tokens", [1, 5, 64])  # 64 tokens x K=2: the most pairs _few takes
def test_a_decode_step_runs_every_expert_and_matches_the_reference(n_tokens, monkeypatch):
    """Few tokens without grad (a decode step) run `_few`: every expert on every token, the
    unchosen ones weighted 0, the per-token reference's function. More pairs, a gradient, the
    loop dispatch or another seam (FP8's) keep their own path."""
    cfg, m = make_cfg(), make_moe(bias=SKEW)
    ran = spy_paths(monkeypatch)
    x = torch.randn(1, n_tokens, 12, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        assert ran == ["_few"] and rel_err(y, ref_moe(m, x, cfg)[0]) < 1e-6
        m(torch.randn(1, 65, 12, dtype=torch.float64))
        set_dispatch(m, "grouped_pad8")
        m(x)
        set_dispatch(m, "loop")
        m(x)
    set_dispatch(m, "grouped")
    m(x)
    assert ran == ["_few", "_grouped", "_grouped", "_loop", "_grouped"]


@pytest.mark.parametrize("dispatch", ["grouped", "loop"])
def test_fp8_swaps_only_the_seam_and_keeps_the_dispatch(dispatch, monkeypatch):
    """convert_to_float8 replaces the expert seam and nothing else: the grouped dispatch stays
    grouped (one fp8_linear per expert group, empty groups too), the loop runs one per used
    expert. fp8_linear is faked by an exact matmul here, so both must equal the fp64 reference."""
    calls = []
    monkeypatch.setattr(fp8, "fp8_linear", lambda a, w, recipe: calls.append((recipe, len(a))) or a @ w.t())
    kw = dict(n_embd=16, moe_hidden=16, n_shared_experts=0, moe_dispatch=dispatch)
    m = make_moe(bias=SKEW, **kw)
    assert fp8.convert_to_float8(m, "rowwise", verbose=False) == ["expert_gemm"]
    assert isinstance(m.expert_gemm, fp8.Float8ExpertGEMM) and m.expert_gemm.recipe == "rowwise"
    assert [n for n, _ in m.named_parameters()] == ["gate", "w1", "w3", "w2"]  # same state dict
    ran = spy_paths(monkeypatch)
    x = torch.randn(2, 12, 16, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_ref, choices = ref_moe(m, x, make_cfg(**kw))
    used = {e for c in choices for e in c}
    assert ran == ["_" + dispatch] and {r for r, _ in calls} == {"rowwise"}
    assert len(calls) == 3 * (8 if dispatch == "grouped" else len(used))
    assert sum(n for _, n in calls) == 3 * 2 * 12 * 2  # every (token, expert) pair, no padding
    assert rel_err(y, y_ref) < 1e-6
    g, g_ref = grads_of(m, x, y), grads_of(m, x, y_ref)
    assert all(rel_err(g[k], g_ref[k]) < 1e-6 for k in g_ref)


def test_bias_update_runs_once_per_optimizer_step(monkeypatch):
    """attach_bias_update: the update runs after opt.step() and only then, once however many
    micro-batches the step accumulated, from the counts of all of them (§2.1.2)."""
    calls = []
    real = moe.update_bias
    monkeypatch.setattr(moe, "update_bias", lambda model: calls.append(1) or real(model))
    cfg = make_cfg(bias_update_gamma=0.01)
    model = nn.Sequential(MoE(cfg), MoE(cfg)).double()  # two MoE layers: both updated
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = attach_bias_update(opt, model)
    x = torch.randn(3, 2, 5, 12, dtype=torch.float64)
    for step in range(2):
        for micro in x:  # gradient accumulation: 3 micro-batches
            model(micro).square().mean().backward()
        assert len(calls) == step  # forwards and backwards never update
        loads = [m.tokens_per_expert.clone() for m in model]
        assert all(load.sum() == 3 * 10 * 2 for load in loads)  # all micro-batches counted
        want = []
        for m, load in zip(model, loads):
            b = m.expert_bias + 0.01 * torch.sign(load.mean() - load)
            want.append(b - b.mean())
        opt.step()
        opt.zero_grad()
        assert len(calls) == step + 1
        for m, load, b in zip(model, loads, want):
            assert torch.equal(m.last_load, load) and (m.tokens_per_expert == 0).all()
            torch.testing.assert_close(m.expert_bias, b, rtol=0, atol=1e-7)
    handle.remove()
    model(x[0]).sum().backward()
    bias = model[0].expert_bias.clone()
    opt.step()
    assert len(calls) == 2 and torch.equal(model[0].expert_bias, bias)
    assert model[0].tokens_per_expert.sum() == 20  # counts wait for the next update


def test_bias_hook_on_a_model_without_moe_is_harmless():
    lin = nn.Linear(3, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    attach_bias_update(opt, lin)
    lin(torch.randn(2, 3)).sum().backward()
    w = lin.weight.detach().clone()
    opt.step()
    assert not torch.equal(lin.weight, w) and load_stats(lin) == {}


def test_grouped_mm_op_equals_torchs_grouped_mm_with_its_gradients():
    """The custom op that torch.compile runs (moe.grouped_mm): the same product, and the written-out
    backward (dgrad against w^T, wgrad per group) equal to torch's own autograd of _grouped_mm,
    an empty group included."""
    torch.manual_seed(0)
    a, w = torch.randn(10, 8), torch.randn(3, 4, 8)  # 10 rows in 3 groups: 4, 0, 6
    offs = torch.tensor([4, 4, 10], dtype=torch.int32)
    g = torch.randn(10, 4)
    outs, grads = [], []
    for mm in (torch._grouped_mm, moe.grouped_mm):
        a_, w_ = a.clone().requires_grad_(), w.clone().requires_grad_()
        y = mm(a_, w_.transpose(-2, -1), offs=offs)
        y.backward(g)
        outs.append(y.detach())
        grads.append((a_.grad, w_.grad))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (grads[1][1][1] == 0).all()  # the empty group's weights: zero gradient
    want_w0 = g[:4].t() @ a[:4]  # (out, in) of expert 0, by hand
    torch.testing.assert_close(grads[1][1][0], want_w0, rtol=1e-6, atol=1e-6)


def test_expert_counts_is_bincount(monkeypatch):
    """Eager it is bincount; the compiler's way (a comparison of fixed length) counts the same."""
    idx = torch.tensor([[0, 3], [3, 5], [5, 3]])
    assert moe.expert_counts(idx, 7).tolist() == [1, 0, 0, 3, 0, 2, 0]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(torch, "bincount", None)  # (so the compiled path cannot fall back on it)
    assert moe.expert_counts(idx, 7).tolist() == [1, 0, 0, 3, 0, 2, 0]
    assert moe.expert_counts(torch.tensor([6, 6]), 7).tolist() == [0, 0, 0, 0, 0, 0, 2]
