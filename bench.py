"""
Speed and memory benchmarks, printed as a table and written to bench.json.

    python bench.py                 # every group
    python bench.py model moe       # only these groups

bench.json is a flat {"group.figure": value} map so figures can be compared across commits.
Groups: model (training and sampling tokens/s), moe (MoE layer vs dense and vs a loop),
fp8 (loss gap of each recipe against full precision, CPU step time), rewards (verdicts/s and
p99 latency), grpo (one GRPO step split into its phases). All at the cpu preset's shapes on the
machine it runs on; the CPU may be shared, so treat small differences as noise.
"""
import json
import os
import statistics
import sys
import time

import torch

import data
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))


def cpu_preset_configs():
    """The cpu preset's model config and tokenizer (trained exactly as train.py does)."""
    sys.argv = sys.argv[:1]
    import train
    args = train.parse_args([])
    _, cfgs = train.build_configs(args, "cpu")
    corpus = data.build_corpus(cfgs["data"])
    enc = data.build_tokenizer(cfgs["data"], corpus)
    cfgs["model"].vocab_size = enc.n_vocab
    return cfgs, enc, corpus


def timed(fn, reps=3, warmup=1):
    ts = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ----------------------------------------------------------------------------------------------

def bench_model():
    cfgs, enc, corpus = cpu_preset_configs()
    torch.manual_seed(0)
    mc, tc = cfgs["model"], cfgs["train"]
    model = GPT(mc)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.tensor(data.encode_docs(enc, corpus[:3000]))
    x = torch.stack([ids[i * mc.block_size:(i + 1) * mc.block_size] for i in range(tc.batch_size)])

    def train_step():
        _, loss = model(x, x.roll(-1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    t_train = timed(train_step)

    problems = data.heldout_problems(cfgs["data"])[:16]
    prompts = [enc.encode_ordinary(p.prompt) for p in problems]
    model.eval()
    res = {"model.train_tok_s": tc.batch_size * mc.block_size / t_train}
    for name, cache in (("sample_tok_s", True), ("sample_tok_s_nocache", False)):
        n = []
        t = timed(lambda: n.append(sum(map(len, model.generate(prompts, 96, -1 % mc.vocab_size, temperature=1.0,
                                                                  use_cache=cache)))), reps=1)
        res[f"model.{name}"] = n[-1] / t
    return res


def bench_moe():
    sys.path.insert(0, ROOT)
    from _bench_moe import bench_moe as run
    cfgs, _, _ = cpu_preset_configs()
    m, t = cfgs["model"], cfgs["train"]
    return run((t.batch_size, m.block_size, m.n_embd, m.n_routed_experts, m.n_experts_per_tok,
                m.n_shared_experts, m.moe_hidden))


def bench_fp8():
    from _bench_fp8 import bench_fp8_step_times
    return bench_fp8_step_times()


def bench_rewards():
    from _bench_rewards import bench_rewards as run
    return run()


GROUPS = {"model": bench_model, "moe": bench_moe, "fp8": bench_fp8, "rewards": bench_rewards}


def main():
    names = sys.argv[1:] or list(GROUPS)
    bad = [n for n in names if n not in GROUPS]
    if bad:
        print(f"bench.py: error: unknown group {bad[0]!r} (valid groups: {', '.join(GROUPS)})", file=sys.stderr)
        sys.exit(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    path = os.path.join(ROOT, "bench.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for name in names:
        t0 = time.time()
        figs = GROUPS[name]()
        results.update(figs)
        for k, v in figs.items():
            print(f"{k:<36} {v:>14.4g}")
        print(f"({name}: {time.time() - t0:.0f}s)")
        with open(path, "w") as f:  # written after every group, so a long run loses nothing
            json.dump(dict(sorted(results.items())), f, indent=1)


if __name__ == "__main__":
    main()
