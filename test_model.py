"""
Tests of model.py: generation with the KV cache against the uncached forward, sampling filters,
and that the model can learn.

    python -m pytest test_model.py -q
"""
import math

import pytest
import torch

from model import GPT, GPTConfig, KVCache, sample_token


def tiny_gpt(moe=True, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, mlp_hidden=64,
                    n_routed_experts=4 if moe else 0, moe_hidden=16, n_dense_layers=1, init_std=0.2)
    return GPT(cfg).eval()


def test_cached_and_uncached_generation_agree():
    model = tiny_gpt()
    prompts = [[1, 2, 3, 4, 5, 6], [7], [9, 9, 9]]
    cached = model.generate(prompts, 30, eot=96, temperature=0)
    uncached = model.generate(prompts, 30, eot=96, temperature=0, use_cache=False)
    assert cached == uncached
    # a row's continuation does not depend on the other rows' lengths (padding is invisible)
    for p, c in zip(prompts, cached):
        assert model.generate([p], 30, eot=96, temperature=0) == [c]


def test_banned_tokens_are_never_generated():
    """generate(ban=...) never emits a banned token, greedy or sampled, cached or not; banning a
    token that greedy decoding never picks changes nothing (evaluate's no-check probe)."""
    model = tiny_gpt()
    prompts = [[1, 2, 3, 4, 5, 6], [7], [9, 9, 9]]
    free = model.generate(prompts, 30, eot=96, temperature=0)
    ban = sorted({row[0] for row in free} | {free[0][1]})  # the first tokens the free rows chose
    for use_cache in (True, False):
        greedy = model.generate(prompts, 30, eot=96, temperature=0, use_cache=use_cache, ban=ban)
        sampled = model.generate(prompts, 30, eot=96, temperature=1.0, use_cache=use_cache, ban=ban,
                                 generator=torch.Generator().manual_seed(0))
        assert not any(t in ban for row in greedy + sampled for t in row)
    unused = next(t for t in range(96) if all(t not in row for row in free))
    assert model.generate(prompts, 30, eot=96, temperature=0, ban=[unused]) == free


def test_cached_logits_match_full_forward():
    model = tiny_gpt()
    idx = torch.randint(0, 96, (2, 20))
    full, _ = model(idx)
    caches = [KVCache(2, 2, 20, 8, "cpu", torch.float32) for _ in range(2)]
    outs = []
    for t in range(20):
        mask = torch.ones(2, 1, 1, t + 1, dtype=torch.bool)
        logits, _ = model(idx[:, t:t + 1], pos=torch.full((2, 1), t), mask=mask, caches=caches)
        outs.append(logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-4)


def test_generate_stops_at_eot_and_sampling_filters():
    model = tiny_gpt()
    out = model.generate([[1, 2]], 40, eot=96, temperature=0)[0]
    with torch.no_grad():
        model.lm_head.weight[96] += 50.0  # (tied) eot now dominates every position
    stop = model.generate([[1, 2], [3]], 40, eot=96, temperature=1.0)
    assert all(s[-1] == 96 and s.count(96) == 1 for s in stop)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    edges = torch.tensor([0.0, 1e-9, 0.5, 1 - 1e-7])  # u = 0 and u just below 1 included
    assert {int(sample_token(logits, 1.0, 1, None, u[None])) for u in edges} == {3}
    assert {int(sample_token(logits, 1.0, None, 0.7, u[None])) for u in edges} == {2, 3}  # p: .03 .09 .24 .64
    assert len(out) > 0


def test_sampling_draws_each_token_at_its_probability():
    logits = torch.tensor([0.0, 1.0, 2.0, -30.0]).repeat(20000, 1)  # (N, 4); token 3 has p ~ 1e-14
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(sample_token(logits, 1.0, None, None, u), minlength=4).float()
    p = logits[0].softmax(-1)
    assert counts[3] == 0
    assert torch.allclose(counts[:3] / 20000, p[:3], atol=0.01)  # 3 sigma is about 0.01
    hot = torch.bincount(sample_token(logits, 0.5, None, None, u), minlength=4).float() / 20000
    assert torch.allclose(hot[:3], (logits[0] / 0.5).softmax(-1)[:3], atol=0.01)  # the temperature


def test_a_row_samples_the_same_however_the_batch_is_split():
    """generate(rows=...): rows 2-3 of a batch of 4 sample what they sample in the whole batch."""
    model = tiny_gpt()
    prompts = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    whole = model.generate(prompts, 12, eot=96, temperature=1.0, generator=torch.Generator().manual_seed(3))
    half = model.generate(prompts[2:], 12, eot=96, temperature=1.0, generator=torch.Generator().manual_seed(3),
                          rows=(2, 4))
    other = model.generate(prompts[2:], 12, eot=96, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert half == whole[2:] and other != whole[2:]


def test_training_reduces_loss():
    model = tiny_gpt(seed=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 96, (4, 32))
    losses = []
    for _ in range(30):
        _, loss = model(x, x.roll(-1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_finished_rows_leave_the_batch_and_the_others_go_on_as_alone():
    """generate drops finished rows from the decode batch (and their caches): every row still
    samples what it samples alone, cached or not."""
    model = tiny_gpt()
    with torch.no_grad():
        model.lm_head.weight[96] += 1.0  # (tied) eot likely enough that rows stop at different steps
    prompts = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11], [12, 13], [14, 15, 16], [17]] * 2
    seed = lambda: torch.Generator().manual_seed(5)
    fed = []  # rows of each forward: the prefill (8 distinct prompts), then the decode steps
    hook = model.register_forward_pre_hook(lambda m, args: fed.append(args[0].shape[0]))
    whole = model.generate(prompts, 24, eot=96, temperature=1.0, generator=seed())
    hook.remove()
    assert len({len(w) for w in whole}) >= 4 and sum(w[-1] == 96 for w in whole) >= 8
    steps = max(map(len, whole))
    alive = [sum(len(w) > t for w in whole) for t in range(1, steps)]  # rows that still decode at step t
    assert fed[0] == 8 and len(fed) == steps and all(f >= a for f, a in zip(fed[1:], alive))
    assert fed[-1] < 16 and sum(fed[1:]) < 2 * sum(alive)  # the finished leave
    for i, p in enumerate(prompts):
        assert model.generate([p], 24, eot=96, temperature=1.0, generator=seed(), rows=(i, len(prompts))) == [whole[i]]
    assert model.generate(prompts, 24, eot=96, temperature=1.0, generator=seed(), use_cache=False) == whole


def test_greedy_generation_matches_the_plain_forward():
    """generate (left padding, masks, per-row positions, KV cache, dropped rows) against the
    plainest reference: one row at a time, the whole sequence through the causal forward, the
    argmax of the last position, until eot."""
    model = tiny_gpt()
    with torch.no_grad():
        model.lm_head.weight[96] += 0.6  # (tied) so that some rows stop early
    prompts = [[1, 2, 3, 4, 5, 6], [7], [9, 9, 9], [20, 30], [5, 4, 3, 2]]
    want = []
    for p in prompts:
        seq = list(p)
        with torch.no_grad():
            for _ in range(20):
                seq.append(int(model(torch.tensor([seq]))[0][0, -1].argmax()))
                if seq[-1] == 96:
                    break
        want.append(seq[len(p):])
    assert any(w[-1] == 96 for w in want) and any(w[-1] != 96 for w in want)
    assert model.generate(prompts, 20, eot=96, temperature=0) == want


def test_generate_fills_the_context_exactly_and_no_further():
    model = tiny_gpt()  # block_size 64
    assert len(model.generate([[1] * 54], 10, eot=96, temperature=0)[0]) <= 10
    with pytest.raises(ValueError, match="block_size"):
        model.generate([[1] * 55], 10, eot=96, temperature=0)


def test_loss_is_cross_entropy_plus_the_balance_losses():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_kv_head=1, n_embd=16, mlp_hidden=32,
                    n_routed_experts=4, moe_hidden=8, n_dense_layers=1, seq_aux_alpha=0.5)
    model = GPT(cfg).train()
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    y[0, :5] = -1  # ignored targets
    logits, loss = model(x, y)
    aux = sum(m.aux_loss for m in model.modules() if hasattr(m, "aux_loss"))
    assert aux > 0
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 97), y.view(-1), ignore_index=-1)
    torch.testing.assert_close(loss, ce + aux)


def test_a_block_is_two_pre_norm_residual_updates():
    """RMSNorm against its formula (a non-trivial gain), and a block as x + attn(norm x), then
    + mlp(norm of that)."""
    from model import Block, RMSNorm, rope_tables
    torch.manual_seed(0)
    norm = RMSNorm(4, eps=0.5)  # an eps large enough to see: mean(x^2) = 7.5
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[3.0, -4.0, 1.0, 2.0]])
    want = x / 8.0 ** 0.5 * torch.tensor([1.0, 2.0, 0.5, -1.0])
    torch.testing.assert_close(norm(x), want)
    cfg = GPTConfig(vocab_size=97, block_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=8, mlp_hidden=16)
    block = Block(cfg, 0)
    x = torch.randn(2, 5, 8)
    cos, sin = (t[None, None] for t in rope_tables(cfg, 5, "cpu"))
    with torch.no_grad():
        h = x + block.attn(block.attn_norm(x), cos, sin, None, None)
        torch.testing.assert_close(block(x, cos, sin, None, None), h + block.mlp(block.mlp_norm(h)))


def test_rope_turns_each_pair_by_its_position_times_its_frequency():
    """RoPE (RoFormer §3.4.2, in the half-split layout): at position m the pair (x_i, x_{i+D/2})
    turns by the angle m * theta^(-2i/D). D = 4 and theta = 100: frequencies 1 and 1/10."""
    from model import apply_rope, rope_tables
    cos, sin = rope_tables(GPTConfig(n_embd=8, n_head=2, rope_theta=100.0), 3, "cpu")  # (T, D/2) each
    angle = torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2]])
    torch.testing.assert_close(cos, angle.cos())
    torch.testing.assert_close(sin, angle.sin())
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).repeat(3, 1)  # (T, D): the pairs (1, 3) and (2, 4)
    y = apply_rope(x[None, None], cos[None, None], sin[None, None])[0, 0]
    for m in range(3):
        for i, (a, b) in enumerate([(1.0, 3.0), (2.0, 4.0)]):
            c, s = math.cos(angle[m, i]), math.sin(angle[m, i])
            torch.testing.assert_close(y[m, [i, i + 2]], torch.tensor([a * c - b * s, a * s + b * c]))


def test_weights_their_init_and_their_counts():
    """No biases; the state dict holds no RoPE tables or token counts (rebuilt, never saved);
    every matrix starts normal(0, init_std) and the output projections (wo, w2, the experts' w2)
    at init_std / sqrt(2 n_layer) (GPT-2); RMSNorm gains start at 1; n_params counts
    the tied embedding once and, active, K of the E routed experts; flops_per_token is 2 per
    active parameter plus 4 L C ctx; a single routed expert is still an MoE layer."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_kv_head=1, n_embd=64, mlp_hidden=128,
                    n_routed_experts=4, n_experts_per_tok=2, moe_hidden=32, n_dense_layers=1, init_std=0.1)
    model = GPT(cfg)
    assert not any("bias" in n for n, _ in model.named_parameters())
    # the state dict: the parameters, the tied head again and the MoE's routing bias; no RoPE
    # tables and no token counts (buffers rebuilt, not saved)
    assert set(model.state_dict()) - set(dict(model.named_parameters())) == {"lm_head.weight",
                                                                             "blocks.1.mlp.expert_bias"}
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            out_proj = name.endswith(("wo.weight", "w2.weight", ".w2"))
            assert p.std().item() == pytest.approx(0.05 if out_proj else 0.1, rel=0.1), name
            assert abs(p.mean().item()) < 0.01, name
    assert model.n_params() == sum(p.numel() for p in model.parameters()) == 86656
    routed = 3 * 4 * 32 * 64  # w1, w2, w3 of 4 experts (C = 64, hidden 32) in the one MoE layer
    assert model.n_params(active=True) == 86656 - routed // 2  # K = 2 of E = 4
    assert model.flops_per_token() == 2 * model.n_params(active=True)
    assert model.flops_per_token(10) == 2 * model.n_params(active=True) + 4 * 2 * 64 * 10
    from moe import MoE
    one = GPT(GPTConfig(n_layer=8, n_routed_experts=1, n_experts_per_tok=1, init_std=0.1))
    assert isinstance(one.blocks[1].mlp, MoE) and not isinstance(one.blocks[0].mlp, MoE)
    assert one.blocks[0].attn.wo.weight.std().item() == pytest.approx(0.1 / 4, rel=0.1)  # sqrt(2 * 8) = 4


def test_top_k_keeps_exactly_k_tokens():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    u = torch.linspace(0, 1 - 1e-7, 200)
    assert {int(sample_token(logits, 1.0, 2, None, v[None])) for v in u} == {2, 3}
    assert {int(sample_token(logits, 1.0, 4, None, v[None])) for v in u} == {0, 1, 2, 3}
