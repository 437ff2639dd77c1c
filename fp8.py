"""
fp8.py -- FP8 training: quantize/dequantize, an FP8 linear layer (all three GEMMs in FP8),
and swapping the eligible layers of a model.

A library module: `train.py --fp8 {off,tensorwise,rowwise,blockwise}` calls
`convert_to_float8(model, recipe)` once after building the model (before the optimizer);
`fp8_supported(device, recipe)` says whether a recipe can run there. Check it with
`python -m pytest test_fp8.py`; time it with `python bench.py fp8`.

WHAT HAS AND HAS NOT RUN ON A GPU: nothing in this file has run on a GPU; none was available.
Verified on CPU (torch 2.13): the tensorwise and rowwise GEMMs through `torch._scaled_mm`'s
CPU kernel; blockwise through an emulation of the same arithmetic; `_check_cuda_rules` on every
call; and, in the tests, the exact `torch._scaled_mm` / `torch.nn.functional.scaled_mm` calls
of the CUDA branch run on "meta" tensors, which makes torch apply its CUDA shape, layout and
scale-stride rules. Never run: the CUDA kernels themselves, their speed, their accumulation
numerics, and the bf16 output dtype chosen for them.

FP8 formats. e4m3 (4 exponent bits, 3 mantissa bits, max 448, smallest normal 2^-6) rounds
with a relative error of at most 2^-4; e5m2 (max 57344, smallest normal 2^-14) trades a bit of
mantissa for range: error 2^-3. Both have far too little range for raw tensors, so each is
stored as q = x / s with a float32 scale s = amax / fp8_max, chosen so the largest magnitude
lands on the format's largest value; x ~ q * s. Every cast is preceded by an explicit clamp
(fp32 rounding of x / s can overshoot the max by an ulp).

Granularity: which elements share one s. `tensor`: one for the whole tensor (cheap, but one
outlier squeezes every other value into the subnormals or to zero). `row`: one per row along
the contracted dimension. `1x128`: one per 128 consecutive elements of a row. `128x128`: one
per 128x128 block. DeepSeek-V3 (technical report §3.3.2) uses 1x128 tiles for activations and
gradients, whose outliers sit in a few tokens/channels, and 128x128 blocks for weights, which
are smooth; the finer scales are what let it use e4m3 for every tensor, gradients included,
instead of e5m2 for gradients (§3.3.2). A 128x128 block is still a 128x128 block after
transposition, so W^T quantizes to the same values for dgrad (here it is simply re-quantized).

The three GEMMs of a linear layer y = x W^T (x: S x I, W: O x I):
  forward  y  = x W^T     (S, I) x (I, O), contracts over I
  dgrad    dx = dy W      (S, O) x (O, I), contracts over O
  wgrad    dW = dy^T x    (O, S) x (S, I), contracts over the S tokens
Every operand is quantized "K-last": as a matrix whose rows run along the contracted axis, so
scales are per row / per 1x128 tile of that axis. For wgrad that re-tiles dy and x along the
tokens: 1x128 tiles of their transposes, the 128x1 tiles of §3.3.3 and §3.5.2.

Recipes (operand granularities, left x right):
  tensorwise  e4m3 x, W; e5m2 dy; tensor x tensor everywhere (the classic Hopper recipe).
  rowwise     e4m3 everywhere; row x row (one scale per row of the left operand and per
              column of the right one).
  blockwise   e4m3 everywhere; forward and dgrad 1x128 x 128x128; wgrad 1x128 x 1x128.
              The paper's recipe; cuBLAS runs it on sm90 only (torch: F.scaled_mm with
              ScalingType.BlockWise1x128 / BlockWise128x128, cuBLASLt >= 12.9).

MoE experts: moe.py runs every expert GEMM through one seam, `moe.ExpertGEMM`; conversion
swaps it for `Float8ExpertGEMM`, which runs the grouped dispatch's jagged buffer as one
fp8_linear per expert group (so the experts' three GEMMs are FP8, per expert, on every device).

Stays in high precision, per §3.3.1: the embedding, the output head (`lm_head`, skipped by
name), the MoE router (moe.py keeps it a raw parameter; a Linear named gate or router is
skipped too), norms, attention's softmax path; master weights, weight gradients and optimizer
state; the values returned by fp8_linear (input dtype) and its gradients (input / weight dtype).

Non-finite inputs: never silently saturated. A tile (scale group) containing inf or NaN gets a
NaN scale, so all its dequantized values, and the GEMM outputs they touch, are NaN and the loss
shows it. `quantize(..., strict=True)` raises ValueError instead (it syncs with the device).
All-zero groups get scale 1 (exact zeros, no 0/0).

Deliberate differences from the paper:
- Accumulation: DeepSeek promotes Tensor-Core partial sums to FP32 every 128 elements of K
  (§3.3.2). The CPU accumulates in fp32 throughout; on CUDA we pass use_fast_accum=False and
  leave accumulation to cuBLAS (not the same mechanism, never measured here).
- The backward saves the high-precision input and re-quantizes it, instead of caching it in
  FP8 and re-quantizing the dequantized copy (§3.3.3); costs memory, not accuracy.
- Scales are plain fp32 amax / fp8_max, not rounded to powers of two (§3.3.3 uses those for some
  activations); no FP8 communication or custom E5M6 caching (single device).
- wgrad pads the token axis with zero rows to a multiple of 16 (128 for blockwise), which
  CUDA requires of a contracted dimension; zero rows add nothing.
- GEMM output: fp32 on CPU; bf16 on CUDA (the dtype torch's own blockwise tests use), then
  cast to the input / weight dtype. DeepSeek writes weight gradients in FP32.
- tensorwise and rowwise are not in the paper: they are the common baselines to compare with.

Letters in shape comments: S tokens (all leading dims flattened), I in_features, O out_features;
a GEMM is (M, K) x (K, N) -> (M, N); Kb = ceil(K/128) tiles along K, L4 = Kb rounded up to 4;
E experts of an MoE layer, P rows of its expert-sorted buffer.
"""
import fnmatch

import torch
import torch.nn as nn
import torch.nn.functional as F

import moe

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
FP8_MAX = {E4M3: 448.0, E5M2: 57344.0}
TILE = 128  # DeepSeek-V3's tile/block edge (§3.3.2)
GRANULARITIES = ("tensor", "row", "1x128", "128x128")
RECIPES = ("tensorwise", "rowwise", "blockwise")

# recipe -> GEMM -> ((left granularity, dtype), (right granularity, dtype)), both operands K-last
_SPEC = {
    "tensorwise": {"fwd": (("tensor", E4M3), ("tensor", E4M3)),
                   "dgrad": (("tensor", E5M2), ("tensor", E4M3)),   # e5m2 x e5m2 never happens
                   "wgrad": (("tensor", E5M2), ("tensor", E4M3))},
    "rowwise": {g: (("row", E4M3), ("row", E4M3)) for g in ("fwd", "dgrad", "wgrad")},
    "blockwise": {"fwd": (("1x128", E4M3), ("128x128", E4M3)),     # DeepSeek-V3 Fig. 6, Fprop
                  "dgrad": (("1x128", E4M3), ("128x128", E4M3)),   # Dgrad
                  "wgrad": (("1x128", E4M3), ("1x128", E4M3))},    # Wgrad: both tiled along tokens
}
# recipe name accepted by quantize() -> the granularity it uses for activations
_RECIPE_GRAN = {"tensorwise": "tensor", "rowwise": "row", "blockwise": "1x128"}
# the (left, right) pairs torch/cuBLAS accept (aten/src/ATen/native/cuda/ScaledBlas.cpp)
_CUDA_PAIRS = {("tensor", "tensor"), ("row", "row"), ("1x128", "1x128"),
               ("1x128", "128x128"), ("128x128", "1x128")}


# ----------------------------------------------------------------------------------------------
# quantize / dequantize

def _block(gran, R, C):
    """Rows and columns sharing one scale, for a (R, C) tensor."""
    return {"tensor": (R, C), "row": (1, C), "1x128": (1, TILE), "128x128": (TILE, TILE)}[gran]


def _blocked(x, bh, bw):
    """(R, C) -> zero-padded view (Rb, bh, Cb, bw) with Rb = ceil(R/bh), Cb = ceil(C/bw)."""
    R, C = x.shape
    Rp, Cp = -(-R // bh) * bh, -(-C // bw) * bw
    xp = F.pad(x, (0, Cp - C, 0, Rp - R))  # zeros change no amax and no product
    return xp.reshape(Rp // bh, bh, Cp // bw, bw)


def quantize(x, granularity, dtype=E4M3, strict=False):
    """x (R, C) -> (q (R, C) fp8, scales fp32) with x ~ q * scale, scales per `granularity`:
    tensor () | row (R, 1) | 1x128 (R, ceil(C/128)) | 128x128 (ceil(R/128), ceil(C/128)).
    A recipe name means its activation granularity. Scales along rows = along C, the K axis."""
    gran = _RECIPE_GRAN.get(granularity, granularity)
    assert gran in GRANULARITIES and x.dim() == 2, (granularity, tuple(x.shape))
    if strict and not bool(torch.isfinite(x).all()):
        raise ValueError("quantize: input has inf or NaN")
    fmax = FP8_MAX[dtype]
    R, C = x.shape
    bh, bw = _block(gran, R, C)
    xb = _blocked(x.float(), bh, bw)                             # (Rb, bh, Cb, bw)
    amax = xb.abs().amax(dim=(1, 3))                             # (Rb, Cb); NaN propagates
    scale = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))   # all-zero group -> 1
    scale = scale.clamp(min=torch.finfo(torch.float32).tiny)     # amax/fmax underflowed: x/s fits
    scale = torch.where(torch.isfinite(amax), scale, torch.full_like(amax, float("nan")))
    q = (xb / scale[:, None, :, None]).clamp(-fmax, fmax).to(dtype)    # explicit clamp, then cast
    q = q.view(xb.shape[0] * bh, -1)[:R, :C].contiguous()              # (R, C)
    return q, (scale.reshape(()) if gran == "tensor" else scale)


def _infer_gran(q, scale):
    if scale.dim() == 0:
        return "tensor"
    if scale.shape[0] == q.shape[0]:
        return "row" if scale.shape[1] == 1 else "1x128"
    return "128x128"


def dequantize(q, scale, granularity=None, dtype=torch.float32):
    """Inverse of quantize: q (R, C) fp8 -> q * scale (R, C) in `dtype`. The granularity is
    read from the scale's shape when not given (ambiguous shapes mean the same thing)."""
    gran = _RECIPE_GRAN.get(granularity, granularity) or _infer_gran(q, scale)
    R, C = q.shape
    bh, bw = _block(gran, R, C)
    s = scale.reshape(1, 1) if gran == "tensor" else scale
    xb = _blocked(q.float(), bh, bw) * s[:, None, :, None]       # (Rb, bh, Cb, bw)
    return xb.view(xb.shape[0] * bh, -1)[:R, :C].to(dtype)


# ----------------------------------------------------------------------------------------------
# the scaled GEMM: CUDA's layouts and rules, CUDA's call, and the CPU path

def _round_up(n, m):
    return -(-n // m) * m


def _cuda_scale(s, gran, left):
    """Scales of a K-last operand (outer, K) in the layout torch's CUDA kernels read."""
    if gran == "tensor":
        return s.reshape(())
    if gran == "row":
        return s.reshape(-1, 1) if left else s.reshape(1, -1)    # (M, 1) | (1, N)
    if gran == "1x128":
        return s.t().contiguous().t()                  # (outer, Kb), stride (1, outer): outer-dim-major
    Kb = s.shape[1]                                    # 128x128: (outer/128, Kb) -> (L4, outer/128)
    return F.pad(s, (0, _round_up(Kb, 4) - Kb), value=1.0).t()   # stride (1, L4); pad never read


def _check_cuda_rules(a, b, scale_a, scale_b, gran_a, gran_b, out_dtype=torch.bfloat16):
    """Raise ValueError where torch's CUDA scaled-mm (torch 2.13, sm89/sm90) would refuse the
    call; the CPU kernels accept more (row-major b, K % 16, e5m2 x e5m2). a (M, K), b (K, N)."""
    def need(ok, msg):
        if not ok:
            raise ValueError(f"scaled_mm: CUDA would reject this call: {msg}")
    need(a.dim() == 2 and b.dim() == 2 and a.shape[1] == b.shape[0],
         f"shapes {tuple(a.shape)} x {tuple(b.shape)}")
    (M, K), N = a.shape, b.shape[1]
    need(a.dtype in FP8_MAX and b.dtype in FP8_MAX, f"operands must be fp8, got {a.dtype}, {b.dtype}")
    need(not (a.dtype == E5M2 and b.dtype == E5M2), "e5m2 x e5m2 is not supported by cuBLASLt")
    need(K % 16 == 0 and N % 16 == 0, f"K={K} and N={N} must be multiples of 16")
    need(a.stride(1) == 1 and a.stride(0) > 1, f"a must be row-major, strides {a.stride()}")
    need(b.stride(0) == 1 and b.stride(1) > 1, f"b must be column-major, strides {b.stride()}")
    need(out_dtype in (torch.bfloat16, torch.float16, torch.float32), f"output dtype {out_dtype}")
    need((gran_a, gran_b) in _CUDA_PAIRS, f"scaling pair {gran_a} x {gran_b}")
    need(scale_a.dtype == torch.float32 and scale_b.dtype == torch.float32, "scales must be fp32")
    if gran_a == "tensor":
        need(scale_a.numel() == 1 and scale_b.numel() == 1, "tensorwise scales must be singletons")
    elif gran_a == "row":
        need(tuple(scale_a.shape) == (M, 1) and scale_a.is_contiguous(), f"scale_a must be ({M}, 1)")
        need(tuple(scale_b.shape) == (1, N) and scale_b.stride(1) == 1, f"scale_b must be (1, {N})")
    else:  # DeepSeek-style blockwise
        need(a.dtype == E4M3 and b.dtype == E4M3, "blockwise scaling needs e4m3 x e4m3")
        need(K % TILE == 0, f"blockwise K={K} must be a multiple of 128")
        Kb, L4 = K // TILE, _round_up(K // TILE, 4)
        for s, gran, outer, name in ((scale_a, gran_a, M, "scale_a"), (scale_b, gran_b, N, "scale_b")):
            if gran == "1x128":
                shape, lead = (outer, Kb), outer
            else:
                need(outer % TILE == 0, f"a 128x128 operand needs {outer} % 128 == 0")
                shape, lead = (L4, outer // TILE), L4
            need(tuple(s.shape) == shape, f"{name} ({gran}) must be {shape}, got {tuple(s.shape)}")
            need(s.stride(0) == 1 and (s.stride(1) == lead or shape[1] == 1 and s.stride(1) == 1),
                 f"{name} ({gran}) must have strides (1, {lead}), got {s.stride()}")


def _cuda_gemm(a, b, scale_a, scale_b, gran_a, gran_b, out_dtype):
    """The CUDA call (never run on a GPU here; tests run it on meta tensors)."""
    if gran_a in ("tensor", "row"):  # cuBLAS (sm89/sm90) or CUTLASS rowwise
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=out_dtype, use_fast_accum=False)
    st, sw = F.ScalingType, F.SwizzleType.NO_SWIZZLE
    kind = {"1x128": st.BlockWise1x128, "128x128": st.BlockWise128x128}
    return F.scaled_mm(a, b, scale_a, kind[gran_a], scale_b, kind[gran_b], swizzle_a=sw,
                       swizzle_b=sw, output_dtype=out_dtype, use_fast_accum=False)


def fp8_mm(qa, sa, gran_a, qbt, sb, gran_b):
    """qa (M, K) x qbt (N, K)^T -> (M, N), from quantize()'s outputs of two K-last operands."""
    a, b = qa, qbt.t()                                 # b (K, N) column-major, as cuBLAS wants
    scale_a, scale_b = _cuda_scale(sa, gran_a, True), _cuda_scale(sb, gran_b, False)
    out_dtype = torch.float32 if a.device.type == "cpu" else torch.bfloat16
    _check_cuda_rules(a, b, scale_a, scale_b, gran_a, gran_b, out_dtype)
    if a.device.type != "cpu":                         # the device check: cuda (or meta)
        return _cuda_gemm(a, b, scale_a, scale_b, gran_a, gran_b, out_dtype)
    if gran_a in ("tensor", "row"):                    # same op as CUDA, CPU kernel
        return torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=out_dtype)
    # blockwise has no CPU kernel: the same arithmetic, dequantize then an fp32 matmul
    return dequantize(qa, sa, gran_a) @ dequantize(qbt, sb, gran_b).t()


def _qmm(a, bt, spec):
    """High-precision a (M, K), bt (N, K) -> FP8 GEMM a bt^T per spec -> (M, N)."""
    (ga, da), (gb, db) = spec
    qa, sa = quantize(a, ga, da)
    qb, sb = quantize(bt, gb, db)
    return fp8_mm(qa, sa, ga, qb, sb, gb)


def _pad_rows(t, multiple):
    """(S, C) -> (S', C), S' = S rounded up to `multiple`, with zero rows."""
    return F.pad(t, (0, 0, 0, _round_up(t.shape[0], multiple) - t.shape[0]))


# ----------------------------------------------------------------------------------------------
# the layer

class _FP8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, recipe):                    # x (S, I), w (O, I)
        ctx.save_for_backward(x, w)
        ctx.recipe = recipe
        with torch.autocast(x.device.type, enabled=False):   # the emulation's fp32 stays fp32
            y = _qmm(x, w, _SPEC[recipe]["fwd"])      # (S, O)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):                             # dy (S, O)
        x, w = ctx.saved_tensors
        spec = _SPEC[ctx.recipe]
        dx = dw = None
        with torch.autocast(dy.device.type, enabled=False):
            if ctx.needs_input_grad[0]:                # (S, O) x (I, O)^T -> (S, I)
                dx = _qmm(dy, w.t(), spec["dgrad"]).to(x.dtype)
            if ctx.needs_input_grad[1]:                # (O, S') x (I, S')^T -> (O, I)
                m = TILE if ctx.recipe == "blockwise" else 16
                dw = _qmm(_pad_rows(dy, m).t(), _pad_rows(x, m).t(), spec["wgrad"]).to(w.dtype)
        return dx, dw, None


def fp8_linear(x, weight, recipe):
    """y = x weight^T with all three GEMMs in FP8. x (..., I), weight (O, I) -> (..., O) in
    x's dtype; gradients come back in x's and weight's dtypes."""
    if recipe in (None, "off"):
        return F.linear(x, weight.to(x.dtype))
    assert recipe in RECIPES, f"unknown fp8 recipe {recipe!r}; choose from {RECIPES}"
    x2 = x.reshape(-1, x.shape[-1])                    # (S, I)
    if x2.shape[0] == 0:                               # an expert with no tokens: nothing to do
        return F.linear(x, weight.to(x.dtype))
    y = _FP8Linear.apply(x2, weight, recipe)           # (S, O)
    return y.reshape(*x.shape[:-1], weight.shape[0])


class Float8Linear(nn.Linear):
    """nn.Linear whose matmul is fp8_linear; the bias is added in high precision. Same
    parameters and state-dict keys as nn.Linear, so checkpoints load either way."""

    def __init__(self, in_features, out_features, bias=True, recipe="blockwise", device=None,
                 dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.recipe = recipe

    @classmethod
    def from_linear(cls, lin, recipe):
        new = cls(lin.in_features, lin.out_features, lin.bias is not None, recipe, device="meta")
        new.weight, new.bias = lin.weight, lin.bias    # the same Parameter objects
        return new.train(lin.training)

    def forward(self, x):
        y = fp8_linear(x, self.weight, self.recipe)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self):
        return f"{super().extra_repr()}, recipe={self.recipe}"


class Float8ExpertGEMM(moe.ExpertGEMM):
    """moe.ExpertGEMM with all three GEMMs of every expert in FP8: the grouped dispatch's jagged
    buffer runs as one fp8_linear per expert group, each with that expert's weight quantized by
    the recipe from its master dtype (why a loop and not a grouped kernel: moe.py's docstring)."""

    def __init__(self, dim, hidden, recipe="blockwise"):
        super().__init__(dim, hidden)
        self.recipe = recipe

    def linear(self, a, w):
        return fp8_linear(a, w, self.recipe)

    def row_align(self, a, w):
        return 1  # fp8_linear quantizes each group into a buffer of its own

    def forward(self, a, w, offs):                      # a (P, I) in E groups, w (E, O, I)
        return self.per_group(a, w, offs)               # (P, O)

    def extra_repr(self):
        return f"{super().extra_repr()}, recipe={self.recipe}"


# ----------------------------------------------------------------------------------------------
# converting a model; which devices can run what

def _eligible(out_f, in_f, recipe):
    m = TILE if recipe == "blockwise" else 16          # CUDA: dims % 16; blockwise K, N % 128
    return out_f % m == 0 and in_f % m == 0, f"dims ({out_f}, {in_f}) not multiples of {m}"


def convert_to_float8(model, recipe, skip=("lm_head",), verbose=True):
    """Swap, in place, eligible nn.Linear layers for Float8Linear and each MoE layer's expert
    seam (moe.ExpertGEMM) for Float8ExpertGEMM. Stay in high precision: layers whose name or
    last name part matches a `skip` pattern (fnmatch), Linears named gate/router (routers,
    §3.3.1), layers whose sizes CUDA's FP8 GEMMs refuse, and everything that is neither (the
    embedding, norms, moe.py's raw gate parameter). Returns the converted names."""
    if recipe in (None, "off"):
        return []
    assert recipe in RECIPES, f"unknown fp8 recipe {recipe!r}; choose from {RECIPES}"
    converted, skipped = [], []
    for pname, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            name = f"{pname}.{cname}" if pname else cname
            if isinstance(child, moe.ExpertGEMM):
                ok, why = _eligible(child.hidden, child.dim, recipe)
            elif isinstance(child, nn.Linear):
                ok, why = _eligible(child.out_features, child.in_features, recipe)
            else:
                continue
            pat = next((p for p in skip if fnmatch.fnmatch(name, p) or fnmatch.fnmatch(cname, p)), None)
            if pat is not None:
                skipped.append((name, f"matches skip pattern {pat!r} (kept high precision)"))
            elif cname in ("gate", "router"):
                skipped.append((name, "looks like an MoE router (kept high precision, §3.3.1)"))
            elif not ok:
                skipped.append((name, why))
            else:
                setattr(parent, cname, _to_float8(child, recipe))
                converted.append(name)
    if verbose:
        print(f"fp8 {recipe}: converted {len(converted)} layer(s): {', '.join(converted) or '-'}")
        for name, why in skipped:
            print(f"fp8 {recipe}: kept {name}: {why}")
        print(f"fp8 {recipe}: embeddings, norms and other non-Linear modules stay high precision")
    return converted


def _to_float8(layer, recipe):
    """The FP8 twin of an nn.Linear or moe.ExpertGEMM (an FP8 one gets the new recipe)."""
    if isinstance(layer, (Float8Linear, Float8ExpertGEMM)):
        layer.recipe = recipe
        return layer
    if isinstance(layer, moe.ExpertGEMM):
        return Float8ExpertGEMM(layer.dim, layer.hidden, recipe).train(layer.training)
    return Float8Linear.from_linear(layer, recipe)


def fp8_supported(device, recipe="blockwise"):
    """(ok, reason): can `recipe` run for real on `device`? CPU: yes, through the CPU path
    (for testing, not speed). CUDA: tensorwise/rowwise need compute capability 8.9+,
    blockwise needs 9.x (Hopper), CUDA >= 12.9 and torch's F.scaled_mm."""
    device = torch.device(device)
    if recipe in (None, "off"):
        return True, "fp8 off"
    if recipe not in RECIPES:
        return False, f"unknown fp8 recipe {recipe!r}; choose from off, {', '.join(RECIPES)}"
    if device.type == "cpu":
        return True, "cpu: torch._scaled_mm CPU kernel / blockwise emulation (testing, not speed)"
    if device.type != "cuda" or not torch.cuda.is_available():
        return False, f"fp8 needs a CUDA GPU (or the CPU path); device is {device}"
    cc = torch.cuda.get_device_capability(device)
    if recipe != "blockwise":
        return (cc >= (8, 9), f"{recipe} needs compute capability >= 8.9, device has {cc[0]}.{cc[1]}")
    cuda = tuple(int(v) for v in (torch.version.cuda or "0.0").split(".")[:2])
    if cc[0] != 9:
        return False, f"blockwise needs a Hopper GPU (compute capability 9.x), device has {cc[0]}.{cc[1]}"
    if cuda < (12, 9) or not hasattr(F, "scaled_mm"):
        return False, f"blockwise needs CUDA >= 12.9 and torch with F.scaled_mm (CUDA {torch.version.cuda})"
    return True, f"blockwise on compute capability {cc[0]}.{cc[1]}"


def default_recipe(device):
    """`--fp8` default: blockwise on a Hopper GPU that can run it, off elsewhere."""
    device = torch.device(device)
    return "blockwise" if device.type == "cuda" and fp8_supported(device, "blockwise")[0] else "off"
