"""Reading one page ahead (handlers/read_ahead.py) keeps the order, the errors and the request count."""

import threading

import pytest

from handlers.read_ahead import read_ahead


class Pages:
    """A lister that records how many pages were requested, and can fail at one."""

    def __init__(self, count: int, *, fail_at: int | None = None) -> None:
        self.count, self.fail_at, self.requested = count, fail_at, 0

    def __iter__(self):
        for n in range(self.count):
            self.requested += 1
            if n == self.fail_at:
                raise ConnectionError(f"page {n} failed")
            yield [f"obj_{n}_{i}" for i in range(3)]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_every_page_arrives_once_in_order():
    pages = Pages(25)
    assert list(read_ahead(iter(pages))) == list(Pages(25))
    assert pages.requested == 25
    assert reader_threads() == []


def test_an_error_is_raised_after_the_pages_before_it():
    pages = Pages(10, fail_at=4)
    seen = []
    with pytest.raises(ConnectionError, match="page 4 failed"):
        for page in read_ahead(iter(pages)):
            seen.append(page[0])
    assert seen == ["obj_0_0", "obj_1_0", "obj_2_0", "obj_3_0"]
    assert reader_threads() == []


def test_a_consumer_that_stops_early_stops_the_reader_after_at_most_two_more_requests():
    pages = Pages(100)
    with pytest.raises(RuntimeError, match="storing failed"):
        for n, _page in enumerate(read_ahead(iter(pages))):
            if n == 2:
                raise RuntimeError("storing failed")
    # Page 2 was being stored; page 3 may wait in the slot and page 4 may have been requested.
    assert 3 <= pages.requested <= 5
    assert reader_threads() == []
