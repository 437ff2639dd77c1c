"""
_bench_moe.py -- forward+backward time of moe.MoE against a dense SwiGLU of the same active
parameters (hidden (K+S)*H, so the same FLOPs per token) and against the naive loop dispatch.
bench.py's `moe` group calls bench_moe(); `python _bench_moe.py` prints the figures.

Shapes are (B, T, C, E, K, S, H). The large shape is fixed by the issue: 4096 tokens, C=512,
16 routed experts top-2 plus 1 shared; H=512 (=C) is our choice: the active hidden
(K+S)*H = 3C is close to the 8/3*C of a standard SwiGLU MLP. Everything runs in fp32, MoE and
dense alike (like with like). Times are medians over repeats after a warm-up; the CPU may be
shared, so expect noise.
"""
import statistics
import time
import types

import torch

from moe import MoE, SwiGLU

LARGE_SHAPE = (16, 256, 512, 16, 2, 1, 256)  # 4096 tokens


def _cfg(C, E, K, S, H, dispatch):
    return types.SimpleNamespace(
        n_embd=C, n_routed_experts=E, n_experts_per_tok=K, n_shared_experts=S, moe_hidden=H,
        n_expert_groups=1, n_limited_groups=1, route_scale=1.0, score_func="sigmoid",
        bias_update_gamma=0.0, seq_aux_alpha=1e-4, moe_dispatch=dispatch)


def _fwd_bwd(module, x):
    module.zero_grad(set_to_none=True)
    x.grad = None
    t0 = time.perf_counter()
    loss = module(x).float().square().mean() + getattr(module, "aux_loss", 0.0)
    loss.backward()
    return time.perf_counter() - t0


def _ratios(shape, repeats, with_loop, warmup=2):
    """Median over repeats of t(moe)/t(dense) and t(moe)/t(loop), one forward+backward each
    (input and parameter grads). The modules take turns within every repeat and each repeat
    gives its own ratio, so a noisy neighbour on a shared CPU slows all of them alike."""
    B, T, C, E, K, S, H = shape
    torch.manual_seed(0)
    x = torch.randn(B, T, C, requires_grad=True)
    modules = {"moe": MoE(_cfg(C, E, K, S, H, "grouped")).train(),
               "dense": SwiGLU(C, (K + S) * H).train()}
    if with_loop:  # same weights, same routing, the naive dispatch
        modules["loop"] = MoE(_cfg(C, E, K, S, H, "loop")).train()
        modules["loop"].load_state_dict(modules["moe"].state_dict())
    times = {name: [] for name in modules}
    for i in range(warmup + repeats):
        for name, module in modules.items():
            t = _fwd_bwd(module, x)
            if i >= warmup:
                times[name].append(t)
    out = {"moe_ms": 1e3 * statistics.median(times["moe"])}
    for base in modules.keys() - {"moe"}:
        out[base] = statistics.median(m / b for m, b in zip(times["moe"], times[base]))
    return out


def bench_moe(cpu_preset_shape=(16, 192, 128, 8, 2, 1, 128), repeats=5):
    """{"moe.ratio_vs_dense", "moe.ratio_vs_loop"} at the large shape, plus
    "moe.ratio_vs_dense_cpu_preset" at the cpu preset's (B, T, C, E, K, S, H)."""
    big = _ratios(LARGE_SHAPE, repeats, with_loop=True)
    small = _ratios(tuple(cpu_preset_shape), 3 * repeats, with_loop=False)
    return {
        "moe.ratio_vs_dense": big["dense"],
        "moe.ratio_vs_loop": big["loop"],
        "moe.ratio_vs_dense_cpu_preset": small["dense"],
        "moe.ms_fwd_bwd": big["moe_ms"],
        "moe.ms_fwd_bwd_cpu_preset": small["moe_ms"],
    }


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    for k, v in bench_moe().items():
        print(f"{k:32s} {v:8.3f}")
