"""Shared fixtures of the test suite (pytest finds this file by itself)."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def train(args, **kw):
    """python train.py ARGS in the project's folder, output captured."""
    return subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *args], capture_output=True, text=True,
                          cwd=HERE, **kw)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Every stage at --preset tiny (`--stage all`), once per test session: the output folder."""
    out = str(tmp_path_factory.mktemp("tiny_all"))
    r = train(["--stage", "all", "--preset", "tiny", "--out_dir", out, "--quiet"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out
