import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers, one per core: one thread each, in the workers and in the processes they start, since
    # threads of two processes on one core wait on each other far more than they gain.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny supernets: on a busy 2-core machine a second intra-op thread costs more in waiting than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_file():
    def get(name: str) -> Path:
        path = SHARED / name
        if not path.exists():
            pytest.skip(f"{path} is absent (the shared data directory is not beside this checkout)")
        return path
    return get
