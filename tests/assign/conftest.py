"""One torch thread for the assignment tests: their many small ops run several times faster
than with a contended intra-op thread pool on a shared 2-core machine."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
