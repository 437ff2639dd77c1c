"""Tests for fp8.py (CPU only): python -m pytest test_fp8.py

Error bounds are derived, not tuned. Rounding to e4m3 (3 mantissa bits) moves a normal value
by at most 2^-4 of itself, to e5m2 by 2^-3; a subnormal (below 2^-6 resp. 2^-14 after scaling)
by at most half the subnormal spacing, 2^-10 resp. 2^-17, times the scale. So for every element
    |deq(q(x)) - x| <= u |x| + d s + (fp32 rounding of x/s and q*s: 2^-23 |x|).
A GEMM sums K such products; with e_a, e_b those per-element bounds, each product is off by at
most e_a (|b| + e_b) + |a| e_b, and fp32 accumulation adds gamma_K sum |a b| (Higham), so
    |C_fp8 - C_fp64| <= e_a @ (|b| + e_b)^T + |a| @ e_b^T + gamma_(K+3) |a^| @ |b^|^T  (elementwise).
The scale s of an element is at most amax(tensor)/fp8_max for every granularity, so the test
uses that (looser for fine granularities, but independent of the code under test).
"""
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fp8
import moe
from model import GPT, GPTConfig
from test_moe import SKEW, make_cfg, make_moe, ref_choose, spy_paths

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
U = {E4M3: 2.0 ** -4, E5M2: 2.0 ** -3}        # max relative rounding error of a normal
D = {E4M3: 2.0 ** -10, E5M2: 2.0 ** -17}      # half the subnormal spacing
MIN_NORMAL = {E4M3: 2.0 ** -6, E5M2: 2.0 ** -14}
FMAX = {E4M3: 448.0, E5M2: 57344.0}
U32 = 2.0 ** -24

pytestmark = pytest.mark.usefixtures("one_thread")


def elem_bound(x, dtype, scale):
    """Per-element bound on |dequantize(quantize(x)) - x| for scales `scale` (broadcastable)."""
    x = x.double().abs()
    return U[dtype] * x + D[dtype] * scale + 2 ** -23 * x


def gemm_bound(a, b, da, db):
    """Bound on |fp8(a) @ fp8(b)^T - a @ b^T| for a (M, K), b (N, K) in fp64."""
    a, b = a.double(), b.double()
    ea = elem_bound(a, da, a.abs().max() / FMAX[da])
    eb = elem_bound(b, db, b.abs().max() / FMAX[db])
    K = a.shape[1]
    gamma = (K + 3) * U32 / (1 - (K + 3) * U32)
    return ea @ (b.abs() + eb).t() + a.abs() @ eb.t() + gamma * (a.abs() + ea) @ (b.abs() + eb).t()


def mixed(R, C, seed, spread=3.0):
    """Values spanning 10^-spread .. 10^spread, both signs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(R, C, generator=g) * 10 ** ((torch.rand(R, C, generator=g) * 2 - 1) * spread)


def group_amax_fp64(x, gran):
    """The amax of each element's scale group, computed directly in fp64, as an (R, C) map."""
    x = x.double().abs()
    R, C = x.shape
    out = torch.empty_like(x)
    bh, bw = {"tensor": (R, C), "row": (1, C), "1x128": (1, 128), "128x128": (128, 128)}[gran]
    for r in range(0, R, bh):
        for c in range(0, C, bw):
            out[r:r + bh, c:c + bw] = x[r:r + bh, c:c + bw].max()
    return out


# ---------------------------------------------------------------------------------------------
# quantize / dequantize

@pytest.mark.parametrize("dtype", [E4M3, E5M2])
@pytest.mark.parametrize("gran", fp8.GRANULARITIES)
def test_quantize_error_within_format_bound(gran, dtype):
    x = mixed(200, 300, seed=1)  # partial tiles on both axes
    q, s = fp8.quantize(x, gran, dtype)
    assert q.dtype == dtype and s.dtype == torch.float32
    expected_shape = {"tensor": (), "row": (200, 1), "1x128": (200, 3), "128x128": (2, 3)}[gran]
    assert tuple(s.shape) == expected_shape
    s_map = group_amax_fp64(x, gran) / FMAX[dtype]              # scale = amax / fp8_max
    s_code = fp8.dequantize(torch.ones_like(x).to(dtype), s, gran).double()
    assert torch.allclose(s_code, s_map, rtol=2 ** -22, atol=0)
    err = (fp8.dequantize(q, s, gran).double() - x.double()).abs()
    assert (err <= elem_bound(x, dtype, s_map)).all()
    normal = x.double().abs() >= MIN_NORMAL[dtype] * s_map      # pure relative bound for normals
    assert (err[normal] <= (U[dtype] + 2 ** -23) * x.double().abs()[normal]).all()
    assert err.max() > 0                                        # it really was rounded
    # the largest element of each group lands on the format's max: no range wasted
    assert q.float().abs().max() == FMAX[dtype]


@pytest.mark.parametrize("gran", fp8.GRANULARITIES)
def test_all_zero_groups_are_exact_zeros(gran):
    x = torch.randn(256, 256)
    x[:128, :128] = 0                                            # a zero 128x128 block / tiles
    for t in (x, torch.zeros(64, 32)):
        q, s = fp8.quantize(t, gran)
        d = fp8.dequantize(q, s, gran)
        assert torch.isfinite(s).all() and torch.isfinite(d).all()
        assert (d[t == 0] == 0).all()
    assert (fp8.quantize(torch.zeros(64, 32), gran)[1] == 1).all()  # documented choice: scale 1


@pytest.mark.parametrize("gran", ["tensor", "1x128"])
def test_extreme_magnitudes(gran):
    big = torch.randn(16, 256) * 1e36                            # near fp32's top
    tiny = torch.randn(16, 256) * 1e-39                          # fp32 subnormals: amax/448 underflows
    for x in (big, tiny):
        q, s = fp8.quantize(x, gran)
        d = fp8.dequantize(q, s, gran)
        assert torch.isfinite(s).all() and (s > 0).all() and torch.isfinite(d).all()
        bound = elem_bound(x, E4M3, torch.finfo(torch.float32).tiny + x.abs().max().double() / 448)
        assert ((d.double() - x.double()).abs() <= bound).all()


def test_nonfinite_inputs_poison_their_tile_and_never_saturate():
    x = torch.randn(4, 512)
    x[1, 5] = float("inf")
    x[2, 300] = float("nan")
    q, s = fp8.quantize(x, "1x128")
    d = fp8.dequantize(q, s, "1x128")
    assert torch.isnan(s[1, 0]) and torch.isnan(s[2, 2])
    assert torch.isnan(d[1, :128]).all() and torch.isnan(d[2, 256:384]).all()
    poisoned = torch.zeros_like(x, dtype=torch.bool)
    poisoned[1, :128] = poisoned[2, 256:384] = True
    assert torch.isfinite(d[~poisoned]).all()                   # other tiles unharmed
    ok, xo = d[~poisoned].double(), x[~poisoned]
    assert ((ok - xo.double()).abs() <= elem_bound(xo, E4M3, xo.abs().max() / 448)).all()
    qt, st = fp8.quantize(x, "tensor", E5M2)                     # one group: all of it poisoned
    assert torch.isnan(fp8.dequantize(qt, st)).all()
    with pytest.raises(ValueError):
        fp8.quantize(x, "1x128", strict=True)
    # through the layer: rows touching the bad tiles are NaN, never a finite saturated value
    w = torch.randn(128, 512) * 0.05
    for recipe in fp8.RECIPES:
        y = fp8.fp8_linear(x, w, recipe)
        assert torch.isnan(y[1]).all() and torch.isnan(y[2]).all(), recipe
        if recipe != "tensorwise":
            assert torch.isfinite(y[[0, 3]]).all(), recipe


def test_outliers_1x128_tiles_beat_one_scale_per_tensor():
    """One massive activation (as LLMs have) sets the per-tensor scale so high that ordinary
    values fall into e4m3's subnormals or to zero; with 1x128 tiles only its own tile pays."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1024, generator=g)
    x[7, 300] = 3e4
    ordinary = torch.ones_like(x, dtype=torch.bool)
    ordinary[7, 256:384] = False                                  # the outlier's tile
    rel = {}
    for gran in ("tensor", "1x128"):
        q, s = fp8.quantize(x, gran)
        err = (fp8.dequantize(q, s, gran).double() - x.double()).abs()
        rel[gran] = (err[ordinary] / x.double().abs()[ordinary]).mean().item()
        flushed = ((q.float() == 0) & (x != 0))[ordinary].float().mean().item()
        if gran == "1x128":
            tile_bound = elem_bound(x, E4M3, torch.tensor(0.0))[ordinary] \
                + D[E4M3] * group_amax_fp64(x, "1x128")[ordinary] / 448
            assert (err[ordinary] <= tile_bound).all() and flushed < 0.01
        else:
            assert flushed > 0.03  # |x| < 2^-10 s = 0.065 rounds to 0: ~5% of N(0,1) values
    assert rel["1x128"] < U[E4M3] / 2 < U[E4M3] < rel["tensor"], rel  # tensor: beyond e4m3's promise


# ---------------------------------------------------------------------------------------------
# the layer against fp64

@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_linear_output_and_all_three_gradients_match_fp64(recipe):
    g = torch.Generator().manual_seed(2)
    S, I, O = 100, 256, 384                                       # S not a multiple of 16 or 128
    x = torch.randn(S, I, generator=g).requires_grad_()
    w = (torch.randn(O, I, generator=g) * 0.05).requires_grad_()
    dy = torch.randn(S, O, generator=g) * 1e-3
    y = fp8.fp8_linear(x, w, recipe)
    y.backward(dy)
    spec = fp8._SPEC[recipe]
    dt = {k: (spec[k][0][1], spec[k][1][1]) for k in spec}        # (left, right) fp8 dtypes
    x64, w64, dy64 = x.detach().double(), w.detach().double(), dy.double()
    checks = [("y", y, x64 @ w64.t(), gemm_bound(x64, w64, *dt["fwd"])),
              ("dx", x.grad, dy64 @ w64, gemm_bound(dy64, w64.t(), *dt["dgrad"])),
              ("dW", w.grad, dy64.t() @ x64, gemm_bound(dy64.t(), x64.t(), *dt["wgrad"]))]
    for name, got, ref, bound in checks:
        err = (got.double() - ref).abs()
        assert (err <= bound).all(), (name, (err / bound).max().item())
        assert err.max() > 1e-4 * ref.abs().max(), name           # FP8 really was used
        # and on average far better than the worst case: relative error of a few percent
        assert (got.double() - ref).norm() / ref.norm() < 2 * sum(U[d] for d in dt["fwd"]), name


def test_dtypes_shapes_and_bias():
    lin = nn.Linear(128, 256)
    f = fp8.Float8Linear.from_linear(lin, "blockwise")
    assert f.weight is lin.weight and f.bias is lin.bias
    assert f.state_dict().keys() == lin.state_dict().keys()
    x = torch.randn(2, 3, 128, dtype=torch.bfloat16, requires_grad=True)
    y = f(x)
    assert y.shape == (2, 3, 256) and y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and f.weight.grad.dtype == torch.float32
    ref = lin(x.detach().float())
    assert ((y.float() - ref).norm() / ref.norm()) < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):             # runs under autocast too
        assert torch.isfinite(f(x.detach().float())).all()
    empty = fp8.fp8_linear(torch.randn(0, 128), lin.weight, "rowwise")  # an expert with no tokens
    assert empty.shape == (0, 256)
    assert fp8.Float8Linear(128, 256).bias is not None                # nn.Linear's defaults


def test_the_gemms_stay_fp32_under_autocast():
    """Under bf16 autocast (how train.py runs the forward) the three GEMMs are exactly what _qmm
    computes in fp32: autocast never re-rounds the CPU emulation's matmuls, backward included."""
    torch.manual_seed(0)
    x, w, dy = torch.randn(16, 128), torch.randn(256, 128), torch.randn(16, 256)
    spec, pad = fp8._SPEC["blockwise"], lambda t: fp8._pad_rows(t, fp8.TILE)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fp8.fp8_linear(xa, wa, "blockwise")
    y.backward(dy)
    assert torch.equal(y, fp8._qmm(x, w, spec["fwd"]))
    assert torch.equal(xa.grad, fp8._qmm(dy, w.t(), spec["dgrad"]))
    assert torch.equal(wa.grad, fp8._qmm(pad(dy).t(), pad(x).t(), spec["wgrad"]))


def test_quantize_refuses_what_it_cannot_read():
    with pytest.raises(AssertionError):
        fp8.quantize(torch.randn(4, 128), "2x2")      # no such granularity
    with pytest.raises(AssertionError):
        fp8.quantize(torch.randn(2, 4, 128), "row")   # (R, C) only


def test_gradients_only_where_asked():
    """A frozen weight still passes dx back; an input that needs none still gives dW."""
    x, w = torch.randn(32, 128), torch.randn(256, 128)
    for needs in ((True, False), (False, True)):
        xa, wa = x.clone().requires_grad_(needs[0]), w.clone().requires_grad_(needs[1])
        fp8.fp8_linear(xa, wa, "rowwise").sum().backward()
        assert (xa.grad is not None, wa.grad is not None) == needs
        for t in (xa, wa):
            if t.grad is not None:
                assert t.grad.abs().sum() > 0


@pytest.mark.parametrize("gran", fp8.GRANULARITIES)
def test_dequantize_reads_the_granularity_from_the_scales(gran):
    x = mixed(200, 256, seed=5)                  # 1x128 scales (200, 2): no shape is ambiguous
    q, s = fp8.quantize(x, gran)
    assert torch.equal(fp8.dequantize(q, s), fp8.dequantize(q, s, gran))


# ---------------------------------------------------------------------------------------------
# CUDA's rules, and the Hopper path up to the device

def meta(t):
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def operands(M, K, N, ga="1x128", gb="128x128", da=E4M3, db=E4M3):
    qa, sa = fp8.quantize(torch.randn(M, K), ga, da)
    qb, sb = fp8.quantize(torch.randn(N, K), gb, db)
    return qa, qb.t(), fp8._cuda_scale(sa, ga, True), fp8._cuda_scale(sb, gb, False)


def torch_cuda_meta_accepts(a, b, sa, sb, ga, gb):
    try:
        fp8._cuda_gemm(meta(a), meta(b), meta(sa), meta(sb), ga, gb, torch.bfloat16)
        return True
    except (RuntimeError, ValueError):
        return False


def bad_configs():
    """(name, arguments of _check_cuda_rules, does torch's meta kernel check it too): each call
    is a valid one with one thing changed. The rules the meta kernels skip, CUDA checks at run
    time in aten/src/ATen/native/cuda/ScaledBlas.cpp (torch 2.13): "mat1 and mat2 shapes cannot
    be multiplied", "Multiplication of two Float8_e5m2 matrices is not supported", "Only bf16,
    fp16, and fp32 high precision output types", and blockwise scaling of e4m3 only."""
    M, K, N = 64, 384, 256  # Kb = 3 -> L4 = 4: the padded 128x128 layout matters
    a, b, sa, sb = operands(M, K, N)
    ta, tb, tsa, tsb = operands(M, K, N, "tensor", "tensor")
    ra, rb, rsa, rsb = operands(M, K, N, "row", "row")
    wa, wb, wsa, wsb = operands(M, K, N, "1x128", "1x128")
    T, R, B = ("tensor", "tensor"), ("row", "row"), ("1x128", "128x128")
    yield "3-d a", (ta[None], tb, tsa, tsb, *T), True
    yield "K mismatch", (ta[:, :368], tb, tsa, tsb, *T), False
    yield "bf16 operands", (ta.to(torch.bfloat16), tb, tsa, tsb, *T), True
    yield "e5m2 x e5m2", (*operands(M, K, N, *T, E5M2, E5M2), *T), False
    yield "K % 16", (*operands(M, 120, N, *T), *T), True
    yield "N % 16", (*operands(M, K, 120, *T), *T), True
    yield "column-major a", (ta.t().contiguous().t(), tb, tsa, tsb, *T), True
    yield "a strides (1, 1)", (ta.as_strided((M, K), (1, 1)), tb, tsa, tsb, *T), True
    yield "row-major b", (ta, tb.contiguous(), tsa, tsb, *T), True
    yield "b strides (1, 1)", (ta, tb.as_strided((K, N), (1, 1)), tsa, tsb, *T), True
    yield "pair row x tensor", (ra, rb, rsa, tsb, "row", "tensor"), True
    yield "pair 128x128 x 128x128", (*operands(128, K, N, "128x128", "128x128"), "128x128", "128x128"), True
    yield "bf16 scales", (ta, tb, tsa.to(torch.bfloat16), tsb, *T), True
    yield "tensorwise scale_a (M, 1)", (ta, tb, rsa, tsb, *T), True
    yield "rowwise scale_b (N, 1)", (ra, rb, rsa, rsb.reshape(N, 1), *R), True
    yield "rowwise 1-d scales", (ra, rb, rsa.flatten(), rsb.flatten(), *R), True
    yield "rowwise scale_a strided", (ra, rb, rsa.repeat(1, 2)[:, :1], rsb, *R), True
    yield "rowwise scale_b strided", (ra, rb, rsa, rsb.repeat(1, 2)[:, ::2], *R), True
    yield "blockwise e5m2 a", (*operands(M, K, N, *B, E5M2, E4M3), *B), False
    yield "blockwise K % 128", (*operands(M, 144, N), *B), True
    yield "128x128 b with N % 128", (*operands(M, K, 80), *B), True
    yield "128x128 a with M % 128", (*operands(M, K, N, "128x128", "1x128"), "128x128", "1x128"), True
    yield "1x128 scale_a row-major", (a, b, sa.contiguous(), sb, *B), True
    yield "1x128 scale_a strides (1, 1)", (a, b, sa.as_strided(sa.shape, (1, 1)), sb, *B), True
    yield "1x128 scale_b row-major", (wa, wb, wsa, wsb.contiguous(), "1x128", "1x128"), True
    yield "128x128 scale_b unpadded", (a, b, sa, sb[:3], *B), True
    yield "128x128 scale_b wrong major", (a, b, sa, sb.contiguous(), *B), True


@pytest.mark.parametrize("name", [n for n, _, _ in bad_configs()])
def test_cuda_rule_checker_rejects_what_cuda_rejects(name):
    args, meta_checks = {n: (a, m) for n, a, m in bad_configs()}[name]
    with pytest.raises(ValueError, match="CUDA would reject"):
        fp8._check_cuda_rules(*args)
    if meta_checks:
        assert not torch_cuda_meta_accepts(*args)                 # torch's own CUDA rules agree


def test_cuda_rule_checker_rejects_output_dtypes_cuda_has_not():
    args = (*operands(48, 256, 80, "tensor", "tensor"), "tensor", "tensor")
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        fp8._check_cuda_rules(*args, out_dtype=dtype)            # no raise
    with pytest.raises(ValueError, match="output dtype"):
        fp8._check_cuda_rules(*args, out_dtype=torch.float64)


def valid_configs():
    """Calls CUDA takes, including the edge layouts: one K tile (a 1x128 scale whose stride
    along K is moot), one 128-row block, 16-wide operands, each blockwise pair."""
    for ga, gb, M, K, N in [("tensor", "tensor", 48, 256, 80), ("row", "row", 48, 256, 80),
                            ("row", "row", 16, 16, 16), ("1x128", "128x128", 48, 256, 128),
                            ("1x128", "1x128", 48, 256, 80), ("128x128", "1x128", 128, 384, 80),
                            ("1x128", "128x128", 48, 128, 256)]:
        yield ga, gb, operands(M, K, N, ga, gb)
    a, b, sa, sb = operands(48, 128, 80, "1x128", "1x128")
    yield "1x128", "1x128", (a, b, sa.contiguous(), sb.contiguous())  # (outer, 1) strides (1, 1)


def test_cuda_rule_checker_accepts_valid_calls():
    for ga, gb, ops in valid_configs():
        fp8._check_cuda_rules(*ops, ga, gb)                       # no raise
        assert torch_cuda_meta_accepts(*ops, ga, gb), (ga, gb, [tuple(t.shape) for t in ops])
    with pytest.raises(ValueError, match="multiples of 16"):      # fp8_linear checks on every GEMM
        fp8.fp8_linear(torch.randn(4, 40), torch.randn(32, 40), "tensorwise")


@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_hopper_path_runs_up_to_the_device(recipe, monkeypatch):
    """Record every scaled GEMM of a forward+backward on CPU, then replay each through the same
    fp8_mm on meta tensors: that takes the CUDA branch (torch._scaled_mm / F.scaled_mm with
    ScalingType) and torch's CUDA layout and scale-stride rules, without a GPU."""
    calls, checks = [], []
    orig_mm, orig_check = fp8.fp8_mm, fp8._check_cuda_rules
    monkeypatch.setattr(fp8, "fp8_mm", lambda *a: calls.append(a) or orig_mm(*a))
    monkeypatch.setattr(fp8, "_check_cuda_rules", lambda *a, **k: checks.append(a) or orig_check(*a, **k))
    x = torch.randn(2, 50, 256, requires_grad=True)               # S = 100 tokens
    w = torch.randn(384, 256, requires_grad=True)
    fp8.fp8_linear(x, w, recipe).sum().backward()
    assert len(calls) == 3 and len(checks) == 3                   # fwd, dgrad, wgrad; all checked
    shapes = [(100, 384), (100, 256), (384, 256)]
    kernels = []                                                   # and with what accumulation

    def spy(real):
        def run(*args, **kwargs):
            kernels.append(kwargs)
            return real(*args, **kwargs)
        return run
    monkeypatch.setattr(torch, "_scaled_mm", spy(torch._scaled_mm))
    monkeypatch.setattr(F, "scaled_mm", spy(F.scaled_mm))
    for (qa, sa, ga, qb, sb, gb), shape in zip(calls, shapes):
        out = orig_mm(meta(qa), meta(sa), ga, meta(qb), meta(sb), gb)
        assert out.device.type == "meta" and tuple(out.shape) == shape and out.dtype == torch.bfloat16
    assert len(kernels) == 3 and all(k["use_fast_accum"] is False for k in kernels)  # §3.3.2: fp32 sums


# ---------------------------------------------------------------------------------------------
# converting models, training

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 128)
        self.up = nn.Linear(128, 256)
        self.narrow = nn.Linear(256, 64)                          # 64: ok for 16, not for 128
        self.odd = nn.Linear(64, 10)                              # 10: never
        self.router = nn.Linear(64, 64)                           # a router by name
        self.norm = nn.LayerNorm(64)
        self.lm_head = nn.Linear(64, 50)


def moe_layer(H=128, C=128, E=16):
    return moe.MoE(make_cfg(n_embd=C, moe_hidden=H, n_routed_experts=E, n_shared_experts=0))


def test_convert_reports_and_skips(capsys):
    m = nn.ModuleDict({"toy": Toy(), "moe": moe_layer(), "small_moe": moe_layer(H=48)})
    got = fp8.convert_to_float8(m, "tensorwise")
    assert got == ["toy.up", "toy.narrow", "moe.expert_gemm", "small_moe.expert_gemm"]
    assert isinstance(m.toy.up, fp8.Float8Linear) and type(m.toy.odd) is nn.Linear
    assert type(m.toy.lm_head) is nn.Linear and type(m.toy.router) is nn.Linear
    assert type(m.moe.expert_gemm) is fp8.Float8ExpertGEMM and m.moe.expert_gemm.recipe == "tensorwise"
    out = capsys.readouterr().out
    assert "toy.lm_head" in out and "toy.odd" in out and "router" in out
    seam, up = m.moe.expert_gemm, m.toy.up                          # converting again: new recipe,
    assert fp8.convert_to_float8(m, "rowwise", verbose=False) == got  # same modules
    assert m.moe.expert_gemm is seam and seam.recipe == up.recipe == "rowwise" and m.toy.up is up
    m = nn.ModuleDict({"toy": Toy(), "moe": moe_layer(), "small_moe": moe_layer(H=48)})
    got = fp8.convert_to_float8(m, "tensorwise", skip=("toy.up", "narrow", "moe.*"), verbose=False)
    assert got == ["small_moe.expert_gemm"]                        # a full name, a last part, a glob
    m = nn.ModuleDict({"toy": Toy(), "moe": moe_layer(), "small_moe": moe_layer(H=48)})
    assert fp8.convert_to_float8(m, "blockwise", verbose=False) == ["toy.up", "moe.expert_gemm"]
    assert type(m.small_moe.expert_gemm) is moe.ExpertGEMM and type(m.toy.narrow) is nn.Linear
    assert fp8.convert_to_float8(m, "off") == [] and fp8.convert_to_float8(m, None) == []


def tiny_moe_gpt():
    """A tiny GPT, one dense block and one MoE block, every FP8-able size a multiple of 128."""
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_kv_head=2, n_embd=128,
                         mlp_hidden=256, n_routed_experts=4, n_experts_per_tok=2, moe_hidden=128,
                         n_shared_experts=1, n_dense_layers=1))


@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_converted_model_trains(recipe, monkeypatch):
    model = tiny_moe_gpt()
    converted = fp8.convert_to_float8(model, recipe, verbose=False)
    assert "lm_head" not in converted and "blocks.1.mlp.expert_gemm" in converted
    assert "blocks.1.mlp.shared.w1" in converted and "blocks.0.mlp.w1" in converted
    ran = spy_paths(monkeypatch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    moe.attach_bias_update(opt, model)
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    tgt = torch.roll(idx, -1, dims=1)                             # a learnable fixed batch
    losses = []
    for _ in range(8):
        loss = model(idx, tgt)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert ran == ["_grouped"] * 8                                # FP8 keeps the grouped dispatch
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0] - 0.1, losses
    assert model.blocks[1].mlp.last_load.sum() == 4 * 16 * 2      # the step hook ran


# ---------------------------------------------------------------------------------------------
# the MoE's expert GEMMs in FP8

@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_expert_gemm_runs_one_fp8_gemm_per_group(recipe):
    """Float8ExpertGEMM on a jagged buffer: every group's three GEMMs within the FP8 bound of
    that group alone (each expert's weight and each group's rows quantized on their own)."""
    g = torch.Generator().manual_seed(3)
    ends = [40, 40, 140, 157]                                     # an empty group; odd sizes
    E, O, I = 4, 256, 128
    a = torch.randn(157, I, generator=g).requires_grad_()
    w = (torch.randn(E, O, I, generator=g) * 0.05).requires_grad_()
    dy = torch.randn(157, O, generator=g) * 1e-3
    y = fp8.Float8ExpertGEMM(I, O, recipe)(a, w, torch.tensor(ends, dtype=torch.int32))
    y.backward(dy)
    spec = fp8._SPEC[recipe]
    dt = {k: (spec[k][0][1], spec[k][1][1]) for k in spec}        # (left, right) fp8 dtypes
    for e, (s, t) in enumerate(zip([0] + ends[:-1], ends)):
        if s == t:
            assert (w.grad[e] == 0).all()
            continue
        x64, w64, dy64 = a[s:t].detach().double(), w[e].detach().double(), dy[s:t].double()
        for got, ref, bound in [(y[s:t], x64 @ w64.t(), gemm_bound(x64, w64, *dt["fwd"])),
                                (a.grad[s:t], dy64 @ w64, gemm_bound(dy64, w64.t(), *dt["dgrad"])),
                                (w.grad[e], dy64.t() @ x64, gemm_bound(dy64.t(), x64.t(), *dt["wgrad"]))]:
            err = (got.double() - ref).abs()
            assert (err <= bound).all() and err.max() > 1e-4 * ref.abs().max(), (e, (err / bound).max())


def test_fp8_expert_gemm_needs_no_row_alignment():
    """Each group is quantized into a buffer of its own, so no group needs CUDA's 16-byte row
    offsets (which the bf16 grouped kernel does: 8 rows)."""
    a = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda"), dtype=torch.bfloat16,
                              element_size=lambda: 2)
    w = torch.zeros(4, 128, 128)
    assert moe.ExpertGEMM(128, 128).row_align(a, w) == 8
    assert fp8.Float8ExpertGEMM(128, 128, "blockwise").row_align(a, w) == 1


def moe_fp8_reference(m, x, spec):
    """The per-token fp64 MoE (routing in plain Python, test_moe.ref_choose) -> y (N, C), an
    elementwise bound on an FP8 run of it (each expert GEMM within gemm_bound of its group's
    rows, carried through silu(a1) * a3, silu being 1.0998-Lipschitz, and the w2 GEMM, summed
    over K), and the same MoE with each group's GEMM operands rounded by fp8.quantize as the
    recipe says (the FP8 arithmetic exactly, but for fp32 accumulation)."""
    (ga, da), (gb, db) = spec
    X = x.reshape(-1, x.shape[-1])                                # (N, C) fp64
    s = torch.sigmoid(X @ m.gate.t())                             # (N, E)
    cfg = make_cfg(n_embd=X.shape[1])
    choices = [ref_choose(row.tolist(), m.expert_bias.tolist(), cfg) for row in s]
    ref, bound, emulated = torch.zeros_like(X), torch.zeros_like(X), torch.zeros_like(X)

    def q(t, gran, dtype):
        return fp8.dequantize(*fp8.quantize(t, gran, dtype), gran, torch.float64)

    def q_mm(a, w):
        return q(a, ga, da) @ q(w, gb, db).t()
    for e in range(m.E):
        toks = [t for t, c in enumerate(choices) if e in c]
        if not toks:
            continue
        gw = torch.stack([s[t, e] / s[t, choices[t]].sum() * cfg.route_scale for t in toks])[:, None]
        Xe, w1, w3, w2 = X[toks], m.w1[e].double(), m.w3[e].double(), m.w2[e].double()
        a1, a3 = Xe @ w1.t(), Xe @ w3.t()                          # (n_e, H)
        e1, e3 = gemm_bound(Xe, w1, da, db), gemm_bound(Xe, w3, da, db)
        u = F.silu(a1) * a3
        du = 1.0998 * e1 * (a3.abs() + e3) + F.silu(a1).abs() * e3
        v, dv = u * gw, du * gw                                   # routing weight folded in
        ref[toks] += v @ w2.t()
        bound[toks] += dv @ w2.abs().t() + gemm_bound(v.abs() + dv, w2, da, db)
        emulated[toks] += q_mm(F.silu(q_mm(Xe, w1)) * q_mm(Xe, w3) * gw, w2)
    return ref, bound, emulated


@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_moe_is_grouped_and_within_the_bound_of_fp64(recipe, monkeypatch):
    """An FP8-converted MoE layer runs the grouped dispatch, equals the per-token fp64 reference
    within the FP8 bound (and the per-token FP8 arithmetic to fp32 accumulation), and computes
    the same function as its loop dispatch (the same FP8 GEMMs on the same rows: only the order
    of the K-sum differs)."""
    m = make_moe(bias=SKEW, n_embd=128, moe_hidden=128, n_shared_experts=0)
    with torch.no_grad():
        for p in (m.w1, m.w3, m.w2):
            p.mul_(0.2)
    assert fp8.convert_to_float8(m, recipe, verbose=False) == ["expert_gemm"]
    ran = spy_paths(monkeypatch)
    x = torch.randn(2, 16, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = m(x.requires_grad_()).view(-1, 128)
    assert ran == ["_grouped"]
    ref, bound, emulated = moe_fp8_reference(m, x.detach(), fp8._SPEC[recipe]["fwd"])
    err = (y.detach() - ref).abs()
    assert (err <= bound).all(), (err / bound).max()
    assert err.max() > 1e-3 * ref.abs().max()                     # FP8 really was used
    assert (y.detach() - emulated).norm() < 1e-4 * emulated.norm()  # fp32 sums: 3e-7 measured
    gx, gw = torch.autograd.grad(y.square().sum(), [x, m.w1])
    m.dispatch = "loop"
    y_loop = m(x).view(-1, 128)
    assert ran == ["_grouped", "_loop"]
    assert (y.detach() - y_loop).abs().max() <= 1e-12 * ref.abs().max()
    gx_loop, gw_loop = torch.autograd.grad(y_loop.square().sum(), [x, m.w1])
    torch.testing.assert_close(gx, gx_loop, rtol=1e-9, atol=0)
    torch.testing.assert_close(gw, gw_loop, rtol=1e-9, atol=0)


# ---------------------------------------------------------------------------------------------
# which devices run what

def test_fp8_supported_and_default():
    assert fp8.fp8_supported("cpu", "blockwise")[0]
    assert fp8.fp8_supported("cpu", "off")[0]
    assert not fp8.fp8_supported("meta", "tensorwise")[0]
    ok, why = fp8.fp8_supported("cpu", "nope")
    assert not ok and "tensorwise" in why
    assert fp8.default_recipe("cpu") == "off"


def test_fp8_on_cuda_needs_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here, and on any GPU-less machine
    ok, why = fp8.fp8_supported("cuda", "rowwise")
    assert not ok and "needs a CUDA GPU" in why and fp8.default_recipe("cuda") == "off"


@pytest.mark.parametrize("recipe,cc,cuda,ok", [
    ("tensorwise", (8, 9), "12.4", True), ("tensorwise", (8, 6), "12.4", False),
    ("rowwise", (9, 0), "12.1", True), ("rowwise", (8, 0), "12.9", False),
    ("blockwise", (9, 0), "12.9", True), ("blockwise", (9, 0), "12.8", False),
    ("blockwise", (9, 0), "13.0", True), ("blockwise", (10, 0), "12.9", False), ("blockwise", (8, 9), "12.9", False)])
def test_fp8_supported_on_cuda_reads_capability_and_version(recipe, cc, cuda, ok, monkeypatch):
    """The CUDA rules of fp8_supported / default_recipe, with the GPU faked (none here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cc)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    assert fp8.fp8_supported("cuda", recipe)[0] == ok
    if recipe == "blockwise":
        assert fp8.default_recipe("cuda") == ("blockwise" if ok else "off")
