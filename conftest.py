"""Fixtures shared by the per-module test files (pytest finds this file by itself)."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny tensors: a second thread only adds synchronisation,
    which costs a lot on a busy 2-core machine (31 s instead of 8 s measured for test_fp8.py).
    Not autouse: a module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
