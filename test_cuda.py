"""
test_cuda.py -- the tests that need a CUDA GPU; each skips with its reason where there is none
(CI never has one). Run: python -m pytest -q test_cuda.py

  - FP8 scaled GEMMs: the CUDA kernels (F.scaled_mm with DeepSeek-V3's blockwise scales on sm90,
    torch._scaled_mm tensorwise / rowwise on sm89+) against the CPU path of fp8.fp8_mm on the same
    quantized inputs: exactly where the arithmetic is exact, within a derived bound where not.
  - MoE: the grouped dispatch (torch._grouped_mm, CUTLASS in bf16 on sm90) against the loop
    dispatch and the per-token fp64 reference of test_moe.py, outputs and gradients.
  - End to end: every stage at --preset tiny --device cuda, and an FP8 pretrain on CUDA.
"""
import json
import math

import pytest
import torch

import fp8
import train
from conftest import train as run_train
from test_moe import SKEW, make_cfg, make_moe, ref_moe, rel_err

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")

E4M3 = torch.float8_e4m3fn
U32, UBF16 = 2.0 ** -24, 2.0 ** -8  # unit roundoffs (round to nearest) of fp32 and bf16
# Hopper's FP8 tensor cores keep about 14 bits of a partial sum (DeepSeek-V3 §3.3.2); truncation
# to 14 significant bits errs by < 2^-13 relative. A bound built on this also holds for fp32 sums.
U_TC = 2.0 ** -13


def gamma(n, u):
    """Higham's gamma_n: n roundings of unit roundoff u compound to at most gamma_n relative."""
    return n * u / (1 - n * u)


def skip_unless_gpu_runs(gran_a):
    """Blockwise runs on sm90 only (cuBLASLt's 1x128 / 128x128 kernels); tensor / row on sm89+."""
    cc = torch.cuda.get_device_capability()
    recipe = {"tensor": "tensorwise", "row": "rowwise"}.get(gran_a, "blockwise")
    if recipe == "blockwise" and cc != (9, 0):
        pytest.skip(f"blockwise scaled_mm runs on sm90 only; this GPU is sm{cc[0]}{cc[1]}")
    ok, why = fp8.fp8_supported("cuda", recipe)
    if not ok:
        pytest.skip(why)


def both_devices(qa, sa, ga, qb, sb, gb):
    """fp8.fp8_mm of the same quantized operands on CPU (fp32 out; blockwise: the emulation,
    dequantize then an fp32 matmul) and on CUDA (bf16 out), both returned as fp64 on the CPU."""
    cpu = fp8.fp8_mm(qa, sa, ga, qb, sb, gb)
    gpu = fp8.fp8_mm(*(t.cuda() if torch.is_tensor(t) else t for t in (qa, sa, ga, qb, sb, gb)))
    assert gpu.is_cuda and gpu.dtype == torch.bfloat16 and cpu.dtype == torch.float32
    return cpu.double(), gpu.cpu().double()


PAIRS = [("1x128", "128x128"), ("1x128", "1x128"), ("tensor", "tensor"), ("row", "row")]
SCALE_SHAPE = {"tensor": lambda R, Kb: (), "row": lambda R, Kb: (R, 1), "1x128": lambda R, Kb: (R, Kb),
               "128x128": lambda R, Kb: (-(-R // 128), Kb)}  # fp8.quantize's scale shapes


# ---------------------------------------------------------------------------------------------
# FP8 scaled GEMMs on the GPU against the CPU path

@pytest.mark.parametrize("ga,gb", PAIRS)
def test_scaled_gemm_is_exact_where_the_arithmetic_is(ga, gb):
    """Operands built so that both devices must compute the exact product. q in {-4..4} (exact
    in e4m3), every scale a power of two in [2^-2, 2^2], K = 512: each product q_a q_b is an
    integer of magnitude <= 16 and each sum of them, over a 128-tile or all of K, an integer
    below 2^13, exact with the 14 bits the tensor cores keep; a power-of-two scale multiplies
    exactly; every partial sum of the scaled products, in any order, is a multiple of 2^-4 below
    512 * 16 * 2^4 = 2^17: 21 bits, exact in fp32. So the CPU result is the exact product and
    the GPU's differs only by its bf16 output, rounded to nearest: |gpu - cpu| <= 2^-8 |cpu|.
    The tile scales differ by up to 16x, so a scale read from the wrong tile breaks this."""
    skip_unless_gpu_runs(ga)
    g = torch.Generator().manual_seed(0)
    M, K, N = 256, 512, 384

    def operand(R, gran):
        q = torch.randint(-4, 5, (R, K), generator=g).float().to(E4M3)
        s = 2.0 ** torch.randint(-2, 3, SCALE_SHAPE[gran](R, K // 128), generator=g).float()
        return q, s
    (qa, sa), (qb, sb) = operand(M, ga), operand(N, gb)
    cpu, gpu = both_devices(qa, sa, ga, qb, sb, gb)
    assert ((gpu - cpu).abs() <= UBF16 * cpu.abs()).all(), ((gpu - cpu).abs().max().item(), ga, gb)
    assert cpu.abs().max() > 100  # not trivially zero


def tiled_magnitudes(R, K, bh, seed):
    """N(0, 1) values, each bh x 128 tile scaled by its own 2^U{-8..8}: outliers by tile, the
    case fine-grained scales are for, and a scale read from the wrong tile errs by up to 2^16."""
    g = torch.Generator().manual_seed(seed)
    mag = 2.0 ** torch.randint(-8, 9, (-(-R // bh), K // 128), generator=g).float()
    return torch.randn(R, K, generator=g) * mag.repeat_interleave(bh, 0)[:R].repeat_interleave(128, 1)


@pytest.mark.parametrize("ga,gb", PAIRS[:2])
def test_sm90_blockwise_gemm_matches_cpu_emulation_within_bound(ga, gb):
    """fp8.quantize's own scales (not powers of two), M = 200 (not a multiple of 128). Let A, B
    be the real dequantized operands (q * s exactly), C = A B^T and P = |A| |B|^T.
      CPU emulation: A, B rounded to fp32 (2 roundings per product), an fp32 dot product in any
        order: |cpu - C| <= gamma_(K+2)(2^-24) P.
      GPU: products of fp8 values are exact; a 128-tile's sum keeps >= 14 bits (U_TC), is
        scaled by s_a s_b (2 roundings) and added in fp32 over the Kb tiles:
        |gpu32 - C| <= (gamma_128(U_TC) + gamma_(Kb+2)(2^-24)) P; the bf16 output adds
        2^-8 |gpu32| <= 2^-8 (|cpu| + (e_gpu + e_cpu) P).
    Together: |gpu - cpu| <= 2^-8 |cpu| + (1 + 2^-8)(e_gpu + e_cpu) P. P is taken from the fp32
    dequantized values (within 2^-24 of the real ones), a slack far below the terms kept."""
    skip_unless_gpu_runs(ga)
    M, K, N = 200, 512, 384
    qa, sa = fp8.quantize(tiled_magnitudes(M, K, 1, seed=1), ga)
    qb, sb = fp8.quantize(tiled_magnitudes(N, K, 128 if gb == "128x128" else 1, seed=2), gb)
    cpu, gpu = both_devices(qa, sa, ga, qb, sb, gb)
    P = fp8.dequantize(qa, sa, ga).double().abs() @ fp8.dequantize(qb, sb, gb).double().abs().t()
    e_cpu = gamma(K + 2, U32)
    e_gpu = gamma(128, U_TC) + gamma(K // 128 + 2, U32)
    bound = UBF16 * cpu.abs() + (1 + UBF16) * (e_gpu + e_cpu) * P
    err = (gpu - cpu).abs()
    assert (err <= bound).all(), ((err / bound).max().item(), ga, gb)
    assert err.max() > 0  # the bf16 output is rounded: identical outputs would mean no GPU ran


# ---------------------------------------------------------------------------------------------
# MoE: the grouped dispatch on CUDA against the loop and the per-token fp64 reference

def projected_grads(m, x, y, seed=1):
    """Gradients of (y * r).sum() for a fixed random r (drawn on the CPU, so the same r on every
    device and dtype) w.r.t. x and every parameter of m, returned on the CPU in fp64."""
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    params = dict(m.named_parameters())
    gs = torch.autograd.grad((y * r.to(y.device, y.dtype)).sum(), [x, *params.values()], allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g).detach().cpu().double()
            for n, g, p in zip(["x", *params], gs, [x, *params.values()])}


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16_autocast"])
def test_grouped_dispatch_matches_loop_on_cuda(amp, monkeypatch):
    """fp32: _grouped_mm's per-group fallback; bf16 autocast (how training runs): its CUTLASS
    kernel on sm90, groups padded to 8 rows. Experts 5 and 6 get no tokens (SKEW): an empty group
    gets one zero block and its weights exactly zero gradients.
    Tolerances (max error over the tensor's max magnitude): fp32, 1e-5 as on the CPU (sums in
    another order). bf16: each dispatch rounds the same values to bf16 at the same places (the
    expert GEMMs' outputs, the SwiGLU product, the weighted rows, the combine) after fp32 sums in
    different orders, so a value differs only where one rounding flips by one bf16 step (2^-7
    relative at most), carried through at most 3 further roundings: 2^-5 covers it. Against the
    fp64 reference the bf16 run also rounds its inputs and weights (2^-8 each): 2^-4."""
    kw = dict(n_embd=64, moe_hidden=32)  # rows of 128 / 64 bytes: _grouped_mm's 16-byte rule holds
    cfg = make_cfg(**kw)
    m64 = make_moe(bias=SKEW, **kw)
    m = make_moe(torch.float32, bias=SKEW, **kw)
    m.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    m = m.cuda()
    x64 = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y_ref, _ = ref_moe(m64, x64.requires_grad_(), cfg)
    g_ref = projected_grads(m64, x64, y_ref)
    calls = []
    real = torch._grouped_mm
    monkeypatch.setattr(torch, "_grouped_mm", lambda *a, **k: calls.append(k["offs"].tolist()) or real(*a, **k))
    out = {}
    for dispatch in ("grouped", "loop"):
        m.dispatch = dispatch
        x = x64.detach().float().cuda().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            y = m(x)
        assert y.dtype == (torch.bfloat16 if amp else torch.float32)
        out[dispatch] = (y.detach().cpu().double(), projected_grads(m, x, y))
    align = 8 if amp else 4  # 16 bytes of rows (moe.ExpertGEMM.row_align)
    assert len(calls) == 3 and all(e % align == 0 for e in calls[0])  # forward: w1, w3, w2
    tol, tol_ref = (1e-5, 1e-5) if not amp else (2.0 ** -5, 2.0 ** -4)
    (y_g, g_g), (y_l, g_l) = out["grouped"], out["loop"]
    assert rel_err(y_g, y_l) < tol and rel_err(y_g, y_ref.detach()) < tol_ref
    for name in g_ref:
        assert torch.isfinite(g_g[name]).all(), name
        assert rel_err(g_g[name], g_l[name]) < tol and rel_err(g_g[name], g_ref[name]) < tol_ref, name
    for w in ("w1", "w3", "w2"):
        assert (g_g[w][5] == 0).all() and (g_g[w][6] == 0).all()


# ---------------------------------------------------------------------------------------------
# End to end on the GPU

def test_every_stage_at_tiny_on_cuda(tmp_path):
    r = run_train(["--stage", "all", "--preset", "tiny", "--device", "cuda", "--out_dir", str(tmp_path),
                   "--quiet"], timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "device: cuda" in r.stdout and "bfloat16" in r.stdout
    for name in train.STAGES:
        ev = json.load(open(tmp_path / name / "eval.json"))
        assert ev["stage"] == name and ev["preset"] == "tiny", name
    assert (tmp_path / "report.md").exists()


@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_pretrain_on_cuda(recipe, tmp_path):
    """A short pretrain with every eligible layer in FP8 on the GPU (tiny preset widened to
    multiples of 128, which blockwise needs; at width 64 nothing would be converted)."""
    gran = {"tensorwise": "tensor", "rowwise": "row", "blockwise": "1x128"}[recipe]
    skip_unless_gpu_runs(gran)
    r = run_train(["--stage", "pretrain", "--preset", "tiny", "--device", "cuda", "--fp8", recipe,
                   "--n_embd", "128", "--mlp_hidden", "384", "--moe_hidden", "128", "--max_iters", "20",
                   "--out_dir", str(tmp_path), "--quiet"], timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"fp8 {recipe}: converted" in r.stdout and "expert_gemm" in r.stdout
    ev = json.load(open(tmp_path / "pretrain" / "eval.json"))
    assert all(math.isfinite(ev[k]) for k in ("first_loss", "final_loss", "heldout_loss")), ev
    assert ev["final_loss"] < ev["first_loss"]
