"""The suite's own hygiene (conftest): a test that changes torch's thread count does not change it
for the tests after it. Before, one test pinned one thread and every later test ran on one thread."""

import torch

_SEEN: list[int] = []


def test_a_test_may_change_the_thread_count():
    _SEEN.append(torch.get_num_threads())
    torch.set_num_threads(_SEEN[0] + 1)  # a different count on any machine
    assert torch.get_num_threads() == _SEEN[0] + 1


def test_the_next_test_gets_the_suite_thread_count_back():
    assert _SEEN, "runs after test_a_test_may_change_the_thread_count"
    assert torch.get_num_threads() == _SEEN[0]
