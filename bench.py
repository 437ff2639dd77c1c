"""
Speed and memory benchmarks, printed as a table and written to bench.json.

    python bench.py                 # every group
    python bench.py model moe       # only these groups

bench.json is a flat {"group.figure": value} map so figures can be compared across commits.
Speeds come with their fraction of this machine's matmul peak, measured in the same run
(peak.fp32_gflops: an fp32 1024^3 matmul) from FLOPs per token counted from the config
(GPT.flops_per_token): *_peak_frac is the figure to push, since absolute speed moves with the machine.
Groups: model (training tokens/s of the pretrain step as train.py runs it on a CPU, compiled,
and its compile time; eager in fp32 and in bf16 autocast for comparison; sampling tokens/s),
moe (MoE layer vs dense and vs a loop), fp8 (loss gap of each recipe against full precision
after a full pretrain of PRESET (nocheck): six runs, about 1.5 hours on 2 cores, reused once done; CPU
step time), rewards (verdicts/s and p99 latency), grpo (one GRPO step split into its
phases), ddp (training tokens/s in 1 and 2 processes over gloo, the cores shared out). All at
the cpu preset's shapes (PRESET's world) on the machine it runs on; the CPU may be shared, so treat small
differences as noise.
gpu (CUDA only; without it one line says so and nothing is written): the gpu preset's shapes
on one GPU in bf16 autocast, as train.py runs them: training tokens/s and MFU, sampling
tokens/s, a large linear layer in bf16 and in each FP8 recipe, the MoE layer's dispatches.
"""
import contextlib
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from fractions import Fraction
from unittest import mock

import torch
import torch.multiprocessing as mp

import config
import data
import dist
import fp8
import grpo
import loops
import moe
import rewards
import tokenizer
import train
from checkpoint import load_checkpoint
from model import GPT, GPTConfig
from moe import MoE, SwiGLU

ROOT = os.path.dirname(os.path.abspath(__file__))
# The CPU rows run at the world before checks (`--preset nocheck`): the cpu preset's model, with
# its shorter pretrain (550 steps) and responses; bench.json's figures were measured there.
PRESET = "nocheck"


def cpu_preset_configs():
    """The cpu preset's model config and tokenizer (trained exactly as train.py does), in PRESET's world."""
    args = train.parse_args(["--preset", PRESET])
    _, cfgs = train.build_configs(args, "cpu")
    corpus = data.build_corpus(cfgs["data"])
    enc = data.build_tokenizer(cfgs["data"], corpus)
    cfgs["model"].vocab_size = enc.n_vocab
    return cfgs, enc, corpus


def timed(fn, reps=3, warmup=1, sync=None):
    """Median seconds of fn over reps runs after warmup runs. sync (torch.cuda.synchronize for
    GPU work) runs before each clock read, so kernels still queued count."""
    ts = []
    for i in range(warmup + reps):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        if i >= warmup:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ----------------------------------------------------------------------------------------------

@functools.cache
def gemm_peak(dtype=torch.float32, n=1024):
    """This machine's matmul peak in FLOP/s: the median of n^3 matmuls in `dtype`, measured in
    this run (the figure every *_peak_frac divides by; the data sheet's would flatter us)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, reps=9, warmup=2)


def bench_model():
    """Training tokens/s of the cpu preset as train.py runs its pretrain on a CPU (fp32, compiled:
    loops.compiled; compile_s is the compile's time with an empty compiler cache, as on a fresh
    machine), then eager and, for comparison, eager in bf16 autocast; sampling tokens/s. Each
    with its fraction of the measured matmul peak."""
    cfgs, enc, corpus = cpu_preset_configs()
    torch.manual_seed(0)
    mc, tc = cfgs["model"], cfgs["train"]
    model = GPT(mc)
    init = {k: v.clone() for k, v in model.state_dict().items()}  # sampling starts from these weights
    opt = loops.make_optimizer(model, 1e-4, tc, "cpu")  # train.py's AdamW
    ids = torch.tensor(tokenizer.encode_docs(enc, corpus[:3000]))
    x = torch.stack([ids[i * mc.block_size:(i + 1) * mc.block_size] for i in range(tc.batch_size)])

    def train_step(net, amp=contextlib.nullcontext):
        with amp():
            _, loss = net(x, x.roll(-1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    res = {}
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache):
        t0 = time.perf_counter()
        fast = loops.compiled(model, x, x.roll(-1, 1), contextlib.nullcontext()) if tc.compile else model
        res["model.compile_s"] = time.perf_counter() - t0
        res["model.train_tok_s"] = x.numel() / timed(lambda: train_step(fast), reps=5)
    res["model.train_tok_s_eager"] = x.numel() / timed(lambda: train_step(model), reps=5)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    res["model.train_tok_s_bf16"] = x.numel() / timed(lambda: train_step(model, bf16))
    per_tok = 3 * model.flops_per_token(mc.block_size)
    for name in ("", "_eager"):
        res[f"model.train_peak_frac{name}"] = res[f"model.train_tok_s{name}"] * per_tok / gemm_peak()
    res["model.train_peak_frac_bf16"] = res["model.train_tok_s_bf16"] * per_tok / gemm_peak(torch.bfloat16)

    problems = data.heldout_problems(cfgs["data"])[:16]
    prompts = [enc.encode_ordinary(p.prompt) for p in problems]
    model.load_state_dict(init)  # the same weights whatever trained before (rows that end early change the speed)
    model.eval()
    for name, cache in (("sample_tok_s", True), ("sample_tok_s_nocache", False)):
        n = []
        t = timed(lambda: n.append(sum(map(len, model.generate(prompts, 96, -1 % mc.vocab_size, temperature=1.0,
                                                                  use_cache=cache)))), reps=1)
        res[f"model.{name}"] = n[-1] / t
    res["peak.fp32_gflops"], res["peak.bf16_gflops"] = gemm_peak() / 1e9, gemm_peak(torch.bfloat16) / 1e9
    return res


# ---- moe: the MoE layer against a dense SwiGLU with the same active parameters (hidden
# (K+S)*H: the same FLOPs per token) and against the naive loop dispatch. The large shape is
# the issue's: 4096 tokens, C=512, 16 routed experts top-2 + 1 shared; H=256 is the gpu
# preset's expert size. fp32 for both sides (like with like); medians of per-repeat ratios.
# "gemm_floor" runs only the 18 GEMMs of the MoE's forward+backward (the same shapes, one
# jagged _grouped_mm per routed GEMM): no dispatch can beat it, so floor/loop bounds from
# below what any dispatch could reach for moe.ratio_vs_loop on this machine. On CUDA (the gpu
# group) the same timers run in bf16 autocast, as training does: the grouped dispatch then runs
# _grouped_mm's CUTLASS kernel (fp32 would take its per-group fallback), groups padded as moe.py pads.

LARGE_SHAPE = (16, 256, 512, 16, 2, 1, 256)  # 4096 tokens


def _cfg(C, E, K, S, H, dispatch):
    return types.SimpleNamespace(
        n_embd=C, n_routed_experts=E, n_experts_per_tok=K, n_shared_experts=S, moe_hidden=H,
        n_expert_groups=1, n_limited_groups=1, route_scale=1.0, score_func="sigmoid",
        bias_update_gamma=0.0, seq_aux_alpha=1e-4, moe_dispatch=dispatch)


def _sync(x):
    if x.is_cuda:  # read the clock only once the GPU has finished
        torch.cuda.synchronize(x.device)


def _fwd_bwd(module, x):
    module.zero_grad(set_to_none=True)
    x.grad = None
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda else contextlib.nullcontext()
    _sync(x)
    t0 = time.perf_counter()
    with amp:
        loss = module(x).float().square().mean() + getattr(module, "aux_loss", 0.0)
    loss.backward()
    _sync(x)
    return time.perf_counter() - t0


def _gemm_floor(m, x):
    """A timer for the GEMMs alone of MoE m's forward+backward on x, with m's routing."""
    N, C = x.numel() // x.shape[-1], x.shape[-1]
    E, H = m.w1.shape[:2]
    dt = torch.bfloat16 if x.is_cuda else torch.float32  # the experts' dtype (autocast on CUDA)
    with torch.no_grad():
        idx = m.route(x.reshape(N, C))[0]
    align = m.expert_gemm.row_align(x.new_empty(0, dtype=dt), m.w1)  # 1 on CPU: no padding
    _, offs, M = moe._pad_groups(torch.bincount(idx.flatten(), minlength=E), idx.numel(), align)
    Hs = m.shared.w1.out_features if m.shared is not None else 0
    r = lambda *shape: torch.randn(*shape, device=x.device, dtype=dt)
    xs, h, ys = r(M, C), r(M, H), r(M, C)
    xt, hs, w1, w2 = r(N, C), r(N, Hs), r(E, H, C), r(E, C, H)
    s1, s2 = r(Hs, C), r(C, Hs)
    gmm = torch._grouped_mm

    def run():
        _sync(x)
        t0 = time.perf_counter()
        for _ in range(2):  # w1, w3: forward, input grad, weight grad
            gmm(xs, w1.transpose(1, 2), offs=offs), gmm(h, w1, offs=offs), gmm(h.t(), xs, offs=offs)
        gmm(h, w2.transpose(1, 2), offs=offs), gmm(ys, w2, offs=offs), gmm(ys.t(), h, offs=offs)  # w2
        if Hs:  # the shared expert: plain GEMMs
            for _ in range(2):
                xt @ s1.t(), hs @ s1, hs.t() @ xt
            hs @ s2.t(), xt @ s2, xt.t() @ hs
        _sync(x)
        return time.perf_counter() - t0
    return run


def _ratios(shape, repeats, with_loop, warmup=2, device="cpu"):
    """Median over repeats of t(moe)/t(dense), t(moe)/t(loop) and t(gemm_floor)/t(loop), one
    forward+backward each (input and parameter grads). The timers take turns within every
    repeat and each repeat gives its own ratio, so a noisy neighbour slows all of them alike."""
    B, T, C, E, K, S, H = shape
    torch.manual_seed(0)
    x = torch.randn(B, T, C, device=device, requires_grad=True)
    moe_m, dense_m = MoE(_cfg(C, E, K, S, H, "grouped")).to(device), SwiGLU(C, (K + S) * H).to(device)
    timers = {"moe": lambda: _fwd_bwd(moe_m, x), "dense": lambda: _fwd_bwd(dense_m, x)}
    if with_loop:  # same weights, same routing, the naive dispatch
        loop_m = MoE(_cfg(C, E, K, S, H, "loop")).to(device)
        loop_m.load_state_dict(moe_m.state_dict())
        timers["loop"] = lambda: _fwd_bwd(loop_m, x)
        timers["floor"] = _gemm_floor(moe_m, x)
    times = {name: [] for name in timers}
    for i in range(warmup + repeats):
        for name, timer in timers.items():
            t = timer()
            if i >= warmup:
                times[name].append(t)
    ratio = lambda a, b: statistics.median(p / q for p, q in zip(times[a], times[b]))
    out = {"moe_ms": 1e3 * statistics.median(times["moe"]), "dense": ratio("moe", "dense")}
    if with_loop:
        out.update(loop=ratio("moe", "loop"), floor=ratio("floor", "loop"),
                   loop_ms=1e3 * statistics.median(times["loop"]), floor_ms=1e3 * statistics.median(times["floor"]))
    return out


def bench_moe_shapes(cpu_preset_shape=(16, 192, 128, 8, 2, 1, 128), repeats=15):
    """moe.ratio_vs_dense, moe.ratio_vs_loop and moe.gemm_floor_vs_loop (with the times behind
    them) at the large shape, and moe.ratio_vs_dense_cpu_preset at the cpu preset's
    (B, T, C, E, K, S, H)."""
    big = _ratios(LARGE_SHAPE, repeats, with_loop=True)
    small = _ratios(tuple(cpu_preset_shape), repeats, with_loop=False)
    return {
        "moe.ratio_vs_dense": big["dense"],
        "moe.ratio_vs_loop": big["loop"],
        "moe.gemm_floor_vs_loop": big["floor"],
        "moe.ratio_vs_dense_cpu_preset": small["dense"],
        "moe.ms_fwd_bwd": big["moe_ms"],
        "moe.ms_fwd_bwd_loop": big["loop_ms"],
        "moe.ms_gemm_floor": big["floor_ms"],
        "moe.ms_fwd_bwd_cpu_preset": small["moe_ms"],
    }


def moe_shape(cfgs):
    """A preset's MoE layer as (B, T, C, E, K, S, H)."""
    m, t = cfgs["model"], cfgs["train"]
    return (t.batch_size, m.block_size, m.n_embd, m.n_routed_experts, m.n_experts_per_tok, m.n_shared_experts,
            m.moe_hidden)


def bench_moe():
    return bench_moe_shapes(moe_shape(cpu_preset_configs()[0]))


# ---- fp8: each recipe's loss against full precision (same seed, same steps), and step time

def _step_ms(x, w, recipe, reps, warmup=1, sync=None):
    """Median ms of one forward + backward (input and weight grads) of fp8_linear(x, w, recipe)."""
    def step():
        x.grad = w.grad = None
        y = fp8.fp8_linear(x, w, recipe)
        y.backward(torch.ones_like(y))
    return 1e3 * timed(step, reps, warmup, sync)


def bench_fp8_step_times(S=2048, I=512, O=512, reps=5) -> dict:
    torch.manual_seed(0)
    x = torch.randn(S, I, requires_grad=True)
    w = (torch.randn(O, I) * 0.05).requires_grad_()
    return {f"fp8.step_ms_{r}": round(_step_ms(x, w, r, reps), 2) for r in ("off",) + fp8.RECIPES}


def bench_fp8():
    """Pretrain the cpu-preset model (all 550 steps) with each recipe and compare its final loss
    with the unquantized run's, same seed, same batches. The gap is taken on the held-out loss
    (every token of a fixed held-out set) and, as a cross-check, on the mean training loss of
    the last 50 steps. Two more unquantized runs say how far fp32 runs land apart anyway, the
    noise a gap has to be read against: `off_loop` changes only the order of floating-point
    sums (the MoE's loop dispatch, the same function as the grouped one that every other run,
    FP8 included, uses), `off_seed2` the init and batch order (--train_seed 2). Six runs, ~1.5
    hours on 2 cores; a finished run is reused (rm -r out/bench_fp8 to redo). BENCH_FP8_ITERS
    shortens them."""
    iters = os.environ.get("BENCH_FP8_ITERS")
    runs = {r: [] for r in ("off",) + fp8.RECIPES}
    runs.update(off_loop=["--moe_dispatch", "loop"], off_seed2=["--train_seed", "2"])
    res, ev = {}, {}
    for name, extra in runs.items():
        out = os.path.join(ROOT, "out", "bench_fp8", name)
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--stage", "pretrain", "--preset", PRESET,
               "--fp8", name.split("_")[0], "--out_dir", out, "--n_heldout", "20", "--quiet"] + extra
        cmd += ["--max_iters", iters] if iters else []
        path = os.path.join(out, "pretrain", "eval.json")
        done = json.load(open(path)) if os.path.exists(path) else {}
        if done.get("argv") != cmd[2:]:  # a finished run of this command is reused: rm -r out/bench_fp8 to redo
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            done = json.load(open(path))
        ev[name] = done
        res[f"fp8.heldout_loss_{name}"] = ev[name]["heldout_loss"]
        res[f"fp8.train_loss50_{name}"] = ev[name]["final_loss_avg50"]
    for name in fp8.RECIPES + ("off_loop", "off_seed2"):
        tag = {"off_loop": "sum_order_noise", "off_seed2": "seed_noise"}.get(name, name)
        for key, fig in (("heldout_loss", "loss_gap"), ("final_loss_avg50", "train_loss50_gap")):
            res[f"fp8.{fig}_{tag}"] = abs(ev[name][key] - ev["off"][key]) / ev["off"][key]
    res.update(bench_fp8_step_times())
    return res


# ---- rewards: verdicts per second on a GRPO-sized batch, and the latency of one verdict

ADVERSARIAL = ["__import__('os').system('ls')", "9^9^9^9", "1000000!", "(x+1)^100000", "nan",
               "1" * 100_000, "(" * 500 + "1" + ")" * 500, "lambda: 1", "５", "zoo", "3 or 4"]
THINK = {"en": "First work out each part step by step, then combine the partial results.",
         "zh": "先逐步算出每一部分，再把中间结果合起来。"}


def _problem(rng):
    """(gold, [equivalent forms], [wrong answers]) in the toy world's formats."""
    kind = rng.choice(["arith", "linear", "poly", "frac"])
    if kind == "arith":
        v = rng.randint(10, 99) * rng.randint(2, 9) + rng.randint(-50, 50)
        return str(v), [f"{v}.", f"\\boxed{{{v}}}", f"{v}。"], [str(v + rng.choice([-10, -1, 1, 2]))]
    if kind == "linear":
        q = rng.randint(-20, 20)
        return f"x = {q}", [str(q), f"x={q}", f"\\boxed{{x = {q}}}"], [f"x = {q + 1}", f"y = {q}"]
    if kind == "poly":
        c, a, b = rng.randint(1, 5), rng.randint(-9, 9), rng.randint(-9, 9)
        gold = f"{c}x^2 + {c * (a + b)}x + {c * a * b}".replace("+ -", "- ")
        factored = f"{c}(x + {a})(x + {b})".replace("+ -", "- ")
        wrong = [f"{c}x^2 + {c * (a + b) + 1}x + {c * a * b}", f"{c}(x + {a})(x - {b + 1})"]
        return gold, [factored, gold.replace(" ", "")], wrong
    f = Fraction(rng.randint(1, 30), rng.randint(2, 30))
    p, q = f.numerator, f.denominator  # the gold is reduced
    forms = [f"{2 * p}/{2 * q}", f"\\frac{{{p}}}{{{q}}}"]
    if 10**6 % q == 0:
        forms.append(str(p / q))  # a terminating decimal: 0.5 for 1/2
    return f"{p}/{q}", forms, [f"{p}/{q + 1}", f"{p + 1}/{q}"]


def make_batch(n=1000, seed=0):
    """n completions of independent problems: right, right in another form, wrong, badly
    formatted and adversarial, in both languages."""
    rng = random.Random(seed)
    completions, golds, langs = [], [], []
    for _ in range(n):
        gold, same, wrong = _problem(rng)
        lang, r = rng.choice(["en", "zh"]), rng.random()
        answer = (gold if r < 0.35 else rng.choice(same) if r < 0.55 else rng.choice(wrong)
                  if r < 0.8 else rng.choice(ADVERSARIAL) if r < 0.9 else gold)
        text = f" <think> {THINK[lang]} </think> <answer> {answer} </answer>"
        if r >= 0.9:  # badly formatted: no think block, trailing text, or two answers
            text = rng.choice([f"<answer>{answer}</answer>", text + " Done.",
                               text + f"<answer>{answer}</answer>"])
        completions.append(text)
        golds.append(gold)
        langs.append(lang)
    return completions, golds, langs


def bench_rewards(n=1000, seed=0) -> dict:
    """rewards.verdicts_per_s: a 1,000-completion batch through score_batch (worker already
    running, as in training); rewards.p99_ms: 99th percentile of one completion scored alone."""
    completions, golds, langs = make_batch(n, seed)
    rewards.score_batch(completions[:20], golds[:20], langs[:20])  # start the worker (once per run)
    t0 = time.perf_counter()
    rewards.score_batch(completions, golds, langs, terms=rewards.TERMS)
    batch_s = time.perf_counter() - t0
    times = []  # one completion at a time, no batch cache: the latency of a single verdict
    for c, g, lang in zip(completions, golds, langs):
        t = time.perf_counter()
        rewards.score_batch([c], [g], [lang], terms=rewards.TERMS)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"rewards.verdicts_per_s": round(n / batch_s, 1),
            "rewards.p99_ms": round(1000 * times[int(0.99 * (n - 1))], 3),
            "rewards.batch_s": round(batch_s, 3)}


def bench_grpo(steps=6):
    """GRPO steps at the cpu preset from the base model (out/pretrain if present, else a fresh
    model: the split then reflects untrained lengths), split into their phases: the median of
    steps 2..steps, each on its own 16 prompts (one step is too noisy on a shared CPU)."""
    cfgs, enc, _ = cpu_preset_configs()
    path = os.path.join(ROOT, "out", "pretrain", "ckpt.pt")
    model = GPT(cfgs["model"])
    if os.path.exists(path):
        ck = load_checkpoint(path)
        enc, model = ck["enc"], GPT(GPTConfig(**ck["configs"]["model"]))
        model.load_state_dict(ck["model"])
    rc = cfgs["rl"]
    ref = grpo.make_reference(model)
    opt = loops.make_optimizer(model, rc.rl_lr, cfgs["train"], "cpu")
    score = lambda texts, ps: rewards.score_batch(texts, [p.answer for p in ps], [p.lang for p in ps])
    runs, prompt_lens = [], []
    for i in range(steps):
        problems = data.rl_problems(cfgs["data"], rc.prompts_per_step, seed=i)
        prompt_lens += [len(enc.encode_ordinary(p.prompt)) for p in problems]
        runs.append(grpo.grpo_step(model, ref, opt, enc, problems, rc, score, torch.Generator().manual_seed(i)))
    st = {k: statistics.median(r[k] for r in runs[1:]) for k in ("step_s", "t_generate", "t_score", "t_logprobs",
                                                                 "t_update", "sample_tok_s", "response_tokens")}
    res = {"grpo.step_s": st["step_s"], "grpo.generate_frac": st["t_generate"] / st["step_s"],
           "grpo.score_frac": st["t_score"] / st["step_s"], "grpo.logprob_frac": st["t_logprobs"] / st["step_s"],
           "grpo.update_frac": st["t_update"] / st["step_s"], "grpo.sample_tok_s": st["sample_tok_s"]}
    # Work per step, from the config: each distinct prompt once (sampling's prefill, and each
    # scoring pass's), every completion token over its prompt and its own past; sampling is one
    # forward, then a forward per scoring pass (reference; old policy when mu > 1) and forward +
    # backward (3x) for the update.
    U, B, P, R = rc.prompts_per_step, rc.prompts_per_step * rc.group_size, statistics.mean(prompt_lens), \
        st["response_tokens"]
    f = model.flops_per_token
    passes = 1 + 3 + (rc.beta > 0) + (rc.mu > 1 or rc.n_minibatches > 1)
    sample_flops = U * P * f(P / 2) + B * R * f(P + R / 2)
    step_flops = passes * sample_flops
    res["grpo.sample_peak_frac"] = sample_flops / st["t_generate"] / gemm_peak()
    res["grpo.step_peak_frac"] = step_flops / st["step_s"] / gemm_peak()
    model.eval()  # the same rollout without the KV cache: the cost the cache saves
    prompts = [enc.encode_ordinary(p.prompt) for p in problems for _ in range(rc.group_size)]
    t0 = time.perf_counter()
    n = sum(map(len, model.generate(prompts, rc.max_new_tokens, enc.eot_token, temperature=rc.temperature,
                                    use_cache=False, generator=torch.Generator().manual_seed(0))))
    res["grpo.sample_tok_s_nocache"] = n / (time.perf_counter() - t0)
    return res


# ---- gpu: the gpu preset on one CUDA device, in bf16 autocast with fused AdamW as train.py runs
# it. Every timer synchronizes before reading the clock; medians of repeats after warmup.

# ----------------------------------------------------------------------------------------------
# ddp: the supervised loop at the cpu preset in 1 and in 2 processes (gloo), the same global batch

def _ddp_rank(rank, world, init_file, steps, threads, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(threads)
    _, cfgs = train.build_configs(train.parse_args(["--preset", PRESET]), "cpu")
    mc, tc = cfgs["model"], cfgs["train"]
    torch.manual_seed(0)
    model = GPT(mc)
    opt = loops.make_optimizer(model, tc.lr, tc, "cpu")
    ids = torch.randint(mc.vocab_size, (200_000,), generator=torch.Generator().manual_seed(0))
    batch_at = loops.corpus_batches(ids, tc, mc.block_size, "cpu")
    run = types.SimpleNamespace(step=0, log=lambda row: None,
                                bar=types.SimpleNamespace(update=lambda n: None, set_postfix=lambda **kw: None))
    step = lambda n: loops.train_sft(dist.wrap(model), opt, batch_at, n, lambda s: tc.lr, tc, run,
                                     contextlib.nullcontext(), save=lambda s: None)
    step(2)  # warm-up
    dist.barrier()
    t0 = time.perf_counter()
    step(steps)
    dist.barrier()
    if rank == 0:
        json.dump({"tok_s": steps * tc.batch_size * mc.block_size / (time.perf_counter() - t0)}, open(out, "w"))
    torch.distributed.destroy_process_group()


def bench_ddp(steps=20):
    """ddp.train_tok_s_N: training tokens/s of the cpu preset's pretrain step (global batch
    fixed) in N processes over gloo, the machine's cores shared out between them; efficiency =
    tok_s_2 / (2 * tok_s_1)."""
    cores, res = os.cpu_count(), {}
    for world in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "r.json")
            mp.spawn(_ddp_rank, args=(world, os.path.join(d, "init"), steps, max(1, cores // world), out),
                     nprocs=world, join=True)
            res[f"ddp.train_tok_s_{world}"] = json.load(open(out))["tok_s"]
    res["ddp.efficiency"] = res["ddp.train_tok_s_2"] / (2 * res["ddp.train_tok_s_1"])
    return res


def gpu_unavailable():
    """Why the gpu group cannot run here (None: it can)."""
    return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"


def bench_gpu(reps=5):
    """gpu.matmul_tflops: a bf16 8192^3 matmul, the measured peak that MFU divides by (not the
    data sheet's). gpu.train_tok_s: gpu-preset training steps (forward, backward, clip, AdamW)
    on random tokens of a 1024-word vocabulary; gpu.mfu = train_tok_s * 3 flops_per_token / peak
    (6 N + 12 L C T: causal masking's half not subtracted). gpu.sample_tok_s: generate() with
    the KV cache, 64 prompts of 32 random tokens, 256 new tokens each at temperature 1 (no
    end-of-text: every row runs). A linear layer of 8192 tokens x 4096 in x 4096 out, forward + backward in bf16 and in each
    FP8 recipe (quantization included): gpu.linear_ms_*, gpu.fp8_speedup_<recipe> = bf16 ms /
    fp8 ms. The gpu preset's MoE layer (bench.py's moe timers): gpu.moe_ratio_vs_loop,
    gpu.moe_ratio_vs_dense, gpu.moe_gemm_floor_vs_loop (time ratios: below 1 is faster)."""
    dev, sync, bf16 = "cuda", torch.cuda.synchronize, torch.bfloat16
    _, cfgs = train.build_configs(train.parse_args(["--preset", "gpu"]), dev)
    mc, tc = cfgs["model"], cfgs["train"]
    mc.vocab_size = 1024
    amp = torch.autocast(dev, dtype=bf16)
    print(f"gpu: {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}, "
          f"CUDA {torch.version.cuda}")
    torch.manual_seed(0)
    a, b, c = (torch.randn(8192, 8192, device=dev, dtype=bf16) for _ in range(3))
    peak = 10 * 2 * 8192 ** 3 / timed(lambda: [torch.mm(a, b, out=c) for _ in range(10)], reps, 2, sync)
    res = {"gpu.matmul_tflops": peak / 1e12}
    del a, b, c

    model = GPT(mc).to(dev)
    opt = loops.make_optimizer(model, tc.lr, tc, dev)
    x = torch.randint(mc.vocab_size, (tc.batch_size, mc.block_size), device=dev)

    def train_step():
        with amp:
            _, loss = model(x, x.roll(-1, 1))
        loss.backward()
        dist.clip_and_step(model, opt, tc.grad_clip)
    tok_s = x.numel() / timed(train_step, reps, 3, sync)
    flops_per_tok = 3 * model.flops_per_token(mc.block_size)  # 6 N + 12 L C T
    res.update({"gpu.train_tok_s": tok_s, "gpu.mfu": tok_s * flops_per_tok / peak})

    model.eval()
    prompts = torch.randint(mc.vocab_size, (64, 32)).tolist()

    def sample():
        with amp:  # eot = vocab_size is never sampled: 64 x 256 new tokens
            model.generate(prompts, 256, mc.vocab_size, temperature=1.0)
    res["gpu.sample_tok_s"] = 64 * 256 / timed(sample, 3, 1, sync)
    del model, opt, x

    x = torch.randn(8192, 4096, device=dev, dtype=bf16, requires_grad=True)
    w = (torch.randn(4096, 4096, device=dev, dtype=bf16) * 0.02).requires_grad_()
    ms = {"bf16": _step_ms(x, w, "off", reps, 3, sync)}
    for recipe in fp8.RECIPES:
        ok, why = fp8.fp8_supported(dev, recipe)
        if ok:
            ms[recipe] = _step_ms(x, w, recipe, reps, 3, sync)
            res[f"gpu.fp8_speedup_{recipe}"] = ms["bf16"] / ms[recipe]
        else:
            print(f"gpu: no {recipe} figures: {why}")
    res.update({f"gpu.linear_ms_{k}": v for k, v in ms.items()})
    del x, w

    r = _ratios(moe_shape(cfgs), repeats=10, with_loop=True, device=dev)
    res.update({"gpu.moe_ratio_vs_loop": r["loop"], "gpu.moe_ratio_vs_dense": r["dense"],
                "gpu.moe_gemm_floor_vs_loop": r["floor"], "gpu.moe_ms_fwd_bwd": r["moe_ms"],
                "gpu.moe_ms_fwd_bwd_loop": r["loop_ms"]})
    return res


GROUPS = {"model": bench_model, "moe": bench_moe, "fp8": bench_fp8, "rewards": bench_rewards, "grpo": bench_grpo,
          "ddp": bench_ddp, "gpu": bench_gpu}
UNAVAILABLE = {"gpu": gpu_unavailable}  # group -> why it cannot run here (None: it can)


def main():
    names = sys.argv[1:] or list(GROUPS)
    bad = [n for n in names if n not in GROUPS]
    if bad:
        print(f"bench.py: error: unknown group {bad[0]!r} (valid groups: {', '.join(GROUPS)})", file=sys.stderr)
        sys.exit(2)
    for name in list(names):  # a group that cannot run here says so in one line and writes nothing
        why = UNAVAILABLE.get(name, lambda: None)()
        if why:
            print(f"({name}: skipped: {why}; nothing written)")
            names.remove(name)
    if names:
        kept = config.keep_freed_memory()  # as train.py runs on a CPU (config.pick_device)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu"
              + ("; malloc keeps freed memory" if kept else "") + (" (gpu group: cuda)" if "gpu" in names else ""))
    path = os.path.join(ROOT, "bench.json")
    for name in names:
        t0 = time.time()
        figs = GROUPS[name]()
        for k, v in figs.items():
            print(f"{k:<36} {v:>14.4g}")
        print(f"({name}: {time.time() - t0:.0f}s)")
        # merged into bench.json after every group (read afresh: another bench.py may have
        # written since) and replaced atomically, so a killed or concurrent run loses nothing
        results = json.load(open(path)) if os.path.exists(path) else {}
        results.update(figs)
        with open(path + ".tmp", "w") as f:
            json.dump(dict(sorted(results.items())), f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
