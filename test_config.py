"""Tests of config.py: every field of every config has a valid range, and a value outside it (or
two values that cannot go together) exits 2 with one line, before any work starts."""
import dataclasses
import math
import os
import subprocess
import sys

import pytest

import config
import train
from conftest import HERE


def bad_value(name, spec, default):
    """A value outside the field's declared range (None if every value is valid)."""
    if isinstance(spec, tuple):
        return "nonsense"
    if callable(spec) and not isinstance(spec, config.Range):
        return "arith:9"
    if spec == config.ANY:
        return None
    below = spec.lo if spec.lo_open else spec.lo - (1 if isinstance(default, int) else 1e-3)
    above = spec.hi if spec.hi_open else spec.hi + (1 if isinstance(default, int) else 1e-3)
    return type(default)(below) if spec.lo != -math.inf else type(default)(above)


FIELDS = [(g, f) for g, cls in config.CONFIGS.items() for f in dataclasses.fields(cls) if (g, f.name) not in config.UNSET]


def test_every_field_has_a_range_and_every_default_is_valid():
    assert {f.name for _, f in FIELDS} == set(config.RANGES)
    for preset in config.PRESETS:
        assert config.problems(train.build_configs(train.parse_args(["--preset", preset]), "cpu")[1]) == [], preset
    unchecked = {f.name for _, f in FIELDS if config.RANGES[f.name] == config.ANY}
    assert unchecked == {"seed", "train_seed", "rl_seed", "scale_std", "mask_truncated", "dynamic_sampling", "compile"}


# the README's flags of the world with checks (Presets, Reflection)
CHECK_FLAGS = ["--check_mode", "fix", "--p_check", "1.0", "--p_template_check", "0.2", "--p_check_slip", "0.3",
               "--max_new_tokens", "200", "--eval_new_tokens", "200", "--loss_agg", "seq-mean-token-sum-norm"]


def test_the_cpu_preset_is_nocheck_with_the_readmes_reflection_flags():
    # the README's reflection runs spelt these flags out on the preset of the world before checks (the
    # zero stage's; the step counts are the pipeline's)
    flags = ["--max_iters", "1100", *CHECK_FLAGS, "--rl1_steps", "120", "--rl2_steps", "120",
             "--student_rl_steps", "400"]
    preset, cpu = train.build_configs(train.parse_args([]), "cpu")
    assert preset == "cpu" and cpu == train.build_configs(train.parse_args(["--preset", "nocheck", *flags]), "cpu")[1]
    nocheck = train.build_configs(train.parse_args(["--preset", "nocheck"]), "cpu")[1]
    assert cpu != nocheck and nocheck["data"].check_mode == "none"


def test_the_gpu_preset_is_the_world_before_checks_and_takes_the_readmes_check_flags():
    # the README: the gpu preset runs the dataclass defaults' world; the cpu preset's flags give it the checks
    gpu = train.build_configs(train.parse_args(["--preset", "gpu"]), "cuda")[1]
    checked = train.build_configs(train.parse_args(["--preset", "gpu", *CHECK_FLAGS]), "cuda")[1]
    cpu = train.build_configs(train.parse_args([]), "cpu")[1]
    value = lambda cfgs, name: next(getattr(c, name) for c in cfgs.values() if hasattr(c, name))
    assert config.problems(checked) == []
    for name in CHECK_FLAGS[::2]:
        assert value(checked, name[2:]) == value(cpu, name[2:]), name
    assert [c["data"].check_mode for c in (gpu, checked)] == ["none", "fix"]


@pytest.mark.parametrize("group,field", [(g, f) for g, f in FIELDS if config.RANGES[f.name] != config.ANY],
                         ids=lambda x: getattr(x, "name", x))
def test_a_value_out_of_range_exits_2_naming_the_range(group, field, capsys):
    bad = bad_value(field.name, config.RANGES[field.name], field.default)
    args = train.parse_args(["--preset", "tiny", f"--{field.name}", str(bad)])
    with pytest.raises(SystemExit) as e:
        config.check(train.build_configs(args, "cpu")[1])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"--{field.name}" in err, err


@pytest.mark.parametrize("flags,needle", [
    (["--n_embd", "24", "--n_head", "8"], "even multiple"), (["--n_embd", "60", "--n_head", "8"], "even multiple"), (["--n_head", "4", "--n_kv_head", "3"], "must divide"),
    (["--n_routed_experts", "4", "--n_experts_per_tok", "5"], "at most --n_routed_experts"),
    (["--n_expert_groups", "3"], "must divide"), (["--n_limited_groups", "2"], "at most --n_expert_groups"),
    (["--p_chain", "0.9", "--p_bare", "0.2"], "at most 1"), (["--bpe_docs", "5000"], "at most --n_docs"),
    (["--warmup_iters", "60"], "below --max_iters"), (["--max_new_tokens", "180"], "must fit --block_size"),
    (["--eval_new_tokens", "180"], "must fit --block_size"), (["--n_minibatches", "17"], "at most the rollouts"),
    (["--general_frac", "0.9"], "leaves no reasoning prompt"), (["--student_width", "36"], "--student_width 36"),
    (["--p_chain", "0.5", "--p_switch", "0.6"], "at most 1"), (["--p_chain", "0.5", "--p_slip", "0.6"], "at most 1"),
    (["--n_routed_experts", "1", "--n_experts_per_tok", "1", "--n_expert_groups", "2"], "must divide")])
def test_settings_that_cannot_go_together_exit_2(flags, needle, capsys):
    args = train.parse_args(["--preset", "tiny", *flags])
    with pytest.raises(SystemExit) as e:
        config.check(train.build_configs(args, "cpu")[1])
    assert e.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("flags", [
    ["--n_experts_per_tok", "4"], ["--bpe_docs", "3000"], ["--p_chain", "0.25", "--p_bare", "0.25", "--p_slip", "0.25",
                                                            "--p_switch", "0.25"],
    ["--max_new_tokens", "176", "--eval_new_tokens", "176"], ["--n_minibatches", "16"], ["--p_zh", "1"], ["--p_zh", "0"],
    ["--group_size", "2"], ["--n_routed_experts", "0", "--n_experts_per_tok", "5", "--n_expert_groups", "3"],
    ["--general_frac", "0.7"], ["--beta2", "0"], ["--student_width", "40"]])
def test_settings_at_their_limits_are_valid(flags):
    """Each boundary of a range or relation, from the valid side (tiny preset: 4 experts, 3000 docs,
    block 192, 4 prompts x G=4)."""
    assert config.problems(train.build_configs(train.parse_args(["--preset", "tiny", *flags]), "cpu")[1]) == []


def test_ranges_read_as_written():
    assert [str(r) for r in (config.COUNT, config.POSITIVE, config.FRACTION, config.RANGES["clip_eps"],
                             config.RANGES["beta2"])] == [">= 1", "> 0", "[0, 1]", "(0, 1)", "[0, 1)"]
    assert 1 in config.FRACTION and 1 not in config.RANGES["beta2"] and 0 not in config.POSITIVE


@pytest.mark.parametrize("flags", [["--group_size", "1"], ["--block_size", "8"], ["--max_iters", "-5"],
                                   ["--temperature", "0"], ["--stage", "rl2", "--general_frac", "1.0"]])
def test_the_command_exits_2_before_any_work(flags, tmp_path):
    out = str(tmp_path / "out")
    r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), "--preset", "tiny", "--out_dir", out, *flags],
                       capture_output=True, text=True, cwd=HERE, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "error" in r.stderr, r.stderr
    assert not os.path.exists(out)  # nothing was started


def test_a_prompt_that_does_not_fit_stops_before_training(tmp_path):
    """block_size 100 passes the range checks, but the tokenizer's prompts plus the budget do not fit."""
    out = str(tmp_path / "out")
    r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), "--preset", "tiny", "--out_dir", out,
                        "--block_size", "100", "--quiet"], capture_output=True, text=True, cwd=HERE, timeout=300)
    assert r.returncode == 2 and "exceeds --block_size 100" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(out, "pretrain", "ckpt.pt"))


class FakeLibc:
    def __init__(self, ok=1):
        self.calls, self.ok = [], ok

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.ok


@pytest.mark.parametrize("ok", [1, 0])
def test_keep_freed_memory_sets_glibcs_thresholds(ok, monkeypatch):
    """M_MMAP_THRESHOLD (-3) to 32 MB, M_TRIM_THRESHOLD (-1) to 1 GB; a refused call reports False."""
    libc = FakeLibc(ok)
    monkeypatch.setattr(config.ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else None)
    assert config.keep_freed_memory() is bool(ok)
    assert libc.calls == ([(-3, 32 << 20), (-1, 1 << 30)] if ok else [(-3, 32 << 20)])


def test_keep_freed_memory_without_glibc_changes_nothing(monkeypatch):
    def no_libc(name):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(config.ctypes, "CDLL", no_libc)
    assert config.keep_freed_memory() is False


@pytest.mark.parametrize("choice,line", [
    ("auto", "device: cpu (no GPU found); compute dtype: float32; malloc keeps freed memory"),
    ("cpu", "device: cpu (asked for with --device); compute dtype: float32; malloc keeps freed memory")])
def test_pick_device_on_a_cpu_says_what_it_chose(choice, line, monkeypatch, capsys):
    libc = FakeLibc()
    monkeypatch.setattr(config.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(config.torch.backends.mps, "is_available", lambda: False)
    device, autocast = config.pick_device(choice)
    assert (device, capsys.readouterr().out.strip(), len(libc.calls)) == ("cpu", line, 2)
    assert not isinstance(autocast, config.torch.autocast)


def test_pick_device_cuda_without_cuda_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        config.pick_device("cuda")
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --device cuda but CUDA is not available (valid here: cpu)"


def test_parse_bool_reads_the_six_spellings_and_refuses_the_rest():
    assert [config.parse_bool(v) for v in ("1", "true", "Yes", "0", "FALSE", "no")] == [True] * 3 + [False] * 3
    with pytest.raises(config.argparse.ArgumentTypeError, match="true/false"):
        config.parse_bool("maybe")


def test_student_shape_halves_the_layers_and_narrows_to_three_quarters():
    """The tiny preset's model (2 layers, d=64, hidden 192, 4 experts) and the cpu preset's (4 layers, d=128)."""
    tiny = train.build_configs(train.parse_args(["--preset", "tiny"]), "cpu")[1]["model"]
    cpu = train.build_configs(train.parse_args(["--preset", "cpu"]), "cpu")[1]["model"]
    shape = lambda m: (m.n_layer, m.n_embd, m.mlp_hidden, m.n_routed_experts)
    assert shape(config.student_shape(tiny)) == (1, 48, 144, 0)
    assert shape(config.student_shape(tiny, width=32)) == (1, 32, 96, 0)  # --student_width 32: hidden scaled alike
    assert shape(config.student_shape(cpu))[:2] == (2, 96)
    assert config.student_shape(dataclasses.replace(tiny, n_layer=1)).n_layer == 1  # never no layer
