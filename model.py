"""
The transformer: a small DeepSeek-V3-style decoder (dense or MoE MLPs) with a KV cache.

    python model.py        # build the cpu-preset model, print its parameter count, sample a few tokens

Pieces: token embedding (tied with the output head), rotary position embeddings, RMSNorm,
grouped-query causal attention through scaled_dot_product_attention, pre-norm blocks whose MLP
is a SwiGLU or a DeepSeekMoE layer (moe.py), and `generate()`, which samples a batch of prompts
of different lengths with a KV cache: identical prompts are prefilled once, and rows that
finish leave the batch. Training and sampling run the same forward: a sampling step is a
forward over the new tokens with the cache holding the past (GRPO's scoring uses the cache the
same way, with gradients: grpo.prefill).

Legend: B batch, T time (new tokens), S cached + new positions, C channels, H heads,
Hkv key/value heads, D head dim, V vocab.

Deliberate differences from DeepSeek-V3: plain GQA attention instead of multi-head latent
attention (MLA's compression only pays at scale), and no multi-token prediction.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from moe import MoE, SwiGLU


@dataclass
class GPTConfig:
    vocab_size: int = 1024        # set from the tokenizer
    block_size: int = 256         # longest sequence the model is trained on
    n_layer: int = 4              # transformer blocks
    n_head: int = 4               # query heads
    n_kv_head: int = 2            # key/value heads (grouped-query attention)
    n_embd: int = 128             # model width C
    mlp_hidden: int = 384         # hidden width of a dense SwiGLU MLP
    rope_theta: float = 10000.0   # RoPE base
    norm_eps: float = 1e-5        # RMSNorm epsilon
    init_std: float = 0.02        # std of the normal init of weights
    # --- MoE (moe.py); n_routed_experts = 0 keeps every block dense
    n_routed_experts: int = 0     # E routed experts per MoE layer
    n_experts_per_tok: int = 2    # K experts chosen per token
    n_shared_experts: int = 1     # always-on shared experts (their hidden is n_shared * moe_hidden)
    moe_hidden: int = 128         # hidden width of one routed expert (fine-grained: small)
    n_dense_layers: int = 1       # leading blocks that stay dense, as in DeepSeek-V3
    n_expert_groups: int = 1      # group-limited routing: number of expert groups (1 = off)
    n_limited_groups: int = 1     # groups a token may route to
    route_scale: float = 1.0      # multiplies the normalized top-k weights
    score_func: str = "sigmoid"   # router affinity: 'sigmoid' (DeepSeek-V3) or 'softmax' (V2)
    bias_update_gamma: float = 0.001  # aux-loss-free bias step per optimizer step (0 freezes)
    seq_aux_alpha: float = 0.0001     # sequence-wise balance loss weight (0 disables)
    moe_dispatch: str = "grouped"     # 'grouped' (sorted grouped GEMM) or 'loop' (reference)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(cfg, length, device):
    """cos/sin of the rotation angles for positions 0..length-1: (length, D/2) each."""
    d = cfg.n_embd // cfg.n_head
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2, device=device).float() / d)
    ang = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    """x (B, H, T, D); cos/sin (B, 1, T, D/2). Rotates pairs (x[..., :D/2], x[..., D/2:])."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.h, self.hkv, self.d = cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
        self.wq = nn.Linear(cfg.n_embd, self.h * self.d, bias=False)
        self.wk = nn.Linear(cfg.n_embd, self.hkv * self.d, bias=False)
        self.wv = nn.Linear(cfg.n_embd, self.hkv * self.d, bias=False)
        self.wo = nn.Linear(self.h * self.d, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, mask, cache):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.h, self.d).transpose(1, 2)    # (B, H, T, D)
        k = self.wk(x).view(B, T, self.hkv, self.d).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.wv(x).view(B, T, self.hkv, self.d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # write the new keys/values, then attend over everything so far
            k, v = cache.update(k, v)                                # (B, Hkv, S, D)
        if mask is None:       # training: plain causal attention, the fast path
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:                  # sampling: mask (B, 1, T, S) hides padding and the future
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.h * self.d))


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps), RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        # The one place a block picks dense or MoE: DeepSeek-V3 keeps its first layers dense.
        if cfg.n_routed_experts > 0 and layer >= cfg.n_dense_layers:
            self.mlp = MoE(cfg)
        else:
            self.mlp = SwiGLU(cfg.n_embd, cfg.mlp_hidden)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class KVCache:
    """Preallocated keys/values of one layer: (B, Hkv, S_max, D). `pos` is the write position."""
    def __init__(self, B, hkv, s_max, d, device, dtype):
        self.k = torch.zeros(B, hkv, s_max, d, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.pos = 0

    def update(self, k, v):
        T = k.shape[2]
        self.k[:, :, self.pos:self.pos + T] = k
        self.v[:, :, self.pos:self.pos + T] = v
        self.pos += T
        return self.k[:, :, :self.pos], self.v[:, :, :self.pos]

    def take(self, rows):
        """Keep these batch rows (a bool mask over B, or row indices, repeats allowed): finished
        rows leave the batch; a prefilled prompt's keys and values go to each of its samples."""
        self.k, self.v = self.k[rows], self.v[rows]


@torch.compiler.disable
def embed(table, idx):
    """table(idx), kept out of torch.compile's graphs (loops.compiled): inductor writes an
    embedding's backward as a scatter-add with atomics, whose order of additions, and so the
    trained weights, change from run to run. Eager's is fixed: the same run, bit for bit."""
    return table(idx)


def distinct(seqs):
    """The rows that hold each distinct token list first, and for every row the index of its
    list among those: ([U], [B]). GRPO's G samples of a prompt share one prefill."""
    index, firsts, which = {}, [], []
    for i, s in enumerate(seqs):
        if tuple(s) not in index:
            index[tuple(s)] = len(firsts)
            firsts.append(i)
        which.append(index[tuple(s)])
    return firsts, which


def attention_mask(valid, start, T):
    """Who attends to whom in a left-padded batch: valid (b, S) marks real columns, the queries
    sit at columns start..start+T-1 -> (b, 1, T, start+T) bool. A query sees the real columns up
    to its own; a padding query sees itself, so that no softmax row is empty (torch's CPU kernel
    returns 0 there, other kernels may return NaN)."""
    cols = torch.arange(start + T, device=valid.device)
    q = cols[start:, None]                                           # (T, 1)
    return ((valid[:, None, :start + T] & (cols <= q)) | (cols == q)).unsqueeze(1)


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg, cfg.block_size, "cpu")
        self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, D/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()
        self.lm_head.weight = self.tok_emb.weight  # tied: the toy vocab is a large share of params

    @torch.no_grad()
    def init_weights(self):
        """All initialisation in one place: normal(0, std) for every matrix, output projections
        scaled down by sqrt(2 * n_layer) (GPT-2) so the residual stream starts near unit scale."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                out_proj = name.endswith(("wo.weight", "w2.weight", ".w2"))
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer) if out_proj else std)
            elif name.endswith("weight"):
                nn.init.ones_(p)  # RMSNorm gains

    def n_params(self, active=False):
        """Parameter count; `active` counts routed experts only K of E times (per-token compute)."""
        total = sum(p.numel() for p in self.parameters())
        if active and self.cfg.n_routed_experts:
            c = self.cfg
            routed = sum(p.numel() for n, p in self.named_parameters() if n.endswith((".w1", ".w2", ".w3")))
            total -= routed - routed * c.n_experts_per_tok // c.n_routed_experts
        return total

    def flops_per_token(self, ctx=0):
        """FLOPs of one token's forward pass, from the config (PaLM app. B): 2 per active parameter
        (routed experts K of E times, the tied embedding once as the output head) plus 4 L C ctx for
        attention's scores and weighted values over ctx positions. Training costs 3x (backward: 2x)."""
        return 2 * self.n_params(active=True) + 4 * self.cfg.n_layer * self.cfg.n_embd * ctx

    def forward(self, idx, targets=None, pos=None, mask=None, caches=None, select=None):
        """idx (B, T) -> logits (B, T, V). Training passes targets (B, T; -1 = ignore) and gets
        the mean cross-entropy plus the MoE balance losses. Sampling passes per-row positions
        pos (B, T), an attention mask (B, 1, T, S) and the per-layer KV caches. select (B, T)
        bool returns the logits of those positions only, (N, V): the output head and the
        softmax after it then skip positions nobody reads (prompts and padding in RL scoring)."""
        B, T = idx.shape
        if pos is None:
            pos = torch.arange(T, device=idx.device).expand(B, T)
        cos, sin = self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1)  # (B, 1, T, D/2)
        x = embed(self.tok_emb, idx)                                 # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, None if caches is None else caches[i])
        x = self.norm(x)
        if select is not None:
            x = x[select]                                            # (N, C)
        logits = self.lm_head(x).float()                             # (B, T, V) or (N, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            for block in self.blocks:  # DeepSeek-V3 eq. 17: complementary sequence-wise balance loss
                if isinstance(block.mlp, MoE):
                    loss = loss + block.mlp.aux_loss
        return logits, loss

    @torch.inference_mode()
    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, top_k=None, top_p=None,
                 use_cache=True, generator=None, rows=None, ban=()):
        """Sample continuations for a batch of token-id prompts of different lengths.

        Prompts are left-padded, so every row's next token sits in the same column; pad slots
        are masked out of attention and each row's positions start at 0 at its first real token.
        A row stops at its first <|endoftext|> (kept in its output). Returns a list of lists of
        new token ids. use_cache=False recomputes the whole prefix each step (the reference).
        rows=(first, total): this batch is rows first..first+B-1 of a global batch of `total`
        split over processes; each step draws the global batch's noise from `generator` and
        uses its own slice, so a row's sample does not depend on the split (dist.py).
        ban: token ids never emitted (logits -inf at every step; evaluate's no-check probe).
        """
        dev, B = self.tok_emb.weight.device, len(prompts)
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        P = int(lens.max())
        S_max = P + max_new_tokens
        if S_max > self.cfg.block_size:
            raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds block_size {self.cfg.block_size}")
        idx = torch.full((B, P), eot, dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):
            idx[i, P - len(p):] = torch.tensor(p, dtype=torch.long, device=dev)
        pad = P - lens                                              # (B,) left padding per row
        cols = torch.arange(S_max, device=dev)
        valid = cols[None, :] >= pad[:, None]                       # (B, S_max) real tokens
        allpos = (cols[None, :] - pad[:, None]).clamp(min=0)        # (B, S_max) row positions

        def last_logits(rows, seq, start, caches):
            """Forward seq (b, T), the columns start.. of these rows: the logits of its last column (b, V)."""
            T = seq.shape[1]
            mask = attention_mask(valid[rows], start, T)             # (b, 1, T, start + T)
            return self(seq, pos=allpos[rows, start:start + T], mask=mask, caches=caches)[0][:, -1]

        # The prefill runs each distinct prompt once: GRPO samples G completions of every prompt,
        # and identical rows have identical keys and values, which are then copied to each row.
        firsts, inv = (torch.tensor(t, device=dev) for t in distinct(prompts))  # (U,) rows to prefill; (B,)
        caches = None
        if use_cache:
            c, d = self.cfg, self.cfg.n_embd // self.cfg.n_head
            caches = [KVCache(len(firsts), c.n_kv_head, S_max, d, dev, self.tok_emb.weight.dtype)
                      for _ in range(c.n_layer)]
        logits = last_logits(firsts, idx[firsts], 0, caches)[inv]    # (B, V)
        for cache in caches or ():
            cache.take(inv)
        # Rows that finished stop costing compute: once an eighth of the batch is done, the
        # batch is cut down to the live rows (`live`: their row numbers), caches included.
        out = torch.full((B, max_new_tokens), eot, dtype=torch.long, device=dev)
        live = torch.arange(B, device=dev)                           # (b,) rows still decoding
        done = torch.zeros(B, dtype=torch.bool, device=dev)          # (b,) of those, finished
        first, total = rows or (0, B)
        banned = torch.tensor(ban, dtype=torch.long, device=dev)     # (n,) never emitted
        for t in range(max_new_tokens):
            if len(banned):
                logits = logits.index_fill(-1, banned, float("-inf"))
            u = torch.rand(total, generator=generator)[first:first + B].to(dev)[live]  # (b,) this step's noise
            nxt = sample_token(logits, temperature, top_k, top_p, u)  # (b,)
            nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
            out[live, t] = nxt
            done |= nxt == eot
            n_done = int(done.sum())                                 # the step's one host read
            if n_done == len(live) or t == max_new_tokens - 1:
                break
            if n_done * 8 >= len(live):                              # drop the finished rows
                keep = ~done
                live, done, nxt = live[keep], done[keep], nxt[keep]
                for cache in caches or ():
                    cache.take(keep)
            if use_cache:   # the new token, its past in the caches
                logits = last_logits(live, nxt[:, None], P + t, caches)
            else:           # the reference: the whole prefix again
                logits = last_logits(live, torch.cat([idx[live], out[live, :t + 1]], dim=1), 0, None)
        result = []
        for row in out.tolist():
            result.append(row[: row.index(eot) + 1] if eot in row else row)
        return result


def sample_token(logits, temperature, top_k, top_p, u):
    """logits (B, V) -> token ids (B,), by inverting each row's CDF at its uniform u (B,) in
    [0, 1). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p              # keep the smallest prefix reaching p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    cdf = logits.float().softmax(-1).cumsum(-1)  # (B, V)
    # the first token whose CDF exceeds u * total: a token of probability 0 is never chosen
    idx = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return idx.clamp(max=logits.shape[-1] - 1)


if __name__ == "__main__":
    cfg = GPTConfig(n_routed_experts=8)
    model = GPT(cfg)
    print(f"{model.n_params() / 1e6:.2f}M parameters, {model.n_params(active=True) / 1e6:.2f}M active per token")
    print(model.generate([[1, 2, 3], [4]], max_new_tokens=8, eot=cfg.vocab_size - 1, temperature=0))
