"""A progress bar over the whole grid (done, not ok, running, time left) and one line per finished job.

On a terminal the bar redraws in place; written to a file or a pipe (a CI log, ``2> run.log``) there is no
bar, only one plain line per finished job, numbered ``[done/total]``, so logs hold no carriage-return frames.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Mapping

from tqdm import tqdm

from imgbench.schema import Status

ERROR_CHARS_IN_LINE = 120


class GridProgress:
    """Thread-safe: executors report starts from worker threads.

    ``slots`` is the number of jobs the executor runs at once (``--jobs``). An executor frees a job's slot,
    and may start the next job, before this thread has been handed the finished job's row; the ``running``
    shown is therefore capped at ``slots``, the number that can really run.
    """

    def __init__(self, total: int, skipped: int = 0, enabled: bool = True, slots: int | None = None) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.not_ok = 0
        self.done = skipped
        self.total = total
        self.slots = slots
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=skipped, unit="job", desc="imgbench run", disable=not self.interactive,
                        file=sys.stderr, dynamic_ncols=True)
        if skipped:
            self._say(f"resuming: {skipped} of {total} jobs already succeeded with this configuration; skipped")
        self._refresh()

    def started(self, task: Any) -> None:
        with self.lock:
            self.running += 1
            self._refresh()

    def finished(self, row: Mapping[str, Any]) -> None:
        with self.lock:
            self.running = max(self.running - 1, 0)
            self.not_ok += row["status"] != Status.OK
            self.done += 1
            line = job_line(row)
            self._say(line if self.interactive else f"[{self.done}/{self.total}] {line}")
            self._refresh(done=1)

    def close(self) -> None:
        self.bar.close()

    @property
    def shown_running(self) -> int:
        return min(self.running, self.slots) if self.slots else self.running

    def _refresh(self, done: int = 0) -> None:
        ok = self.done - self.not_ok
        self.bar.set_postfix(ok=ok, not_ok=self.not_ok, running=self.shown_running, refresh=not done)
        if done:
            self.bar.update(done)

    def _say(self, line: str) -> None:
        if self.enabled:
            tqdm.write(line, file=sys.stderr)


def job_line(row: Mapping[str, Any]) -> str:
    """``ok        keras-mnist_convnet__mnist__s0__1a2b3c4d   41 s  accuracy 0.9812``"""
    head = f"{row['status']:<15} {row['job_id']}  {float(row['duration_s'] or 0):6.0f} s"
    if row["status"] == Status.OK and row.get("accuracy") is not None:
        return f"{head}  accuracy {float(row['accuracy']):.4f}"
    error = str(row.get("error") or "")
    return f"{head}  {error[:ERROR_CHARS_IN_LINE]}" if error else head
