"""Work done for many items at once on a bounded pool of daemon threads, the results in order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

DEFAULT_WORKERS = 32
"""Workers mostly wait on the network (a check is a few SSH round trips, a start one API call), so many are cheap."""

Item = TypeVar("Item")
Result = TypeVar("Result")


def at_once(work: Callable[[Item], Result], items: Sequence[Item], workers: int = DEFAULT_WORKERS) -> list[Result]:
    """WORK done for every item on at most WORKERS threads; the results in ITEMS' order.

    The threads are daemons, so that Ctrl-C ends the command at once: a ThreadPoolExecutor would
    first wait for every running item (a check runs until its deadline). What an item started
    ends by its own bounds (remote commands have time limits; a started VM goes on starting).
    An exception of WORK is raised here, once every item has been done.
    """
    results: list[tuple[bool, object]] = [(False, None)] * len(items)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(items)):
        todo.put(index)

    def worker() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = (True, work(items[index]))
            except BaseException as error:  # raised again in the caller's thread
                results[index] = (False, error)

    threads = [
        threading.Thread(target=worker, name=f"at-once-{n}", daemon=True)
        for n in range(max(1, min(workers, len(items))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # interruptible: Ctrl-C raises KeyboardInterrupt here
    for done, value in results:
        if not done:
            raise value if isinstance(value, BaseException) else RuntimeError("an item was not done")
    return [cast(Result, value) for _, value in results]
