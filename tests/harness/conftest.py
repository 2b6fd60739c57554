"""Fixtures shared by every harness test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine OpenMP threads that
    wait for each other can make a 50 ms test take seconds. Module scope, so module-scoped
    fixtures that train (test_report's real runs) are single-threaded too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
