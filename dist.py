"""
dist.py: data parallel with torchrun, and the guards that let a run survive faults.

    python train.py --stage zero                                  # one process (N = 1)
    torchrun --nproc_per_node 8 train.py --stage zero             # 8 GPUs, one node
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29500 train.py --stage zero   # each node

A library module: train.py calls `init()` once; everything else asks `rank()` / `world()`.
torchrun starts N copies of the same program and sets RANK, WORLD_SIZE and LOCAL_RANK; the
copies find each other through its rendezvous, and torch.distributed carries tensors between
them (nccl between GPUs, gloo between CPU processes). Without torchrun every helper here is the
N = 1 case and costs nothing, so one code path serves both.

How the work is split (the global batch never depends on N):
- supervised stages: every rank builds the step's whole batch (a pure function of the step)
  and keeps its own rows; the loss is normalised by the token count of ALL ranks.
- GRPO: every rank rolls out its own prompts, whole groups only, and draws its sampling noise
  as a slice of the global batch's (model.generate's `rows`), so N ranks sample what one
  would; the token normaliser is all-reduced like the supervised one.
- gradients: DistributedDataParallel averages them during backward; a micro-batch that is
  not the step's last skips that all-reduce (no_sync), as in single-process accumulation.
- evaluation: each rank answers a share of the held-out problems; the answers are gathered.
- files: rank 0 alone prints, logs and writes; the others wait at a barrier.

Faults. A preemption (SIGTERM, or ^C) sets a flag that the loops read after each step; every
rank stops at the same step, a checkpoint is written and the run exits with 128 + the signal
number, to be continued with --resume. A step whose gradient norm is not finite (a NaN or inf
loss makes one) is skipped: no parameter, optimizer moment or MoE bias moves.
"""
import contextlib
import datetime
import math
import os
import signal
import sys
import warnings

import torch
import torch.distributed as td
from torch.nn.parallel import DistributedDataParallel


def rank():
    return td.get_rank() if td.is_initialized() else 0


def world():
    return td.get_world_size() if td.is_initialized() else 1


def is_main():
    return rank() == 0


def init(device):
    """Join the torchrun group if launched by torchrun. Returns the device to use: on CUDA each
    rank takes the GPU of its LOCAL_RANK. Ranks other than 0 print nothing."""
    if "RANK" not in os.environ or td.is_initialized():
        return device
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    td.init_process_group("nccl" if device == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    if not is_main():
        sys.stdout = open(os.devnull, "w")
    print(f"data parallel: {world()} processes ({td.get_backend()})")
    return device


def close():
    if td.is_initialized():
        td.destroy_process_group()


def barrier():
    if world() > 1:
        td.barrier()


def all_reduce(t, op="sum"):
    """Sum (or max) of a tensor over the ranks, in place; returned for chaining."""
    if world() > 1:
        td.all_reduce(t, op=td.ReduceOp.SUM if op == "sum" else td.ReduceOp.MAX)
    return t


def _on_wire(values, dtype=torch.float64):
    # nccl carries CUDA tensors only; gloo carries CPU ones
    dev = "cuda" if td.is_initialized() and td.get_backend() == "nccl" else "cpu"
    return torch.tensor(values, dtype=dtype, device=dev)


def total(x):
    """A number summed over the ranks (a Python float in, a Python float out)."""
    return float(all_reduce(_on_wire(float(x))))


def mean_stats(stats):
    """Average a dict of float stats over the ranks (each rank has the same share of the batch)."""
    if world() == 1:
        return stats
    keys = sorted(k for k, v in stats.items() if isinstance(v, (int, float)))
    t = all_reduce(_on_wire([float(stats[k]) for k in keys])) / world()
    return {**stats, **dict(zip(keys, t.tolist()))}


def my_share(n, even=True):
    """This rank's contiguous slice of n items: [r*n//N, (r+1)*n//N). Training batches must
    split evenly (DDP averages equal shares); evaluation and sampling need not (even=False)."""
    if even and n % world():
        raise ValueError(f"{n} items cannot be split evenly over {world()} processes")
    return slice(rank() * n // world(), (rank() + 1) * n // world())


def gather(items):
    """Concatenate every rank's list, in rank order (the inverse of my_share)."""
    if world() == 1:
        return items
    out = [None] * world()
    td.all_gather_object(out, items)
    return [x for part in out for x in part]


def wrap(model):
    """The model the training forward/backward runs through: DDP across N > 1 processes, the
    model itself otherwise. Sampling and scoring use the bare model (DDP would need every rank
    to call it the same number of times). Buffers are not broadcast: the MoE biases stay equal
    because every rank applies the same all-reduced update (moe.update_bias)."""
    if world() == 1:
        return model
    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    # every parameter gets a gradient each step, an idle expert's too: the experts' weights are
    # stacked (E, ...) tensors, so DDP needs no search for unused parameters
    with warnings.catch_warnings():  # torch 2.13 asks for forward_sync_buffers, which would sync at init
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def no_sync(model, last):
    """Skip DDP's gradient all-reduce on all but the step's last micro-batch."""
    model = getattr(model, "_orig_mod", model)  # under torch.compile (loops.compiled), the module it wraps
    return model.no_sync() if isinstance(model, DistributedDataParallel) and not last else contextlib.nullcontext()


def clip_and_step(model, opt, grad_clip):
    """Clip the global gradient norm at grad_clip (0 = no clip) and step, unless the norm is
    not finite: then drop the gradients and leave everything as it was. Returns (norm, stepped).
    The norm is taken after DDP's all-reduce, so every rank decides alike."""
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf")))
    stepped = math.isfinite(norm)
    if stepped:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return norm, stepped


# ---- preemption
_STOP = {"signal": 0}


def _request_stop(signum, frame):
    if _STOP["signal"]:  # the second one: stop now, without a checkpoint
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
    _STOP["signal"] = signum
    os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step (send it again to stop now)\n".encode())


def catch_signals():
    """SIGTERM and SIGINT set a flag instead of killing the process mid-write; a second one
    stops at once (the loops read the flag after each step, and evaluation has no steps)."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, _request_stop)


def stop_requested():
    """The signal that asked this run to stop, on any rank (0: none). All ranks agree."""
    return int(all_reduce(_on_wire(_STOP["signal"], torch.int64), op="max"))


class Stopped(Exception):
    """Raised by a loop after it saved a checkpoint at a requested stop."""

    def __init__(self, signum, step):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}")
        self.signum, self.step = signum, step
