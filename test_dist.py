"""Tests of dist.py: N ranks give one rank's step, the MoE biases stay equal, a non-finite step
is skipped. Two CPU processes talk over gloo; run with `python -m pytest -q test_dist.py`."""
import contextlib
import dataclasses
import signal
import socket

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

import config
import data
import dist
import evaluate
import grpo
import loops
import moe
import train
from conftest import fake_run, grpo_stats
from model import GPT, GPTConfig

CFG = GPTConfig(vocab_size=300, block_size=160, n_layer=2, n_embd=32, n_head=2, n_kv_head=1, mlp_hidden=64,
                n_routed_experts=4, n_experts_per_tok=2, moe_hidden=16, bias_update_gamma=0.01)
DATA = data.DataConfig(n_docs=300, bpe_docs=100, vocab_size=300)
RL = grpo.RLConfig(prompts_per_step=4, group_size=2, max_new_tokens=12, beta=0.0, loss_agg="token-mean",
                   micro_batch=3)  # token-mean: the normaliser that must be all-reduced


def fresh_model():
    torch.manual_seed(0)
    return GPT(CFG)


def pretrain_steps(model, n_steps):
    """n_steps of the supervised loop on windows of random tokens, 8 rows a step in 2 micro-batches."""
    tc = config.TrainConfig(batch_size=4, grad_accum=2, log_every=1, ckpt_every=100)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # (Adam's first step, g / |g|, would magnify float noise)
    moe.attach_bias_update(opt, model)
    ids = torch.randint(CFG.vocab_size, (5000,), generator=torch.Generator().manual_seed(1))
    batch_at = loops.corpus_batches(ids, tc, 64, "cpu")
    loops.train_sft(dist.wrap(model), opt, batch_at, n_steps, lambda s: 1e-2, tc, fake_run(), contextlib.nullcontext(),
                    save=lambda step: None)


def reward(texts, problems):
    r = [len(t) % 3 / 2 for t in texts]  # varied, deterministic in the text
    return {"reward": r, "accuracy": r, "format": r, "lang": r}


def grpo_once(model, enc):
    problems = data.rl_problems(DATA, RL.prompts_per_step, seed=3)[dist.my_share(RL.prompts_per_step)]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return grpo.grpo_step(dist.wrap(model), None, opt, enc, problems, RL, reward,
                          torch.Generator().manual_seed(5), grad_clip=0.0)


def idle_expert_step():
    """One pretrain step with the loop dispatch and an expert no token reaches: its slice of the
    stacked expert weights gets a zero gradient, so DDP finds no unused parameter to wait for."""
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CFG, moe_dispatch="loop"))
    for m in moe._moe_layers(model):
        m.expert_bias[-1] = -1e4  # never selected
    pretrain_steps(model, 1)
    return model.state_dict()


def tokenizer():
    return data.build_tokenizer(DATA, data.build_corpus(DATA))


def grpo_loop_calls(n_steps=2):
    """train_grpo around a stand-in grpo_step: per step, the problems this rank rolled out and
    what its refill drew."""
    calls = []

    def stand_in(model, ref, opt, enc, problems, rc, score_fn, gen, refill, grad_clip):
        calls.append((problems, refill(1)))
        return grpo_stats()
    real, grpo.grpo_step = grpo.grpo_step, stand_in
    try:
        model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=0))
        prompts_at = lambda step, salt=0: [f"{step}/{salt}/{i}" for i in range(4)]
        loops.train_grpo(model, None, torch.optim.SGD(model.parameters(), lr=0.1), None, prompts_at, None,
                         grpo.RLConfig(prompts_per_step=4), config.TrainConfig(), n_steps, fake_run(),
                         contextlib.nullcontext(), dict, lambda step: None)
    finally:
        grpo.grpo_step = real
    return calls


def _rank_main(rank, world, init_file, out):
    td.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = fresh_model()
        pretrain_steps(model, 1)
        first = {k: v.clone() for k, v in model.state_dict().items()}
        model = fresh_model()
        pretrain_steps(model, 3)
        biases = torch.stack([m.expert_bias for m in moe._moe_layers(model)])
        model = fresh_model()
        enc = tokenizer()
        st = grpo_once(model, enc)
        grpo_state = model.state_dict()
        answers = evaluate.respond(model, enc, data.rl_problems(DATA, 3, seed=4), 8)  # 3 over 2 ranks: uneven
        idle = idle_expert_step()
        loop = grpo_loop_calls()
        try:
            dist.my_share(3)  # a training batch of 3 over 2 ranks
            uneven = "split"
        except ValueError:
            uneven = "refused"
        wrapped = dist.wrap(fresh_model())
        compiled = type("Compiled", (), {"_orig_mod": wrapped})()  # what torch.compile hands no_sync
        syncs = []
        for m, last in ((wrapped, False), (wrapped, True), (compiled, False)):
            with dist.no_sync(m, last):
                syncs.append(wrapped.require_backward_grad_sync)
        plumbing = {"main": dist.is_main(), "mean": dist.mean_stats({"x": float(rank), "name": "r"}), "uneven": uneven,
                    "broadcast_buffers": wrapped.broadcast_buffers, "syncs": syncs}
        torch.save({"first": first, "biases": biases, "grpo": grpo_state, "reward": st["reward"], "answers": answers,
                    "gathered": dist.gather([rank] * (rank + 1)), "idle": idle, "loop": loop,
                    "plumbing": plumbing}, f"{out}/rank{rank}.pt")
    finally:
        td.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_take_one_ranks_pretrain_step(two_ranks):
    model = fresh_model()
    pretrain_steps(model, 1)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(two_ranks[0]["first"][k], v, rtol=1e-5, atol=1e-6, msg=k)
        assert torch.equal(two_ranks[0]["first"][k], two_ranks[1]["first"][k]), k


def test_moe_biases_stay_identical_across_ranks(two_ranks):
    b0, b1 = two_ranks[0]["biases"], two_ranks[1]["biases"]
    assert b0.abs().sum() > 0 and torch.equal(b0, b1)
    model = fresh_model()
    pretrain_steps(model, 3)  # one rank, the whole batch: the same token counts, so the same biases
    assert torch.equal(torch.stack([m.expert_bias for m in moe._moe_layers(model)]), b0)


def test_two_ranks_take_one_ranks_grpo_step(two_ranks):
    model = fresh_model()
    st = grpo_once(model, tokenizer())
    assert st["reward"] == pytest.approx(two_ranks[0]["reward"])  # the same rollouts, split in two
    moved = False
    for k, v in model.state_dict().items():
        torch.testing.assert_close(two_ranks[0]["grpo"][k], v, rtol=1e-5, atol=1e-6, msg=k)
        moved |= not torch.equal(v, fresh_model().state_dict()[k])
    assert moved


def test_evaluation_is_split_over_ranks_and_gathered_in_order(two_ranks):
    assert two_ranks[0]["gathered"] == two_ranks[1]["gathered"] == [0, 1, 1]
    model = fresh_model()
    grpo_once(model, tokenizer())  # the ranks answered with the GRPO-stepped model
    assert two_ranks[0]["answers"] == two_ranks[1]["answers"] == evaluate.respond(
        model, tokenizer(), data.rl_problems(DATA, 3, seed=4), 8)


def test_each_rank_rolls_out_its_share_of_the_prompts_and_refills_from_its_own_draw(two_ranks):
    """The GRPO loop on two ranks: rank r takes the r-th half of the step's prompts (whole
    groups), and a refill (DAPO's dynamic sampling) draws with salt 1 + r, so the two ranks never
    refill with the same prompts."""
    for step in range(2):
        (mine0, refill0), (mine1, refill1) = two_ranks[0]["loop"][step], two_ranks[1]["loop"][step]
        assert mine0 == [f"{step}/0/0", f"{step}/0/1"] and mine1 == [f"{step}/0/2", f"{step}/0/3"]
        assert refill0 == [f"{step}/1/0"] and refill1 == [f"{step}/2/0"]


def test_rank_0_is_the_main_stats_are_averaged_and_a_training_batch_splits_evenly_or_not_at_all(two_ranks):
    """Only rank 0 writes files and prints; mean_stats averages every number over the ranks and
    keeps the rest; a training batch that cannot split evenly is refused (DDP averages equal shares)."""
    assert [r["plumbing"]["main"] for r in two_ranks] == [True, False]
    assert all(r["plumbing"]["mean"] == {"x": 0.5, "name": "r"} for r in two_ranks)
    assert all(r["plumbing"]["uneven"] == "refused" for r in two_ranks)
    # DDP without a buffer broadcast (each rank moves its MoE biases alike); its gradient all-reduce
    # skipped on all but a step's last micro-batch, also through a compiled model's _orig_mod
    assert all(r["plumbing"]["broadcast_buffers"] is False for r in two_ranks)
    assert all(r["plumbing"]["syncs"] == [False, True, False] for r in two_ranks)


def test_an_expert_that_no_token_reaches_does_not_stall_ddp(two_ranks):
    one = idle_expert_step()
    for k, v in one.items():
        torch.testing.assert_close(two_ranks[0]["idle"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_a_non_finite_step_moves_nothing():
    model = fresh_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    x = torch.randint(CFG.vocab_size, (2, 16))
    model(x, x)[1].backward()
    assert dist.clip_and_step(model, opt, 1.0)[1]  # a finite step, so AdamW has moments
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in opt.state[model.tok_emb.weight].items()}
    model(x, x)[1].backward()
    model.tok_emb.weight.grad[0, 0] = float("nan")
    norm, stepped = dist.clip_and_step(model, opt, 1.0)
    assert not stepped and norm != norm
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(moments[k], v) for k, v in opt.state[model.tok_emb.weight].items())
    assert all(p.grad is None for p in model.parameters())  # not carried into the next step


def test_non_finite_steps_are_counted_and_stop_the_run_with_a_checkpoint():
    model = fresh_model()
    rows, saved = [], []
    run = fake_run()
    run.log = rows.append
    tc = config.TrainConfig(batch_size=2, log_every=1, ckpt_every=100, max_bad_steps=3)
    opt = loops.make_optimizer(model, 1e-2, tc, "cpu")
    ids = torch.randint(CFG.vocab_size, (500,), generator=torch.Generator().manual_seed(1))
    batch_at = loops.corpus_batches(ids, tc, 16, "cpu")
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")  # every loss is now NaN
    with pytest.raises(SystemExit) as stop:
        loops.train_sft(model, opt, batch_at, 10, lambda s: 1e-2, tc, run, contextlib.nullcontext(), save=saved.append)
    assert stop.value.code == 1
    assert [r["skipped"] for r in rows] == [1, 1, 1] and saved == [3]


def test_one_bad_step_is_skipped_and_the_run_goes_on(monkeypatch):
    model = fresh_model()
    rows, calls = [], []
    run = fake_run()
    run.log = rows.append
    real = dist.clip_and_step

    def flaky(m, opt, clip):  # the second step's gradients are poisoned
        calls.append(1)
        if len(calls) == 2:
            next(m.parameters()).grad.fill_(float("nan"))
        return real(m, opt, clip)
    monkeypatch.setattr(dist, "clip_and_step", flaky)
    tc = config.TrainConfig(batch_size=2, log_every=1, ckpt_every=100, max_bad_steps=2)
    opt = loops.make_optimizer(model, 1e-2, tc, "cpu")
    batch_at = loops.corpus_batches(torch.randint(CFG.vocab_size, (500,)), tc, 16, "cpu")
    loops.train_sft(model, opt, batch_at, 4, lambda s: 1e-2, tc, run, contextlib.nullcontext(), save=lambda s: None)
    assert [r["skipped"] for r in rows] == [0, 1, 0, 0]


def test_an_sft_step_is_the_token_mean_over_its_micro_batches(monkeypatch):
    """grad_accum 2 over examples of different lengths: the step's gradient is that of one
    mean over every target token of the step, not a mean of the micro-batches' means."""
    examples = [([1, 2, 3], [4, 5, 6, 7, 8, 9, 10]), ([1, 2], [4, 0]), ([5, 6, 7], [8, 9, 0, 3]), ([2], [0, 1])]
    tc = config.TrainConfig(batch_size=2, grad_accum=2, log_every=1, ckpt_every=100)  # (a skipped step: 1 of 5)
    batch_at, _ = loops.example_batches(examples, 2, 2, 0, 99, "cpu")
    dense = lambda: torch.manual_seed(0) and GPT(dataclasses.replace(CFG, n_routed_experts=0))  # no per-batch aux loss
    model, grads = dense(), {}

    def capture(m, opt, clip):
        grads.update({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
        return 0.0, False
    monkeypatch.setattr(dist, "clip_and_step", capture)
    loops.train_sft(model, torch.optim.SGD(model.parameters(), lr=0.0), batch_at, 1, lambda s: 0.0,
                    tc, fake_run(), contextlib.nullcontext(),
                    save=lambda s: None)
    (x1, y1), (x2, y2) = batch_at(0, 0), batch_at(0, 1)
    L = max(x1.shape[1], x2.shape[1])
    pad = lambda t, v: torch.nn.functional.pad(t, (0, L - t.shape[1]), value=v)
    reference = dense()
    reference(torch.cat([pad(x1, 99), pad(x2, 99)]), torch.cat([pad(y1, -1), pad(y2, -1)]))[1].backward()
    assert (y1 >= 0).sum() != (y2 >= 0).sum() and (y1 == 0).any()  # unequal micro-batches, and a target 0
    for n, p in reference.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_sft1_on_your_data_needs_responses(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(f'{{"prompt": "What is {i} + 1?", "answer": "{i + 1}"}}\n' for i in range(6)))
    args = train.parse_args(["--data", str(path)])
    train.read_files(args, data.DataConfig(), ["pretrain", "zero"])  # RL needs no responses
    assert len(args.own.train) + len(args.own.heldout) == 6
    with pytest.raises(SystemExit) as e:
        train.read_files(args, data.DataConfig(), ["pretrain", "sft1"])
    assert e.value.code == 2 and "sft1 needs worked responses" in capsys.readouterr().err


def test_shares_split_evenly_and_gather_inverts_them():
    assert dist.my_share(6) == slice(0, 6) and dist.gather([1, 2]) == [1, 2]  # one process: everything
    assert dist.total(2.5) == 2.5 and dist.stop_requested() == 0


def test_a_signal_asks_for_a_stop_and_a_second_one_stops_now(monkeypatch, capfd):
    """The first SIGTERM/SIGINT only sets the flag the loops read after a step; the second stops at once,
    SIGTERM as exit status 128 + 15, ^C as KeyboardInterrupt. catch_signals installs the handler for both."""
    monkeypatch.setitem(dist._STOP, "signal", 0)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        dist.catch_signals()
        assert all(signal.getsignal(s) is dist._request_stop for s in saved)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    dist._request_stop(signal.SIGTERM, None)
    assert dist.stop_requested() == signal.SIGTERM and "SIGTERM: stopping after this step" in capfd.readouterr().err
    with pytest.raises(SystemExit) as e:
        dist._request_stop(signal.SIGTERM, None)
    assert e.value.code == 128 + signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        dist._request_stop(signal.SIGINT, None)
    monkeypatch.setitem(dist._STOP, "signal", 0)
    dist._request_stop(signal.SIGINT, None)  # a first ^C: a flag, not an exception
    assert dist.stop_requested() == signal.SIGINT
    err = dist.Stopped(signal.SIGINT, 7)
    assert (err.signum, err.step, str(err)) == (signal.SIGINT, 7, "stopped by SIGINT after step 7")


def test_init_joins_a_torchrun_group_and_is_a_no_op_without_one(monkeypatch, capsys):
    """Without torchrun's RANK, init changes nothing; with it (here a group of one), it joins over gloo on
    the CPU and says so; a second call, already in the group, returns at once."""
    monkeypatch.delenv("RANK", raising=False)
    assert dist.init("cpu") == "cpu" and not td.is_initialized() and dist.world() == 1
    dist.barrier()  # one process: nothing to wait for, and no group to ask
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(k, v)
    try:
        assert dist.init("cpu") == "cpu" and td.is_initialized() and td.get_backend() == "gloo"
        assert dist.init("cpu") == "cpu"  # already joined
        assert capsys.readouterr().out.count("data parallel: 1 processes (gloo)") == 1
        assert dist.total(2.5) == 2.5 and dist.is_main()
    finally:
        dist.close()
    assert not td.is_initialized()
