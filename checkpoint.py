"""
Checkpoints and a stage's run directory: what survives a killed run.

Used by train.py; nothing to run on its own. A checkpoint holds plain tensors, numbers and
strings only (the model and optimizer states, the step, the configs, the tokenizer's ranks and
the settings hash of the stage), so `torch.load(..., weights_only=True)` reads it. Files are
written to a temporary name and renamed, so a reader (or a resumed run) sees the old file or
the new one, never half of one. eval.json is written last: a stage directory whose eval.json
carries the current settings hash holds a finished stage.
"""
import dataclasses
import json
import os
import sys

import torch
from tqdm import tqdm

import dist
import tokenizer


def save_checkpoint(path, model, optimizer, step, cfgs, enc, settings, ref=None):
    """ref: the KL reference's state, saved when it moves during a stage (ref_sync_every)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
             "step": step, "configs": {g: dataclasses.asdict(c) for g, c in cfgs.items()},
             "tokenizer": tokenizer.ranks_to_text(enc._mergeable_ranks), "settings": settings}
    if ref is not None:
        state["ref"] = ref
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    tokenizer.save_tokenizer(enc, os.path.join(os.path.dirname(path), "tokenizer.tiktoken"))


def load_checkpoint(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["enc"] = tokenizer.make_encoding(tokenizer.ranks_from_text(ckpt["tokenizer"]))
    return ckpt


def write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
    os.replace(path + ".tmp", path)


class Run:
    """One stage's directory while it trains: where to resume, metrics.jsonl, checkpoints,
    the progress bar and, at the end, eval.json. Under data parallel every rank reads, rank 0
    alone writes, and the others wait for it (dist.barrier) where they will read what it wrote."""

    def __init__(self, out_dir, name, settings, resume, quiet):
        self.dir, self.name, self.settings = os.path.join(out_dir, name), name, settings
        self.main, self.quiet = dist.is_main(), quiet or not dist.is_main()
        if self.main:
            os.makedirs(self.dir, exist_ok=True)
        dist.barrier()
        self.ckpt_path, self.metrics = os.path.join(self.dir, "ckpt.pt"), os.path.join(self.dir, "metrics.jsonl")
        self.saved, self.step = None, 0
        if resume and os.path.exists(self.ckpt_path):
            self.saved = load_checkpoint(self.ckpt_path)
            if self.saved["settings"] != settings:
                sys.exit(f"error: {self.ckpt_path} was made with other settings: resume with the flags that "
                         f"made it, or drop --resume to start {name} over")
            self.step = self.saved["step"]
            print(f"resuming from step {self.step}")
        # metrics.jsonl keeps only what the checkpoint has seen: rows logged after it are redone
        rows = [line for line in open(self.metrics)] if os.path.exists(self.metrics) else []
        dist.barrier()  # every rank has read what it needs before rank 0 rewrites the files
        if self.main:
            with open(self.metrics, "w") as f:
                f.writelines(r for r in rows if self.saved and json.loads(r)["step"] <= self.step)

    def progress(self, total):
        self.bar = tqdm(total=total, initial=self.step, disable=self.quiet, desc=self.name, dynamic_ncols=True)

    def log(self, row):
        if self.main:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save(self, model, opt, step, cfgs, enc, ref=None):
        if self.main:
            save_checkpoint(self.ckpt_path, model, opt, step, cfgs, enc, self.settings, ref)
        dist.barrier()

    def finish(self, result):
        self.bar.close()
        if self.main:
            write_json(os.path.join(self.dir, "eval.json"), {**result, "settings": self.settings})
        dist.barrier()
