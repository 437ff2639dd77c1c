"""
Load a stage's checkpoint and show what the model does: prompt, reasoning, answer, verdict.

    python sample.py                          # 5 held-out problems, base model (out/pretrain)
    python sample.py --stage zero -n 10       # the R1-Zero model's reasoning
    python sample.py --stage rl2 --general    # held-out general tasks (a number in words, ...)
    python sample.py --stage distill          # the small dense student distilled from rl2
    python sample.py --stage zero --prompt "Compute 347 * 6."
    python sample.py --temperature 1.0        # sample instead of greedy

Works on every stage of train.py (pretrain, zero, sft1, rl1, rl1_nolang, sft2, rl2, and the
student's: student_base, distill, student_zero).
"""
import os
import re
import sys

import torch

import data
import rewards
from checkpoint import load_checkpoint
from model import GPT, GPTConfig
from config import Parser
from train import STAGES


def main(argv=None):
    p = Parser(description="show a checkpoint's responses")
    p.add_argument("--stage", choices=STAGES, default="pretrain")
    p.add_argument("--out_dir", default="out")
    p.add_argument("--prompt", default=None, help="a question (wrapped in the R1-Zero template)")
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="template language for --prompt")
    p.add_argument("-n", type=int, default=5, help="number of held-out problems")
    p.add_argument("--general", action="store_true", help="held-out general tasks instead of reasoning problems")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--max_new_tokens", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for bad, why in ((args.n < 1, "-n must be >= 1"), (args.temperature < 0, "--temperature must be >= 0"),
                     (args.top_k is not None and args.top_k < 1, "--top_k must be >= 1"),
                     (args.top_p is not None and not 0 < args.top_p <= 1, "--top_p must be in (0, 1]"),
                     (args.max_new_tokens < 1, "--max_new_tokens must be >= 1")):
        if bad:
            p.error(why)
    path = os.path.join(args.out_dir, args.stage, "ckpt.pt")
    if not os.path.exists(path):
        p.exit(2, f"sample.py: error: no checkpoint at {path}; run: python train.py --stage {args.stage}\n")

    ckpt = load_checkpoint(path)
    enc, cfgs = ckpt["enc"], ckpt["configs"]
    model = GPT(GPTConfig(**cfgs["model"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    torch.manual_seed(args.seed)
    print(f"{args.stage} model from {path} (step {ckpt['step']}), {model.n_params() / 1e6:.2f}M params")

    if args.prompt is not None:
        problems = [data.Problem(args.prompt, None, "custom", args.lang, 0, (), [])]
    else:
        dc = data.DataConfig(**cfgs["data"])
        problems = (data.heldout_general(dc) if args.general else data.heldout_problems(dc))[:args.n]
    budget = min(args.max_new_tokens, model.cfg.block_size - max(len(enc.encode_ordinary(q.prompt)) for q in problems))
    outs = model.generate([enc.encode_ordinary(q.prompt) for q in problems], budget, enc.eot_token,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    for q, o in zip(problems, outs):
        text = enc.decode([t for t in o if t != enc.eot_token])
        think = re.search(r"<think>(.*?)</think>", text, re.S)
        print("=" * 80)
        print(f"[{q.kind} {q.lang}] {q.question}")
        print(f"reasoning: {think.group(1).strip() if think else '(no <think> block)'}")
        print(f"answer:    {rewards.extract_answer(text)}   ({len(o)} tokens)")
        if q.answer is not None:
            s = rewards.score_batch([text], [q.answer], [q.lang], kinds=[q.kind])
            print(f"gold:      {q.answer}   -> {'RIGHT' if s['accuracy'][0] else 'wrong'}, format {s['format'][0]:.0f}, "
                  f"language consistency {s['lang'][0]:.2f}" + (", needless chain" if s["needless"][0] else ""))
        print(f"raw:       {text!r}")


if __name__ == "__main__":
    sys.exit(main())
