"""
The tokenizer: a byte-level BPE trained here (on the toy world's corpus, data.build_tokenizer)
and run by tiktoken, saved in tiktoken's own rank-file format (one "base64(token) rank" line per
token) beside every checkpoint. tiktoken's ready-made encodings are downloaded when first used; this one
never touches the network.

    python tokenizer.py            # train a small BPE on a few sentences and show a round trip

Pre-tokenization keeps tags whole, splits every digit into its own chunk (the model sees numbers
digit by digit, the way the world's chains compute them), keeps runs of CJK characters together
and never merges across these chunks.
"""
import base64
import re
from collections import Counter

import tiktoken

EOT = "<|endoftext|>"
_CJK = r"\u4e00-\u9fff\u3000-\u303f\uff00-\uffef"
PAT_STR = (r" ?</?[a-z]+>| ?[A-Za-z]+| ?[0-9]| ?[" + _CJK + r"]+| ?[^\sA-Za-z0-9" + _CJK + r"]+|\s+(?!\S)|\s+")


def train_bpe(texts, vocab_size):
    """Classic BPE on byte sequences of pre-tokenized chunks. Returns {token_bytes: rank}."""
    chunks = Counter(m for t in texts for m in re.findall(PAT_STR, t))
    words = [[bytes([b]) for b in w.encode()] for w in chunks]
    counts = list(chunks.values())
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < vocab_size - 1:  # one id is kept for <|endoftext|>
        pairs = Counter()
        for w, c in zip(words, counts):
            for a, b in zip(w, w[1:]):
                pairs[a, b] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))  # ties broken deterministically
        ranks[a + b] = len(ranks)
        for i, w in enumerate(words):
            if len(w) < 2:
                continue
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
    return ranks


def make_encoding(ranks):
    return tiktoken.Encoding("nanor1", pat_str=PAT_STR, mergeable_ranks=ranks,
                             special_tokens={EOT: len(ranks)})


def ranks_to_text(ranks):
    """tiktoken's rank-file format: one 'base64(token) rank' per line."""
    return "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


def ranks_from_text(text):
    return {base64.b64decode(tok): int(r) for tok, r in (line.split() for line in text.splitlines() if line)}


def save_tokenizer(enc_or_ranks, path):
    ranks = enc_or_ranks._mergeable_ranks if isinstance(enc_or_ranks, tiktoken.Encoding) else enc_or_ranks
    with open(path, "w") as f:
        f.write(ranks_to_text(ranks))


def load_tokenizer(path):
    with open(path) as f:
        return make_encoding(ranks_from_text(f.read()))


def encode_docs(enc, docs):
    """Concatenate documents into one token stream, each followed by <|endoftext|>."""
    eot = enc.eot_token
    out = []
    for ids in enc.encode_ordinary_batch(docs, num_threads=1):
        out.extend(ids)
        out.append(eot)
    return out


if __name__ == "__main__":
    texts = ["Question: Compute 347 * 6.\nSolution: 7 * 6 = 42, 42 + 0 = 42, keep 2, carry 4.", "问题：计算 12 * 3。"] * 20
    enc = make_encoding(train_bpe(texts, 300))
    ids = enc.encode_ordinary(texts[0])
    print(f"vocab {enc.n_vocab}: {len(ids)} tokens for {len(texts[0])} characters")
    print([enc.decode([i]) for i in ids])
    assert enc.decode(ids) == texts[0]
