# Fixtures shared by the per-module test files (pytest finds this file by itself).
import pytest

import verify


@pytest.fixture(scope="session")
def verify_worker():
    """verify.py's worker process, started once for the session, so that timed tests do not pay
    for its start-up (a sympy import)."""
    assert verify.WORKER.ask("sleep", (0,), deadline_s=120) == "no"  # a no-op round trip
    return verify.WORKER
