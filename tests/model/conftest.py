"""One torch thread for the model tests: the models are tiny (a second thread gains little) and on
a busy 2-core machine idle OpenMP threads spin, which slowed this folder down several-fold."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
