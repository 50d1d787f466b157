"""Engine tests run with one CPU thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops are dominated by thread hand-offs; on a shared 2-core box more threads are much slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
