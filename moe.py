"""
moe.py -- DeepSeekMoE: router, routed + shared experts, token dispatch, load balancing.

A library module: `model.py` puts `MoE(cfg)` where a dense block has its MLP; `train.py` calls
`attach_bias_update(optimizer, model)` once, where it builds the optimizer, and logs
`load_stats(model)`. Check it with `python -m pytest test_moe.py` (every path against a
per-token fp64 loop); time it with `python bench.py moe` (the figures of bench.py's `moe` group).

Letters used in shape comments:
  B batch, T time, C model width (n_embd), N = B*T tokens, E routed experts,
  K experts per token, S shared experts, H hidden size of one expert, G expert groups,
  M = N*K (token, expert) pairs, P >= M rows of the (padded on CUDA) grouped-GEMM buffer.

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
+gamma if expert i was under the mean load, -gamma if over. It runs as an optimizer step
post-hook (`attach_bias_update`; torchtitan hooks its update onto the optimizer too), so it
runs once per step whatever the loop, and counting every forward of the step makes gradient
accumulation see the whole step. (2) The complementary sequence-wise balance loss (eq. 17-20)
with a small alpha: L = alpha * sum_i f_i P_i per sequence, f_i the share of the sequence's
tokens routed to i (times E/K), P_i its mean normalised affinity. The gradient flows only
through P. `self.aux_loss` holds it after each forward.

Dispatch. No capacity factor and no token dropping (§2.1.2). The M (token, expert) pairs are
sorted by expert (stable), the tokens gathered into that order in one jagged buffer (offs =
where each expert's rows end), and each of the three weight matrices runs as one grouped GEMM
through `expert_gemm`, the seam below. Unconverted, that is `torch._grouped_mm`. Its rules,
from the torch source and checked by experiment (torch 2.13): every operand stride a multiple
of 16 bytes on every device (fp32: C and H multiples of 4); fp32/bf16/fp16 only (fp64 is
refused); output rows past offs[-1] are left uninitialised. CUDA runs a grouped CUTLASS
kernel for bf16 on sm90/sm100 (others get torch's per-group loop); its weight-gradient GEMM
slices rows at the offsets, so each group must start on a 16-byte boundary (8 bf16 rows;
torchtitan pads alike): there groups are padded with zero rows. An empty group gets one block
of zeros, as empty groups gave garbage weight gradients on B200 (pytorch issue #172439). The
padded size is fixed without reading counts on the host (no GPU sync) and its slack goes to
the last group, so offs[-1] equals the rows allocated. The CPU runs the groups as a loop of
GEMMs and needs no row alignment: there the buffer is exactly M rows, unpadded, and the GEMMs
alone take 0.47-0.74 of the naive loop's time at the bench shape over our runs
(`moe.gemm_floor_vs_loop`): the most any dispatch can save on a CPU. Zero rows give zero
outputs and zero gradients; no row is ever past the last offset. Where `_grouped_mm` can't
run (fp64, unaligned sizes, other devices) the same buffer goes through one matmul per group.
Combine: out_t = sum_k g_tk y_tk. The weight g is folded into the hidden activation before
w2 (w2 is linear, so it is the same function; with H <= C it is the cheaper place), in both
dispatches, so that under FP8 they quantize the same tensors. A scatter-add of M rows into N
(index_add_) runs atomics on CUDA, so its summation order is not fixed. Instead each token
reads its K rows back (a gather) and sums them in a fixed order: the same scatter-add,
bitwise deterministic on every device. Dispatch and combine are each other's transpose, so
`_Shuffle` uses each as the other's backward: only gathers and copies to distinct rows. (The
stock backward of x[order // K] accumulates repeated indices, which torch documents as
nondeterministic even on CPU, and index_add_ took 88 ms against 8 ms for a gather of
8192x512 on our 2-thread CPU.)
`moe_dispatch='loop'` is the naive reference (per expert: find its tokens, run, add).

The seam (torchtitan's `_grouped_mm`, "overridable seam for low-precision variants"). Every
expert GEMM of both dispatches goes through one module, `ExpertGEMM`: called as
`expert_gemm(a, w, offs)` by the grouped dispatch, `expert_gemm.linear(a, w[e])` by the loop,
and `row_align` says where a group may start. Nothing else here knows about precision.
`fp8.convert_to_float8` swaps it for `fp8.Float8ExpertGEMM`, which runs one `fp8.fp8_linear`
per expert group of the same jagged buffer: that expert's weight quantized with the recipe,
all three GEMMs (forward, dgrad, wgrad) in FP8; sorting, gathers and combine stay the grouped
dispatch's, and no padding is needed (each group is quantized into a buffer of its own). A
loop, on CPU and CUDA alike, because torch's one FP8 grouped GEMM (`torch._scaled_grouped_mm`)
is CUDA-only and takes rowwise (sm90) or MX (sm100) scales: neither tensorwise nor the
1x128 / 128x128 blockwise recipe. The loop reads offs on the host (a GPU sync).

Deliberate differences from the paper: biases are re-centred to mean zero after each update
(top-K, group choice included, is unchanged by a common shift; this only stops drift); the
f_i of the balance loss counts the experts actually chosen (with bias and group limit), the
load we want balanced; the S shared experts are one SwiGLU of hidden S*H (the same function
as S experts summed); group-limited routing saves no communication here, it is kept so that
the routing is the paper's.
"""
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import dist


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) with nn.Linear layers, so FP8 conversion can swap them."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _grouped_mm_ok(a, w):
    """Can torch._grouped_mm take a (P, in) and w (E, out, in)? (rules in the module docstring)"""
    return (a.device.type in ("cpu", "cuda") and a.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and all(d * a.element_size() % 16 == 0 for d in w.shape[1:]))


class ExpertGEMM(nn.Module):
    """The seam for the routed experts' GEMMs: rows of group e times w[e]^T (module docstring).
    No parameters: the MoE owns the weights, so swapping this changes no state-dict key."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.dim, self.hidden = dim, hidden  # C and H, for fp8.convert_to_float8's size rules

    def linear(self, a, w):
        """One expert: a (n, in), w (out, in) -> (n, out) in a's dtype."""
        return a @ w.to(a.dtype).t()

    def row_align(self, a, w):
        """Groups start at multiples of this many rows: CUDA's kernel slices rows at offs."""
        return 16 // a.element_size() if a.is_cuda and _grouped_mm_ok(a, w) else 1

    def forward(self, a, w, offs):
        """a (P, in) grouped by offs (E,) int32 group ends, w (E, out, in) -> (P, out)."""
        w = w.to(a.dtype)
        if _grouped_mm_ok(a, w):
            mm = grouped_mm if torch.compiler.is_compiling() else torch._grouped_mm
            return mm(a, w.transpose(-2, -1), offs=offs)
        return self.per_group(a, w, offs)

    def per_group(self, a, w, offs):
        """`linear` once per group of the jagged buffer (a host read of offs)."""
        ends = offs.tolist()
        return torch.cat([self.linear(a[s:t], w[e]) for e, (s, t) in enumerate(zip([0] + ends[:-1], ends))])

    def extra_repr(self):
        return f"dim={self.dim}, hidden={self.hidden}"


# Under torch.compile (the pretrain step, loops.compiled) the grouped GEMM runs as a custom op
# that the compiler treats as opaque: it cannot trace torch._grouped_mm itself, whose fake-tensor
# rule (torch 2.13) asks for bf16 operands. The same kernel, with the backward written out:
# dgrad is a grouped GEMM against the transposed weights, wgrad a grouped GEMM whose offsets cut
# the shared dimension (a[group e]^T g[group e] for each e). test_moe.py checks both against
# torch's own autograd of torch._grouped_mm. Eager runs call torch._grouped_mm directly.
@torch.library.custom_op("nanor1::grouped_mm", mutates_args=())
def grouped_mm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """a (P, in) grouped by offs (E,), b (E, in, out) -> (P, out)."""
    return torch._grouped_mm(a, b, offs=offs)


@torch.library.custom_op("nanor1::grouped_mm_wgrad", mutates_args=())
def grouped_mm_wgrad(a: torch.Tensor, g: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """a (P, in), g (P, out) grouped by offs (E,) -> (E, in, out)."""
    return torch._grouped_mm(a.t(), g, offs=offs)


grouped_mm.register_fake(lambda a, b, offs: a.new_empty(a.shape[0], b.shape[-1]))
grouped_mm_wgrad.register_fake(lambda a, g, offs: a.new_empty(offs.shape[0], a.shape[1], g.shape[1]))


def _grouped_mm_backward(ctx, grad):
    a, b, offs = ctx.saved_tensors
    grad = grad.contiguous()
    return grouped_mm(grad, b.transpose(-2, -1), offs), grouped_mm_wgrad(a, grad, offs), None


grouped_mm.register_autograd(_grouped_mm_backward, setup_context=lambda ctx, inputs, output:
                             ctx.save_for_backward(*inputs))


def expert_counts(idx, E):
    """How many entries of idx (any shape) name each of the E experts -> (E,) int64. Eager:
    bincount. Under torch.compile, a comparison whose length does not depend on the data
    (bincount's does, and breaks the graph); (M, E) booleans, so only where it must."""
    if not torch.compiler.is_compiling():
        return torch.bincount(idx.flatten(), minlength=E)
    return (idx.reshape(-1, 1) == torch.arange(E, device=idx.device)).sum(0)


def _pad_groups(counts, M, align):
    """The jagged layout with every group padded to a multiple of `align` rows. counts (E,) ->
    pos (M,) row of each sorted pair (None when align is 1: row i is pair i), offs (E,) int32
    group ends, and P rows in all."""
    if align == 1:
        return None, counts.cumsum(0).int(), M  # offs[-1] == M: nothing past the last group
    E = counts.numel()
    padded = ((counts + align - 1) // align).clamp(min=1) * align  # (E,) empty group: one block
    P = (M + align - 1) // align * align + E * align  # >= sum(padded), known without a sync
    ends = padded.cumsum(0)
    offs = torch.cat([ends[:-1], ends.new_full((1,), P)])  # the last group takes the slack
    expert = torch.repeat_interleave(torch.arange(E, device=counts.device), counts, output_size=M)  # (M,)
    first = counts.cumsum(0) - counts  # (E,) first sorted pair of each expert
    pos = torch.arange(M, device=counts.device) - first[expert] + (ends - padded)[expert]  # (M,)
    return pos, offs.int(), P


FEW_PAIRS = 128  # at most this many (token, expert) pairs, without grad: MoE._few (a decode step)


class Dispatch(NamedTuple):
    """Where the rows go between token order (N rows) and the expert-sorted buffer (P rows)."""
    token: torch.Tensor  # (M,) token of each sorted pair
    pos: torch.Tensor | None  # (M,) buffer row of each sorted pair; None: row i is pair i
    slot_rows: torch.Tensor  # (M,) buffer row of pair n*K + k
    rows: int  # P
    K: int


def _shuffle(x, d, to_buffer):
    """Token order (N, C) -> expert-sorted buffer (P, C), or back with the K slots summed."""
    if to_buffer:
        xs = x.index_select(0, d.token)  # (M, C)
        return xs if d.pos is None else xs.new_zeros(d.rows, x.shape[1]).index_copy_(0, d.pos, xs)
    return x.index_select(0, d.slot_rows).view(-1, d.K, x.shape[1]).sum(1)  # (N, C) fixed order


class _Shuffle(torch.autograd.Function):
    """Dispatch (to_buffer) and combine, each the other's backward: gathers, a copy to distinct
    rows and a sum over K in a fixed order. Deterministic on every device, with no index_add_
    (the stock backward of a gather: atomics on CUDA, 11x slower than a gather here on CPU)."""

    @staticmethod
    def forward(ctx, x, d, to_buffer):
        ctx.d, ctx.to_buffer = d, to_buffer  # index tensors, never modified
        return _shuffle(x, d, to_buffer)

    @staticmethod
    def backward(ctx, grad):
        return _shuffle(grad, ctx.d, not ctx.to_buffer), None, None


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
        self.expert_gemm = ExpertGEMM(C, H)  # the seam FP8 overrides
        self.shared = SwiGLU(C, S * H) if S > 0 else None
        self.register_buffer("expert_bias", torch.zeros(E))  # b of §2.1.2: part of the model
        self.register_buffer("tokens_per_expert", torch.zeros(E), persistent=False)
        self.register_buffer("last_load", torch.zeros(E), persistent=False)  # last step's counts
        self.aux_loss = torch.zeros(())
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
                self.tokens_per_expert += expert_counts(idx, self.E).float()
        use_aux = self.training and self.alpha > 0
        self.aux_loss = self._seq_aux_loss(scores, idx, B, T) if use_aux else scores.new_zeros(())
        dev = x.device.type  # run the experts in the dtype F.linear would use under autocast
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        run = self._grouped if self.dispatch == "grouped" else self._loop
        if self.dispatch == "grouped" and B * T * self.K <= FEW_PAIRS and not torch.is_grad_enabled() \
                and type(self.expert_gemm) is ExpertGEMM:  # a decode step of full-precision experts
            run = self._few
        y = run(xf.to(cdt), idx, weight.to(cdt))
        if self.shared is not None:
            y = y + self.shared(xf)
        return y.view(B, T, C)

    def _loop(self, x, idx, weight):
        """The naive reference: per expert, find its tokens, run it, add. (N, C) -> (N, C)"""
        linear = self.expert_gemm.linear
        out = torch.zeros_like(x)
        for e in range(self.E):
            tok, slot = torch.where(idx == e)  # a token picks e at most once: tok is unique
            if tok.numel() == 0:
                continue  # no work; its weights get zero gradients
            xe = x[tok]  # (n_e, C)
            h = F.silu(linear(xe, self.w1[e])) * linear(xe, self.w3[e])  # (n_e, H)
            out = out.index_add(0, tok, linear(h * weight[tok, slot, None], self.w2[e]))
        return out

    def _grouped(self, x, idx, weight):
        """Sort pairs by expert, three grouped GEMMs, fixed-order combine. (N, C) -> (N, C)"""
        N, K, gemm = x.shape[0], self.K, self.expert_gemm
        flat = idx.flatten()  # (M,) expert of pair n*K + k
        order = flat.argsort(stable=True)  # (M,) pairs sorted by expert
        counts = expert_counts(flat, self.E)  # (E,)
        pos, offs, P = _pad_groups(counts, N * K, gemm.row_align(x, self.w1))
        inv = order.argsort()  # (M,) sorted position of pair n*K + k
        d = Dispatch(order // K, pos, inv if pos is None else pos[inv], P, K)
        xs = _Shuffle.apply(x, d, True)  # (P, C) padding rows are zeros
        w = weight.flatten()[order]  # (M,) routing weight of each sorted pair
        if pos is not None:
            w = w.new_zeros(P).index_copy(0, pos, w)  # (P,)
        h = F.silu(gemm(xs, self.w1, offs)) * gemm(xs, self.w3, offs)  # (P, H)
        ys = gemm(h * w.unsqueeze(-1), self.w2, offs)  # (P, C) w2 is linear: g folded in
        return _Shuffle.apply(ys, d, False)  # (N, C)

    def _few(self, x, idx, weight):
        """A decode step's few tokens, without grad: every expert on every token in three plain
        GEMMs, the unchosen ones weighted 0. At this size a GEMM costs its call, not its FLOPs:
        the sort and the E tiny per-expert GEMMs of `_grouped` cost more than E/K times the
        FLOPs (bench.py grpo). The same function. (N, C) -> (N, C)"""
        N, (E, H, C) = x.shape[0], self.w1.shape
        w1, w3, w2 = (w.to(x.dtype) for w in (self.w1, self.w3, self.w2))
        g = x.new_zeros(N, E).scatter_(1, idx, weight)  # (N, E) the routing weight, 0 if not chosen
        h = F.silu(x @ w1.view(E * H, C).t()) * (x @ w3.view(E * H, C).t())  # (N, E*H)
        h = (h.view(N, E, H) * g.unsqueeze(-1)).view(N, E * H)
        return h @ w2.transpose(1, 2).reshape(E * H, C)  # (N, C): the sum over experts is the GEMM's


# ---- balancing and stats ----
def _moe_layers(model):
    return [m for m in model.modules() if isinstance(m, MoE)]


@torch.no_grad()
def update_bias(model):
    """After an optimizer step: aux-loss-free bias update (§2.1.2), then reset the counts."""
    for m in _moe_layers(model):
        load = dist.all_reduce(m.tokens_per_expert)  # (E,) the step's tokens, every micro-batch and rank
        if m.gamma > 0:  # an empty step gives sign(0) = 0: no change
            m.expert_bias += m.gamma * torch.sign(load.mean() - load)
            m.expert_bias -= m.expert_bias.mean()  # top-K ignores a common shift: stop drift
        m.last_load.copy_(load)
        load.zero_()


def attach_bias_update(optimizer, model):
    """Run update_bias(model) after every optimizer.step(): once per training step, however
    many micro-batches it accumulated (§2.1.2). Returns the handle (.remove() detaches it)."""
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: update_bias(model))


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
