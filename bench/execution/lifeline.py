"""Worker processes that die with their launcher.

A local-executor worker blocks on its task queue, whose write end it holds itself, so it never
notices that the launcher was killed (kill -9, the OOM killer): orphans of about 1 GB each kept
running, re-parented to PID 1, and with them multiprocessing's resource tracker. The pool's
initializer, :func:`worker_init`, arms two mechanisms before the worker imports torch: Linux's
parent-death signal (SIGKILL when the parent dies) and, everywhere, a thread that ends the
worker within a second of its parent pid changing.

This module imports nothing heavy: unpickling the initializer in a new worker imports it, and
it must run before the worker spends seconds importing torch.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

#: seconds between two looks at the parent pid
WATCH_INTERVAL_S = 1.0


def worker_init(threads: int, parent: int | None = None) -> None:
    """``ProcessPoolExecutor`` initializer: die with ``parent``, log on lines of their own, then
    ``threads`` torch threads."""
    die_with_parent(parent)
    log_on_own_lines()
    import torch

    torch.set_num_threads(threads)


def die_with_parent(parent: int | None) -> None:
    """End this process when ``parent`` (the pid that started it) ends."""
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        except (OSError, AttributeError):  # no prctl: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="lifeline", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)


class _OwnLine:
    """A terminal stream whose writes first clear the current line: the launcher's progress bar
    redraws itself without a newline, so a worker's warning would otherwise be printed onto the
    end of the bar (tqdm redraws the bar below it at its next update)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write("\r\x1b[K" + text if text.strip() else text)

    def flush(self) -> None:
        self.stream.flush()


def log_on_own_lines(stream=None) -> None:
    """In a worker: warnings (a cache entry moved aside and rebuilt, ...) go to stderr as
    ``WARNING name: message`` on a line of their own when stderr is a terminal."""
    import logging

    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(_OwnLine(stream) if stream.isatty() else stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
