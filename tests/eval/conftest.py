import pytest


@pytest.fixture(scope="module")
def one_thread():
    # Two cores shared by several test runs: one thread avoids OpenMP oversubscription (~7x faster here).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
