"""
checkpoint.py's own tests: what a checkpoint holds and how a stage's directory resumes, on a
two-parameter model in a temporary directory (the killed-and-resumed training runs are in
test_all.py).

    python -m pytest test_checkpoint.py -q
"""
import dataclasses
import json
import os
import pickle

import pytest
import torch

import checkpoint
import tokenizer


@dataclasses.dataclass
class Cfg:
    lr: float = 1e-3  # any dataclass config: a checkpoint stores it as a dict


@pytest.fixture
def parts():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()  # an optimizer with state to save
    enc = tokenizer.make_encoding(tokenizer.train_bpe(["ab ab"], 260))
    return model, opt, {"train": Cfg(lr=3e-4)}, enc


def test_a_checkpoint_holds_what_a_run_needs_and_loads_with_weights_only(parts, tmp_path):
    model, opt, cfgs, enc = parts
    path = str(tmp_path / "ckpt.pt")
    checkpoint.save_checkpoint(path, model, opt, 7, cfgs, enc, "hash1", ref={"w": torch.zeros(1)})
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "tokenizer.tiktoken"]  # no .tmp left behind
    ckpt = checkpoint.load_checkpoint(path)  # weights_only=True inside
    assert ckpt["step"] == 7 and ckpt["settings"] == "hash1" and ckpt["configs"] == {"train": {"lr": 3e-4}}
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    assert torch.equal(ckpt["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(ckpt["ref"]["w"], torch.zeros(1))
    assert ckpt["enc"].encode_ordinary("ab ab") == enc.encode_ordinary("ab ab")
    assert tokenizer.load_tokenizer(str(tmp_path / "tokenizer.tiktoken"))._mergeable_ranks == enc._mergeable_ranks
    checkpoint.save_checkpoint(path, model, None, 8, cfgs, enc, "hash1")  # no optimizer, no reference
    ckpt = checkpoint.load_checkpoint(path)
    assert ckpt["step"] == 8 and ckpt["optimizer"] is None and "ref" not in ckpt


def test_a_run_resumes_at_its_checkpoint_and_forgets_rows_after_it(parts, tmp_path):
    model, opt, cfgs, enc = parts
    run = checkpoint.Run(str(tmp_path), "zero", "hash1", resume=True, quiet=True)  # nothing to resume
    assert run.step == 0 and run.saved is None and os.path.isdir(tmp_path / "zero")
    for step in (1, 2, 3):
        run.log({"step": step})
    run.save(model, opt, 3, cfgs, enc)
    for step in (4, 5):
        run.log({"step": step})  # logged, then the run was killed before its next checkpoint
    steps = lambda: [json.loads(line)["step"] for line in open(tmp_path / "zero" / "metrics.jsonl")]
    assert steps() == [1, 2, 3, 4, 5]

    again = checkpoint.Run(str(tmp_path), "zero", "hash1", resume=True, quiet=True)
    assert again.step == 3 and again.saved["step"] == 3 and steps() == [1, 2, 3]  # 4 and 5 are redone
    with pytest.raises(SystemExit, match="other settings"):
        checkpoint.Run(str(tmp_path), "zero", "hash2", resume=True, quiet=True)
    fresh = checkpoint.Run(str(tmp_path), "zero", "hash2", resume=False, quiet=True)  # start over
    assert fresh.step == 0 and fresh.saved is None and steps() == []

    fresh.progress(10)
    fresh.finish({"accuracy": 0.5, "example": "计算 12 * 3"})
    eval_json = tmp_path / "zero" / "eval.json"
    assert json.load(open(eval_json)) == {"accuracy": 0.5, "example": "计算 12 * 3", "settings": "hash2"}
    assert "计算" in eval_json.read_text(encoding="utf-8")  # readable as written, not \u escapes
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "zero"))


def test_a_checkpoint_with_anything_but_tensors_and_plain_data_is_refused(tmp_path):
    """load_checkpoint unpickles with weights_only=True: an object of any class is refused, never built."""
    path = str(tmp_path / "ckpt.pt")
    torch.save({"step": 1, "configs": Cfg()}, path)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.load_checkpoint(path)
