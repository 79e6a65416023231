"""Work done at once: in order, on a bounded pool of daemon threads, an item's error raised once all are done."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.parallel import at_once


def test_at_once_keeps_the_order_and_bounds_the_threads() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return n * n

    assert at_once(work, list(range(10)), workers=3) == [n * n for n in range(10)]
    assert most == 3


def test_at_once_raises_an_items_error_once_all_are_done() -> None:
    done: list[int] = []

    def work(n: int) -> int:
        if n == 1:
            raise ValueError("item 1")
        time.sleep(0.05)
        done.append(n)
        return n

    with pytest.raises(ValueError, match="item 1"):
        at_once(work, [0, 1, 2], workers=3)
    assert sorted(done) == [0, 2]


def test_at_once_runs_on_daemon_threads_so_ctrl_c_need_not_wait() -> None:
    # tests/cli/test_errors.py interrupts a real class check; this is the property it rests on.
    assert at_once(lambda _: threading.current_thread().daemon, [1, 2]) == [True, True]
    assert at_once(lambda n: n, []) == []
