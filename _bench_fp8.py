"""CPU step time of one FP8 linear per recipe against plain fp32: python _bench_fp8.py

The figures of bench.py's `fp8` group that need no training run (the loss gaps need train.py):
fp8.step_ms_<recipe> and fp8.step_ms_off, forward + backward of a (2048 x 512) x (512 x 512)
linear, median over a few repetitions. On the CPU FP8 is slower than fp32 (quantizing costs
more than the GEMM saves; blockwise is emulated): this measures overhead, not a speed-up.
"""
import statistics
import time

import torch

import fp8


def _step_ms(x, w, recipe, reps):
    times = []
    for i in range(reps + 1):                          # the first one warms up
        t0 = time.perf_counter()
        y = fp8.fp8_linear(x, w, recipe)
        y.backward(torch.ones_like(y))
        times.append((time.perf_counter() - t0) * 1e3)
        x.grad = w.grad = None
    return statistics.median(times[1:])


def bench_fp8_step_times(S=2048, I=512, O=512, reps=5) -> dict:
    torch.manual_seed(0)
    x = torch.randn(S, I, requires_grad=True)
    w = (torch.randn(O, I) * 0.05).requires_grad_()
    return {f"fp8.step_ms_{r}": round(_step_ms(x, w, r, reps), 2) for r in ("off",) + fp8.RECIPES}


if __name__ == "__main__":
    for k, v in bench_fp8_step_times().items():
        print(f"{k:24s} {v:10.2f}")
