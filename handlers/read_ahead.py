"""Reading the next page from Stripe while the current one is stored.

Against the real Stripe API a nightly run spends most of its time waiting for the next page (a few
hundred milliseconds each); storing a page takes about as long again. Fetching ahead on a
second thread lets the two overlap. The reader runs at most two pages ahead (one waiting, one being
fetched): memory stays a few pages, and a run that stops early has made at most two requests more
than it used.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
_POLL_SECONDS = 0.1  # how often a blocked reader checks whether the consumer has gone away
_JOIN_SECONDS = 1.0  # how long a consumer that stops early waits for the reader to notice


def read_ahead(items: Iterator[T], *, name: str = "read-ahead") -> Iterator[T]:
    """Yield what `items` yields, in order, while a thread already fetches the next one.

    An exception raised by `items` is raised here after every item before it has been yielded. When
    the consumer stops early (an error, or closing this generator) the reader thread stops too.
    """
    slot: queue.Queue = queue.Queue(maxsize=1)
    stopped = threading.Event()

    def hand_over(item: object) -> bool:
        while not stopped.is_set():
            try:
                slot.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in order
            hand_over(exc)
            return
        hand_over(_END)

    reader = threading.Thread(target=read, name=name, daemon=True)
    reader.start()
    try:
        while True:
            item = slot.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()
        reader.join(_JOIN_SECONDS)
