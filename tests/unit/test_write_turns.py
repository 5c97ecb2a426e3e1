"""The writers of one process take turns (`WriteTurns`): small changes go ahead of larger ones
waiting, first come first served among equals, and a large writer is never kept waiting for ever."""

from __future__ import annotations

import threading
import time

import pytest

from qualify.service import unit_of_work
from qualify.service.unit_of_work import WriteTurns


def _queue_behind(turns: WriteTurns, writers: list[tuple[str, bool]], order: list[str]) -> list[threading.Thread]:
    """Start the writers one after the other (each waiting before the next starts), each taking
    its turn, noting its name and giving the turn back."""
    threads = []
    for name, small in writers:

        def write(name: str = name, small: bool = small) -> None:
            assert turns.acquire(small=small, timeout=10)
            order.append(name)
            turns.release()

        thread = threading.Thread(target=write)
        thread.start()
        threads.append(thread)
        while len(turns._waiting) < len(threads):  # in the queue before the next one arrives
            time.sleep(0.001)
    return threads


def test_a_small_change_goes_ahead_of_larger_ones_and_equals_go_in_order() -> None:
    turns, order = WriteTurns(), []
    assert turns.acquire(small=False, timeout=1)
    threads = _queue_behind(
        turns, [("batch-1", False), ("batch-2", False), ("event-1", True), ("event-2", True)], order
    )
    turns.release()
    for thread in threads:
        thread.join(5)
    assert order == ["event-1", "event-2", "batch-1", "batch-2"]


def test_a_large_change_that_waited_its_patience_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unit_of_work, "PATIENCE_SECONDS", 0.05)
    turns, order = WriteTurns(), []
    assert turns.acquire(small=False, timeout=1)
    threads = _queue_behind(turns, [("batch", False)], order)
    time.sleep(0.1)  # the batch has waited past its patience: a small change arriving now comes after it
    threads += _queue_behind(turns, [("event", True)], order)
    turns.release()
    for thread in threads:
        thread.join(5)
    assert order == ["batch", "event"]


def test_a_writer_that_cannot_have_its_turn_in_time_gives_up_and_the_others_go_on() -> None:
    turns, order = WriteTurns(), []
    assert turns.acquire(small=False, timeout=1)
    assert turns.acquire(small=True, timeout=1)  # the same thread again: re-entrant
    turns.release()
    assert not _acquired_elsewhere(turns, timeout=0.05)  # still held once
    threads = _queue_behind(turns, [("next", False)], order)
    turns.release()
    threads[0].join(5)
    assert order == ["next"] and turns._waiting == [] and turns._owner is None


def _acquired_elsewhere(turns: WriteTurns, *, timeout: float) -> bool:
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(turns.acquire(small=True, timeout=timeout)))
    thread.start()
    thread.join(5)
    return got[0]
