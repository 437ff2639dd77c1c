"""
Tests of loops.py, the training loops every stage runs: the supervised loop's batches, loss,
logged figures and schedule, the learning-rate schedule, the GRPO loop's steps, the clip both
loops share, and the compiled pretrain step.

    python -m pytest test_loops.py -q
"""
import contextlib
import types

import pytest
import torch

import config
import data
import dist
import grpo
import loops
import train
from conftest import fake_run, grpo_stats
from model import GPT, GPTConfig


def test_sft_loss_is_taken_on_response_tokens_only():
    """With a model that cannot look back (no blocks: position t sees token t alone), changing
    a prompt token other than the last changes nothing the loss sees; the last prompt token
    (which predicts the first response token) and response tokens do change it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=0))
    prompt, response = [3, 4, 5, 6], [7, 8, 49]

    def loss(p, r):
        batch_at, _ = loops.example_batches([(p, r)], 1, 1, 0, 49, "cpu")
        x, y = batch_at(0, 0)
        assert (y[0, :len(p) - 1] == -1).all()
        return model(x, y)[1].item()
    ref = loss(prompt, response)
    assert loss([9, 4, 5, 6], response) == ref and loss([3, 9, 9, 6], response) == ref
    assert loss([3, 4, 5, 9], response) != ref and loss(prompt, [7, 9, 49]) != ref


def test_sft_batches_cover_each_epoch_once():
    examples = [([1, 2], [10 + i, 99]) for i in range(10)]
    for accum in (1, 2):
        batch_at, per_epoch = loops.example_batches(examples, 3, accum, 0, 99, "cpu")
        assert per_epoch == (4 if accum == 1 else 2)
        for epoch in range(2):
            seen = [int(t) for s in range(epoch * per_epoch, (epoch + 1) * per_epoch) for m in range(accum)
                    for t in batch_at(s, m)[1][:, 1]]
            assert len(set(seen[:10])) == 10 and seen[10:] == seen[:2]  # the epoch's order, then filled up from it
            assert set(seen) == {10 + i for i in range(10)}
    assert batch_at(0, 0)[1].tolist() != batch_at(per_epoch, 0)[1].tolist()  # a fresh order each epoch
    batch_at, _ = loops.example_batches([([1, 2], [3]), ([1, 2, 3], [4, 5, 6])], 2, 1, 0, 99, "cpu")
    assert batch_at(0, 0)[0].shape == (2, 5)  # padded to the longest example, less its last token: no more


def test_pretrain_batches_are_windows_of_the_stream_a_function_of_the_step():
    ids = torch.arange(100)
    tc = config.TrainConfig(batch_size=4, train_seed=3)
    batch_at = loops.corpus_batches(ids, tc, 16, "cpu")
    starts = set()
    for step in range(300):
        x, y = batch_at(step, step % 2)
        assert x.shape == y.shape == (4, 16) and torch.equal(y, x + 1)  # y: the next token of each position
        assert torch.equal(x, x[:, :1] + torch.arange(16))  # a contiguous window
        starts |= set(x[:, 0].tolist())
    assert starts == set(range(100 - 16 - 1))  # every start whose window fits (the very last one is never drawn)
    assert torch.equal(batch_at(7, 1)[0], batch_at(7, 1)[0]) and not torch.equal(batch_at(7, 1)[0], batch_at(7, 0)[0])
    other = loops.corpus_batches(ids, config.TrainConfig(batch_size=4, train_seed=4), 16, "cpu")
    assert not torch.equal(batch_at(7, 1)[0], other(7, 1)[0])


def test_the_supervised_loop_logs_evaluates_and_saves_on_schedule(monkeypatch):
    """train_sft with the optimizer step stubbed out (the weights stay, so each step's loss can
    be recomputed here) and a clock that ticks once a step: every logged figure is exact. A row
    every log_every steps and at the end, with the step's token-mean loss, its learning rate,
    the targets per second and the positions trained since the last row; the held-out loss
    every eval_every steps and at the end; a checkpoint every ckpt_every steps and at the end."""
    clock = [0.0]

    def no_step(model, opt, clip):
        clock[0] += 1.0
        return 0.5, True
    monkeypatch.setattr(dist, "clip_and_step", no_step)
    monkeypatch.setattr(loops, "time", types.SimpleNamespace(time=lambda: clock[0]))
    examples = [([1, 2, 3], [4, 0, 6, 7]), ([1, 2], [4, 0]), ([5, 6, 7], [8, 9, 0, 3, 3, 3]), ([2], [0, 1]),
                ([9, 9], [7]), ([3], [5, 5, 5, 5, 5, 2]), ([4, 4, 4, 4], [6, 1])]  # 7: each step draws others
    batch_at, _ = loops.example_batches(examples, 2, 2, 0, 49, "cpu")
    tc = config.TrainConfig(batch_size=2, grad_accum=2, log_every=2, eval_every=20, ckpt_every=25)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=0))
    rows, saved, run = [], [], fake_run()
    run.log = rows.append
    res = loops.train_sft(model, torch.optim.SGD(model.parameters(), lr=0.0), batch_at, 53, lambda s: s / 100, tc, run,
                          contextlib.nullcontext(), heldout_loss=lambda: 1.5, save=saved.append)

    def step_figures(step):  # (token-mean loss, targets, positions) of one step, both micro-batches
        (x1, y1), (x2, y2) = batch_at(step, 0), batch_at(step, 1)
        n1, n2 = int((y1 >= 0).sum()), int((y2 >= 0).sum())
        with torch.no_grad():
            loss = (model(x1, y1)[1].item() * n1 + model(x2, y2)[1].item() * n2) / (n1 + n2)
        return loss, n1 + n2, x1.numel() + x2.numel()
    figs = [step_figures(s) for s in range(53)]
    assert [r["step"] for r in rows] == list(range(2, 53, 2)) + [53]
    last = 0
    for r in rows:
        since, last = figs[last:r["step"]], r["step"]  # the steps since the row before
        assert r["loss"] == pytest.approx(figs[r["step"] - 1][0], rel=1e-5) and r["lr"] == (r["step"] - 1) / 100
        assert r["tok_s"] == pytest.approx(sum(f[1] for f in since) / len(since))  # one tick per step
        assert r["tokens_trained"] == sum(f[2] for f in since) and r["skipped"] == 0 and r["grad_norm"] == 0.5
    assert [r["step"] for r in rows if "heldout_loss" in r] == [20, 40, 53] and saved == [25, 50, 53]
    assert any(f[1] != f[2] for f in figs)  # padding and prompts: targets are not positions
    assert len({round(f[0], 4) for f in figs}) > 10  # the steps' losses differ
    assert res["first_loss"] == pytest.approx(figs[0][0], rel=1e-5)
    assert res["final_loss"] == pytest.approx(figs[-1][0], rel=1e-5)
    assert res["final_loss_avg50"] == pytest.approx(sum(f[0] for f in figs[-50:]) / 50, rel=1e-5)


def test_the_learning_rate_warms_up_then_decays_to_its_floor():
    lr = lambda step, min_frac=0.1: loops.lr_at(step, 2.0, 4, 104, min_frac)
    assert [lr(s) for s in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]  # linear to the peak, which the decay starts at
    assert lr(54) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5)) and lr(104) == lr(500) == pytest.approx(0.2)
    assert lr(30) > lr(31) > lr(54) > lr(80) > lr(103) > lr(104)  # cosine: down all the way, floor at the end
    assert {lr(s, 1.0) for s in range(4, 200)} == {2.0}  # min_frac 1: constant after warmup (the GRPO loop)
    assert loops.lr_at(0, 1.0, 0, 10, 0.0) == 1.0 and loops.lr_at(3, 1.0, 3, 3, 0.0) == 1.0  # no warmup; no decay left
    assert loops.lr_at(4, 1.0, 3, 4, 0.0) == 0.0  # a decay of one step ends at the floor


def test_the_grpo_loop_schedules_its_steps(monkeypatch):
    """train_grpo around a stand-in grpo_step: the learning rate warms up and then stays, each
    step samples from its own generator (a function of rl_seed and the step, so a resumed run
    draws what an uninterrupted one does), prompts come from prompts_at(step) and the refill
    from a salted draw, the held-out evaluation runs every rl_eval_every steps but not after the
    last (the stage's full_eval does), the reference follows the policy every ref_sync_every
    steps, a checkpoint every rl_ckpt_every steps and at the end, and skipped steps stop the run."""
    calls, saved = [], []

    def grpo_step(model, ref, opt, enc, problems, rc, score_fn, gen, refill, grad_clip):
        calls.append({"lr": opt.param_groups[0]["lr"], "draw": torch.rand(1, generator=gen).item(),
                      "problems": problems, "refill": refill(2), "clip": grad_clip})
        with torch.no_grad():
            model.lm_head.weight.add_(1.0)  # the policy moves by 1 each step
        return grpo_stats(skipped=skip)
    monkeypatch.setattr(grpo, "grpo_step", grpo_step)
    rc = grpo.RLConfig(prompts_per_step=3, rl_lr=0.1, rl_warmup=2, rl_eval_every=3, ref_sync_every=4,
                       rl_ckpt_every=5, rl_seed=7)
    tc = config.TrainConfig(grad_clip=0.7, max_bad_steps=2)
    prompts_at = lambda step, salt=0: [f"{step}/{salt}/{i}" for i in range(rc.prompts_per_step)]

    def loop(start, n_steps=6):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=0))
        ref = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=0))
        w0 = model.lm_head.weight.detach().clone()
        rows, run = [], fake_run(start)
        run.log = rows.append
        calls.clear(), saved.clear()
        loops.train_grpo(model, ref, torch.optim.SGD(model.parameters(), lr=99.0), None, prompts_at, None, rc, tc,
                         n_steps, run, contextlib.nullcontext(), lambda: {"accuracy": 0.25}, saved.append)
        return rows, list(saved), ref.lm_head.weight.detach(), w0, list(calls)

    skip = 0
    rows, saves, ref_w, w0, whole = loop(0)
    assert [c["lr"] for c in whole] == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.1])
    draw = lambda s: torch.rand(1, generator=torch.Generator().manual_seed(7 * 1_000_003 + s)).item()
    assert [c["draw"] for c in whole] == [draw(s) for s in range(6)]
    assert [c["problems"] for c in whole] == [prompts_at(s) for s in range(6)]
    assert [c["refill"] for c in whole] == [prompts_at(s, salt=1)[:2] for s in range(6)] and whole[0]["clip"] == 0.7
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all("example" not in r for r in rows)
    assert [r.get("heldout_accuracy") for r in rows] == [None, None, 0.25, None, None, None]
    assert saves == [5, 6] and torch.equal(ref_w, w0 + 1 + 1 + 1 + 1)  # the policy after step 4: synced then only
    rows, saves, _, _, resumed = loop(4)
    assert [r["step"] for r in rows] == [5, 6] and resumed == whole[4:] and saves == [5, 6]
    skip = 1  # every step skipped: max_bad_steps in a row stop the run, with a checkpoint
    with pytest.raises(SystemExit) as stop:
        loop(0)
    assert stop.value.code == 1 and len(calls) == 2 and saved == [2]


def test_both_loops_clip_at_the_configured_norm(monkeypatch):
    seen = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: seen.append(max_norm) or real(params, max_norm))
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_embd=16, n_head=2, n_kv_head=1, mlp_hidden=32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for clip in (0.3, 0.0):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
        dist.clip_and_step(model, opt, clip)
    assert seen == [0.3, float("inf")]
    cfg = data.DataConfig(n_docs=300, bpe_docs=100, vocab_size=300)
    enc = data.build_tokenizer(cfg, data.build_corpus(cfg))
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=128, n_layer=1, n_embd=16, n_head=2, n_kv_head=1,
                          mlp_hidden=32))
    rc = grpo.RLConfig(prompts_per_step=1, group_size=2, max_new_tokens=4, beta=0.0)
    score = lambda t, p: {k: [0.0, 1.0] for k in ("reward", "accuracy", "format", "lang")}
    grpo.grpo_step(model, None, torch.optim.SGD(model.parameters(), lr=0.1), enc, data.rl_problems(cfg, 1, 0), rc,
                   score, torch.Generator().manual_seed(0), grad_clip=0.7)
    grpo.grpo_step(model, None, torch.optim.SGD(model.parameters(), lr=0.1), enc, data.rl_problems(cfg, 1, 0), rc,
                   score, torch.Generator().manual_seed(0), grad_clip=0.0)
    assert seen[-2:] == [0.7, float("inf")]


def has_cpp_compiler():
    """Whether inductor finds the C++ compiler it builds CPU kernels with. Where it does, a step
    that falls back to eager is a bug of ours (an op the compiler cannot trace), not the machine."""
    try:
        from torch._inductor import cpp_builder
        return bool(cpp_builder.get_cpp_compiler())
    except Exception:  # no compiler found (or a torch without this helper)
        return False


def test_compiled_training_step_equals_eager():
    """loops.compiled: the compiled step computes the eager step's loss and gradients (another
    float order), and the compiling step leaves no trace (no gradients, no expert counts)."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_kv_head=1, n_embd=16, mlp_hidden=32,
                    n_routed_experts=4, moe_hidden=8, n_dense_layers=1, seq_aux_alpha=0.01)
    model = GPT(cfg).train()
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    y[0, :3] = -1
    _, want = model(x, y)
    want.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    moe_layer = model.blocks[1].mlp
    counts = moe_layer.tokens_per_expert.clone()
    fast = loops.compiled(model, x, y, contextlib.nullcontext())
    if fast is model and not has_cpp_compiler():
        pytest.skip("torch.compile needs a C++ compiler on a CPU, and this machine has none")
    assert fast is not model, "the step did not compile (loops.compiled printed why), though a C++ compiler is here"
    assert all(p.grad is None for p in model.parameters()) and moe_layer.tokens_per_expert.sum() == 0
    _, got = fast(x, y)
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert torch.equal(moe_layer.tokens_per_expert, counts)  # one forward's counts, as eager


def test_compile_falls_back_to_eager_with_one_line(monkeypatch, capsys):
    def broken(model):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return fail
    monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=16,
                          mlp_hidden=32, n_routed_experts=4, moe_hidden=8, n_dense_layers=0))
    x = torch.randint(0, 64, (2, 16))
    model(x, x)[1].backward()  # gradients and counts that the fallback must clear
    assert loops.compiled(model, x, x, contextlib.nullcontext()) is model
    err = capsys.readouterr().err
    assert err.strip() == "compile: off (RuntimeError: no C++ compiler found); training runs eager"
    assert all(p.grad is None for p in model.parameters())
    assert model.blocks[0].mlp.tokens_per_expert.sum() == 0


def test_the_cpu_preset_compiles_its_pretrain_and_tiny_does_not():
    args = train.parse_args([])
    assert train.build_configs(args, "cpu")[1]["train"].compile
    assert not train.build_configs(train.parse_args(["--preset", "tiny"]), "cpu")[1]["train"].compile


def test_the_compiled_graph_leaves_the_embedding_to_eager():
    """model.embed stays out of torch.compile's graphs, so the embedding's backward is eager's
    (a fixed order of additions) and a compiled pretrain gives the same weights on every run."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=16,
                          mlp_hidden=32))
    x = torch.randint(0, 64, (2, 16))
    torch.compile(model, backend=capture)(x, x)
    assert graphs and all("embedding" not in code and "tok_emb" not in code for code in graphs)
    assert any("lm_head" in code or "linear" in code for code in graphs)  # the rest is compiled
