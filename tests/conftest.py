from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shared_file():
    def get(name: str) -> Path:
        path = SHARED / name
        if not path.exists():
            pytest.skip(f"{path} is absent (the shared data directory is not beside this checkout)")
        return path
    return get
