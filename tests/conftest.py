import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Tiny ops are dominated by thread hand-offs; on a shared 2-core box more threads are much slower.
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (GPU tests run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
