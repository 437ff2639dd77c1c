"""Fixtures shared by the test files (pytest finds this file by itself)."""
import os
import subprocess
import sys
import types

import pytest
import torch

import verify

HERE = os.path.dirname(os.path.abspath(__file__))


def train(args, **kw):
    """python train.py ARGS in the project's folder, output captured."""
    return subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *args], capture_output=True, text=True,
                          cwd=HERE, **kw)


def fake_run(step=0):
    """The parts of checkpoint.Run that the training loops touch, for a run at `step` (0: fresh)."""
    return types.SimpleNamespace(step=step, log=lambda row: None,
                                 bar=types.SimpleNamespace(update=lambda n: None, set_postfix=lambda **kw: None))


def grpo_stats(skipped=0):
    """What a stand-in grpo_step returns to train_grpo: the figures the loop logs and shows."""
    return {"reward": 0.5, "accuracy": 0.5, "format_rate": 1.0, "lang": 1.0, "response_tokens": 9.0, "kl": 0.0,
            "zero_var_frac": 0.0, "skipped": skipped, "example": "an example"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Every stage at --preset tiny (`--stage all`), once per test session: the output folder."""
    out = str(tmp_path_factory.mktemp("tiny_all"))
    r = train(["--stage", "all", "--preset", "tiny", "--out_dir", out, "--quiet"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def verify_worker():
    """verify.py's worker process, started once for the session, so that timed tests do not pay
    for its start-up (a sympy import)."""
    assert verify.WORKER.ask("sleep", (0,), deadline_s=120) == "no"  # a no-op round trip
    return verify.WORKER


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny tensors: a second thread only adds synchronisation,
    which costs a lot on a busy 2-core machine (31 s instead of 8 s measured for test_fp8.py).
    Not autouse: a module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
