"""
moe.py -- DeepSeekMoE: router, routed + shared experts, token dispatch, load balancing.

A library module: `model.py` puts `MoE(cfg)` where a dense block has its MLP, and `train.py`
calls `update_bias(model)` after every optimizer step and logs `load_stats(model)`.
Check it with `python -m pytest tests_moe.py` (every path against a per-token fp64 loop);
time it with `python bench.py moe` (the figures of bench.py's `moe` group).

Letters used in shape comments:
  B batch, T time, C model width (n_embd), N = B*T tokens, E routed experts,
  K experts per token, S shared experts, H hidden size of one expert, G expert groups,
  M = N*K (token, expert) pairs, P >= M rows of a padded grouped-GEMM buffer.

Routing (DeepSeek-V3 report §2.1.2, eq. 12-16). The affinity of token u to expert i is
s_i = sigmoid(u . e_i), e_i a row of the raw (E, C) `gate` parameter. The gate is not an
nn.Linear, so FP8 conversion never touches it, and its product is computed in fp32 (or fp64)
even under autocast: the report keeps the gating in high precision (§3.3). The K experts are
chosen by s_i + b_i, where b is the `expert_bias` buffer, but the weights applied to their
outputs use s alone: g_i = s_i / sum_{j chosen} s_j (eq. 13), times `route_scale`.
`score_func='softmax'` (DeepSeek-V2 style) uses the softmax probabilities of the chosen experts
as they are, without renormalising (as V2 and the V3 reference code do), so a token whose
mass is spread over unchosen experts gets a smaller update.
Group-limited routing (the node-limited routing of §2.1.2): the E experts form G groups, a
group scores the sum of its two highest biased affinities, the best `n_limited_groups` groups
survive and every other expert is masked with -inf. Not 0: biased scores can be negative, and
a 0 would then beat a legitimate expert.

Balancing. (1) Auxiliary-loss-free (§2.1.2): every training forward adds its token counts to
`tokens_per_expert`; after the optimizer step `update_bias` moves b_i by gamma toward balance,
+gamma if expert i was under the mean load, -gamma if over. Counting every forward of the step
makes gradient accumulation see the whole step. (2) The complementary sequence-wise balance
loss (eq. 17-20) with a small alpha: L = alpha * sum_i f_i P_i per sequence, f_i the share of
the sequence's tokens routed to i (times E/K), P_i its mean normalised affinity. The gradient
flows only through P. `self.aux_loss` holds it after each forward.

Dispatch. No capacity factor and no token dropping (§2.1.2). The M (token, expert) pairs are
sorted by expert (stable), the tokens gathered into that order, and each of the three weight
matrices runs as one `torch._grouped_mm`. Its rules, from the torch source and checked by
experiment (torch 2.13): every operand stride a multiple of 16 bytes on every device (fp32:
C and H multiples of 4); fp32/bf16/fp16 only (fp64 is refused); output rows past offs[-1]
are left uninitialised. Two layouts of the sorted rows:
- jagged (the default): one (M, C) buffer, offs = where each expert's rows end. CUDA runs a
  grouped CUTLASS kernel for bf16 on sm90/sm100 (others get torch's per-group loop); its
  weight-gradient GEMM slices rows at the offsets, so each group must start on a 16-byte
  boundary (8 bf16 rows; torchtitan pads alike): groups are padded with zero rows. An empty
  group gets one block of zeros, as empty groups gave garbage weight gradients on B200
  (pytorch issue #172439). The padded size is fixed without reading counts on the host (no
  GPU sync) and its slack goes to the last group, so offs[-1] equals the rows allocated.
  The CPU runs the groups as a loop of GEMMs and needs no row alignment: there the buffer is
  exactly M rows, unpadded, and the GEMMs alone take 0.65-0.74 of the naive loop's time at
  the bench shape (`moe.gemm_floor_vs_loop`): the most any dispatch can save on this CPU.
- batched (`gemm_layout='batched'`): experts padded with zero rows to the busiest one,
  (E, cap, C), one 3-D `_grouped_mm` (a bmm). It spends FLOPs on padding (9% at the bench
  shape) and measured slower than jagged on a quiet 2-core CPU at both bench shapes. It once
  measured faster on a box shared with other jobs, where each of the jagged form's E OpenMP
  regions may wait a scheduler tick for its second thread.
Zero rows give zero outputs and zero gradients; no row is ever past the last offset. Where
`_grouped_mm` can't run (fp64, unaligned sizes, other devices) the same buffers go through
plain matmuls, one per group when jagged.
Combine: out_t = sum_k g_tk y_tk. The weight g is folded into the hidden activation before
w2 (w2 is linear, so it is the same function; with H <= C it is the cheaper place). A
scatter-add of M rows into N (index_add_) runs atomics on CUDA, so its summation order is
not fixed. Instead each token reads its K rows back (a gather) and sums them in a fixed
order: the same scatter-add, bitwise deterministic on every device. Dispatch and combine
are each other's transpose, so `_Shuffle` uses each as the other's backward: only gathers
and copies to distinct rows. (The stock backward of x[order // K] accumulates repeated
indices, which torch documents as nondeterministic even on CPU, and index_add_ took 88 ms
against 8 ms for a gather of 8192x512 on our 2-thread CPU.)
`moe_dispatch='loop'` is the naive reference (per expert: find its tokens, run, add); it also
runs the experts when FP8 is on (`fp8_recipe` set), one `fp8.fp8_linear` per expert GEMM.

Deliberate differences from the paper: biases are re-centred to mean zero after each update
(top-K, group choice included, is unchanged by a common shift; this only stops drift); the
f_i of the balance loss counts the experts actually chosen (with bias and group limit), the
load we want balanced; the S shared experts are one SwiGLU of hidden S*H (the same function
as S experts summed); group-limited routing saves no communication here, it is kept so that
the routing is the paper's.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) with nn.Linear layers, so FP8 conversion can swap them."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _grouped_mm_ok(a, *ws):
    """Can torch._grouped_mm take these operands? (rules in the module docstring)"""
    return (hasattr(torch, "_grouped_mm") and a.device.type in ("cpu", "cuda")
            and a.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and all(d * a.element_size() % 16 == 0 for w in ws for d in w.shape[1:]))


def _gmm(a, w, offs, use_gmm):
    """Rows of group e times w[e]^T, w (E, out, in). Jagged: a (P, in) grouped by offs -> (P, out);
    batched (offs None): a (E, cap, in) -> (E, cap, out)."""
    if use_gmm:
        return torch._grouped_mm(a, w.transpose(-2, -1), offs=offs)
    if offs is None:
        return a @ w.transpose(-2, -1)
    ends = offs.tolist()  # one matmul per group on the same buffer (fp64 tests, odd sizes)
    return torch.cat([a[s:t] @ w[e].t() for e, (s, t) in enumerate(zip([0] + ends[:-1], ends))])


def _slots(counts, starts, M):
    """Row of each of the M sorted pairs in a padded buffer whose group e starts at starts[e]."""
    arange = torch.arange(counts.numel(), device=counts.device)
    expert = torch.repeat_interleave(arange, counts, output_size=M)  # (M,) no GPU sync
    first = counts.cumsum(0) - counts  # (E,) first sorted row of each expert
    return torch.arange(M, device=counts.device) - first[expert] + starts[expert]  # (M,)


def _pad_groups(counts, M, align):
    """Jagged layout with every group padded to a multiple of `align` rows.
    counts (E,) -> pos (M,) row of each sorted pair, offs (E,) int32 group ends, P rows."""
    E = counts.numel()
    padded = ((counts + align - 1) // align).clamp(min=1) * align  # (E,) empty group: one block
    P = (M + align - 1) // align * align + E * align  # >= sum(padded), known without a sync
    ends = padded.cumsum(0)
    offs = torch.cat([ends[:-1], ends.new_full((1,), P)])  # the last group takes the slack
    return _slots(counts, ends - padded, M), offs.int(), P


def _shuffle(x, maps, to_buffer):
    """Token order (N, C) -> expert-sorted buffer (P, C), or back with the K slots summed."""
    src, pos, slot_rows, P, K = maps
    if to_buffer:
        xs = x.index_select(0, src)  # (M, C) the token of each sorted pair
        return xs if pos is None else xs.new_zeros(P, x.shape[1]).index_copy_(0, pos, xs)
    return x.index_select(0, slot_rows).view(-1, K, x.shape[1]).sum(1)  # (N, C) fixed order


class _Shuffle(torch.autograd.Function):
    """Dispatch (to_buffer) and combine, each the other's backward: gathers, a copy to distinct
    rows and a sum over K in a fixed order. Deterministic on every device, with no index_add_
    (the stock backward of a gather: atomics on CUDA, 11x slower than a gather here on CPU)."""

    @staticmethod
    def forward(ctx, x, maps, to_buffer):
        ctx.maps, ctx.to_buffer = maps, to_buffer  # index tensors, never modified
        return _shuffle(x, maps, to_buffer)

    @staticmethod
    def backward(ctx, grad):
        return _shuffle(grad, ctx.maps, not ctx.to_buffer), None, None


class MoE(nn.Module):
    """(B, T, C) -> (B, T, C): shared experts + top-K of E routed SwiGLU experts."""

    def __init__(self, cfg):
        super().__init__()
        C, E, H, S = cfg.n_embd, cfg.n_routed_experts, cfg.moe_hidden, cfg.n_shared_experts
        self.E, self.K = E, cfg.n_experts_per_tok
        self.n_groups, self.n_limited = cfg.n_expert_groups, cfg.n_limited_groups
        self.route_scale, self.score_func = float(cfg.route_scale), cfg.score_func
        self.gamma, self.alpha = float(cfg.bias_update_gamma), float(cfg.seq_aux_alpha)
        self.dispatch = cfg.moe_dispatch
        assert self.score_func in ("sigmoid", "softmax"), self.score_func
        assert self.dispatch in ("grouped", "loop"), self.dispatch
        assert E % self.n_groups == 0 and self.K <= self.n_limited * E // self.n_groups
        self.gate = nn.Parameter(torch.empty(E, C))  # raw, so FP8 conversion leaves it alone
        self.w1 = nn.Parameter(torch.empty(E, H, C))
        self.w3 = nn.Parameter(torch.empty(E, H, C))
        self.w2 = nn.Parameter(torch.empty(E, C, H))
        self.shared = SwiGLU(C, S * H) if S > 0 else None
        self.register_buffer("expert_bias", torch.zeros(E))  # b of §2.1.2: part of the model
        self.register_buffer("tokens_per_expert", torch.zeros(E), persistent=False)
        self.register_buffer("last_load", torch.zeros(E), persistent=False)  # last step's counts
        self.aux_loss = torch.zeros(())
        self.fp8_recipe = None  # set by fp8.convert_to_float8
        self.gemm_layout = "jagged"  # or 'batched' (module docstring)
        self.group_align = None  # jagged: rows per padded group; None = what the device needs
        self.reset_parameters()

    def reset_parameters(self):
        for w in (self.gate, self.w1, self.w3, self.w2):
            nn.init.normal_(w, std=0.02)

    def _apply(self, fn, *args, **kwargs):
        # model.to(bfloat16) must not demote the routing state: +-gamma steps vanish in bf16
        super()._apply(fn, *args, **kwargs)
        for name in ("expert_bias", "tokens_per_expert", "last_load"):
            setattr(self, name, getattr(self, name).float())
        return self

    # ---- routing ----
    def route(self, x):
        """x (N, C) -> idx (N, K) chosen experts, weight (N, K) applied, scores (N, E)."""
        rdt = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):  # gating in high precision (§3.3)
            logits = x.to(rdt) @ self.gate.to(rdt).t()  # (N, E)
        scores = logits.sigmoid() if self.score_func == "sigmoid" else logits.softmax(-1)
        biased = scores.detach() + self.expert_bias  # the bias only chooses
        if self.n_groups > 1:
            biased = self._limit_groups(biased)
        idx = biased.topk(self.K, dim=-1).indices  # (N, K)
        weight = scores.gather(1, idx)  # (N, K) unbiased affinities
        if self.score_func == "sigmoid":
            weight = weight / weight.sum(-1, keepdim=True)  # eq. 13
        return idx, weight * self.route_scale, scores

    def _limit_groups(self, biased):
        """Keep the n_limited best of G groups; -inf elsewhere. (N, E) -> (N, E)"""
        N = biased.shape[0]
        g = biased.view(N, self.n_groups, -1)  # (N, G, E/G)
        group_score = g.topk(min(2, g.shape[-1]), dim=-1).values.sum(-1)  # (N, G)
        keep = group_score.topk(self.n_limited, dim=-1).indices  # (N, n_limited)
        drop = torch.ones_like(group_score, dtype=torch.bool).scatter_(1, keep, False)
        return g.masked_fill(drop.unsqueeze(-1), float("-inf")).view(N, -1)

    def _seq_aux_loss(self, scores, idx, B, T):
        """DeepSeek-V3 eq. 17-20, averaged over the B sequences."""
        E, K = self.E, self.K
        chosen = torch.zeros_like(scores).scatter_(1, idx, 1.0)  # (N, E) 0/1
        f = chosen.view(B, T, E).sum(1) * (E / (K * T))  # (B, E) eq. 18
        p = (scores / scores.sum(-1, keepdim=True)).view(B, T, E).mean(1)  # (B, E) eq. 19-20
        return self.alpha * (f * p).sum(-1).mean()  # eq. 17

    # ---- forward ----
    def forward(self, x):
        B, T, C = x.shape
        xf = x.reshape(B * T, C)  # (N, C)
        idx, weight, scores = self.route(xf)
        if self.training:
            with torch.no_grad():  # all micro-batches of a step count (update_bias resets)
                self.tokens_per_expert += torch.bincount(idx.flatten(), minlength=self.E).float()
        use_aux = self.training and self.alpha > 0
        self.aux_loss = self._seq_aux_loss(scores, idx, B, T) if use_aux else scores.new_zeros(())
        dev = x.device.type  # run the experts in the dtype F.linear would use under autocast
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        xc, weight = xf.to(cdt), weight.to(cdt)
        if self.fp8_recipe is not None:
            import fp8  # lazily: moe.py works without it
            recipe = self.fp8_recipe
            y = self._loop(xc, idx, weight, lambda a, w: fp8.fp8_linear(a, w, recipe))
        elif self.dispatch == "loop":
            y = self._loop(xc, idx, weight, lambda a, w: a @ w.to(a.dtype).t())
        else:
            y = self._grouped(xc, idx, weight)
        if self.shared is not None:
            y = y + self.shared(xf)
        return y.view(B, T, C)

    def _loop(self, x, idx, weight, linear):
        """The naive reference: per expert, find its tokens, run it, add. (N, C) -> (N, C)"""
        out = torch.zeros_like(x)
        for e in range(self.E):
            tok, slot = torch.where(idx == e)  # a token picks e at most once: tok is unique
            if tok.numel() == 0:
                continue  # no work; its weights get zero gradients
            xe = x[tok]  # (n_e, C)
            ye = linear(F.silu(linear(xe, self.w1[e])) * linear(xe, self.w3[e]), self.w2[e])
            out = out.index_add(0, tok, ye.to(x.dtype) * weight[tok, slot, None])
        return out

    def _grouped(self, x, idx, weight):
        """Sort pairs by expert, three grouped GEMMs, fixed-order combine. (N, C) -> (N, C)"""
        (N, C), K, E = x.shape, self.K, self.E
        flat = idx.flatten()  # (M,) expert of pair n*K + k
        order = flat.argsort(stable=True)  # (M,) pairs sorted by expert
        counts = torch.bincount(flat, minlength=E)  # (E,)
        w1, w3, w2 = (p.to(x.dtype) for p in (self.w1, self.w3, self.w2))
        use_gmm = _grouped_mm_ok(x, w1, w2)
        pos, offs, P = self._layout(counts, N * K, x, use_gmm)
        inv = order.argsort()  # (M,) sorted position of pair n*K + k
        maps = (order // K, pos, inv if pos is None else pos[inv], P, K)  # see _shuffle
        xs = _Shuffle.apply(x, maps, True)  # (P, C) padding rows are zeros
        w = weight.flatten()[order]  # (M,) routing weight of each sorted pair
        if pos is not None:
            w = w.new_zeros(P).index_copy(0, pos, w)  # (P,)
        if offs is None:  # batched: (E * cap, .) -> (E, cap, .)
            xs, w = xs.view(E, -1, C), w.view(E, -1)
        h = F.silu(_gmm(xs, w1, offs, use_gmm)) * _gmm(xs, w3, offs, use_gmm)  # (P, H)
        ys = _gmm(h * w.unsqueeze(-1), w2, offs, use_gmm).view(-1, C)  # (P, C) w2 is linear
        return _Shuffle.apply(ys, maps, False)  # (N, C)

    def _layout(self, counts, M, x, use_gmm):
        """Rows for the GEMMs: pos (M,) of each sorted pair or None (unpadded), offs (E,) group
        ends or None (batched), and the row count P (see the module docstring)."""
        E = counts.numel()
        if self.gemm_layout == "batched":
            cap = int(counts.max())  # a host read (a GPU sync on CUDA)
            return _slots(counts, torch.arange(E, device=x.device) * cap, M), None, E * cap
        align = self.group_align or (16 // x.element_size() if x.is_cuda and use_gmm else 1)
        if align == 1:
            return None, counts.cumsum(0).int(), M  # offs[-1] == M: nothing past the last group
        return _pad_groups(counts, M, align)


# ---- balancing and stats, called by train.py ----
def _moe_layers(model):
    return [m for m in model.modules() if isinstance(m, MoE)]


@torch.no_grad()
def update_bias(model):
    """After an optimizer step: aux-loss-free bias update (§2.1.2), then reset the counts."""
    for m in _moe_layers(model):
        load = m.tokens_per_expert  # (E,) tokens of the whole step (all micro-batches)
        if m.gamma > 0:  # an empty step gives sign(0) = 0: no change
            m.expert_bias += m.gamma * torch.sign(load.mean() - load)
            m.expert_bias -= m.expert_bias.mean()  # top-K ignores a common shift: stop drift
        m.last_load.copy_(load)
        load.zero_()


def load_stats(model):
    """{moe{i}.max_mean, moe{i}.dead} per MoE layer from the last step, plus the worst
    max/mean as moe.max_mean. 0 before the first step; {} without MoE layers."""
    stats = {}
    for i, m in enumerate(_moe_layers(model)):
        load = m.last_load.detach().cpu()
        mean = load.mean().item()
        stats[f"moe{i}.max_mean"] = load.max().item() / mean if mean > 0 else 0.0
        stats[f"moe{i}.dead"] = int((load == 0).sum()) if mean > 0 else 0
    if stats:
        stats["moe.max_mean"] = max(v for k, v in stats.items() if k.endswith(".max_mean"))
    return stats
