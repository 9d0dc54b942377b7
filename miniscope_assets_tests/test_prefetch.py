"""The background prefetcher keeps order, bounds memory and propagates errors."""

from __future__ import annotations

import threading
import time

import pytest

from miniscope_assets.io.prefetch import prefetch


def test_order_is_kept():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))


def test_producer_stays_a_bounded_number_of_items_ahead():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    iterator = prefetch(items(), depth=2)
    assert next(iterator) == 0
    time.sleep(0.1)
    assert len(produced) <= 4  # one consumed, two buffered, one waiting to be put
    iterator.close()


def test_errors_reach_the_consumer():
    def items():
        yield 1
        raise ValueError("frame 7 cannot be decoded")

    with pytest.raises(ValueError, match="frame 7"):
        list(prefetch(items()))


def test_closing_early_stops_the_thread():
    before = threading.active_count()
    iterator = prefetch(iter(range(10_000)), depth=2)
    next(iterator)
    iterator.close()
    time.sleep(0.1)
    assert threading.active_count() == before
