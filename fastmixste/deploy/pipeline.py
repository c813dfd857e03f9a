"""The live pipeline's two stages in two threads: :class:`Background` runs an iterator (decode + detect) in a thread
of its own, a bounded number of items ahead of the consumer (lift + write, ``fastmixste.deploy.stream``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

#: frames decoded and detected ahead of the lifting thread at most (the queue between the pipeline's two stages)
PIPELINE_DEPTH = 4


class Background(Iterator[Any]):
    """Run an iterator in a thread of its own, at most ``depth`` items ahead of the consumer (a bounded queue).

    The live pipeline's two stages: decode + detect here, lift + write in the caller's thread, so they overlap on
    two cores (where the lifter lets go of Python's GIL while it computes: PyTorch and ONNX Runtime do; an
    AOTInductor package, torch 2.13, holds it, and then the stages barely overlap). Items come out in the source's
    order, unchanged, so the result is that of one thread. An exception the source raises comes out of ``next``
    where it happened in the stream (after the items before it). ``close()`` (also on garbage collection) stops the
    thread: it finishes the item in hand, then closes the source in its own thread (a camera is released).
    ``pending()`` takes the items already made without waiting for more (a stream stopped by Ctrl-C lifts them too).
    """

    _ITEM, _END, _ERROR = range(3)

    def __init__(self, source: Iterator[Any], depth: int = 4, name: str = "fastmixste-source") -> None:
        if depth < 1:
            raise ValueError(f"Background: depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, kind: int, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put(self._ITEM, item):
                    return
            self._put(self._END, None)
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, raised there)
            self._put(self._ERROR, exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == self._ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == self._ERROR:
            raise value
        raise StopIteration

    def pending(self) -> list[Any]:
        """Stop the thread; -> the items it had already made (in order), without waiting for more."""
        self._stop.set()
        items = []
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == self._ITEM:
                items.append(value)
        self.close()
        return items

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait (up to ``timeout`` s) for it to close the source."""
        self._stop.set()
        self._done = True
        while True:  # free a producer blocked on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)  # absent when __init__ refused its arguments
        if stop is not None:
            stop.set()
