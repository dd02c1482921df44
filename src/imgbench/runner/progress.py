"""A progress bar over the whole grid (done, not ok, running, time left) and one line per finished job.

On a terminal the bar redraws in place; written to a file or a pipe (a CI log, ``2> run.log``) there is no
bar, only one plain line per finished job, numbered ``[done/total]``, so logs hold no carriage-return frames.
Lines fit the terminal's width: a job's finding (did not learn) wraps, its error is cut (the summary at the end
has it whole).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Mapping

from tqdm import tqdm

from imgbench.schema import Status
from imgbench.terminal import plural, truncate, width, wrap

MIN_ERROR_CHARS = 40  # of a failed job's error beside its line; on a narrower terminal it goes below
ERROR_INDENT = "    "
ERROR_CHARS_OFF_TERMINAL = 120  # in a log: the summary at the end has the whole error


class GridProgress:
    """Thread-safe: executors report starts from worker threads.

    ``slots`` is the number of jobs the executor runs at once (``--jobs``). An executor frees a job's slot,
    and may start the next job, before this thread has been handed the finished job's row; the ``running``
    shown is therefore capped at ``slots``, the number that can really run.
    """

    def __init__(self, total: int, skipped: int = 0, enabled: bool = True, slots: int | None = None,
                 rerun: Mapping[str, str] | None = None) -> None:
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
            self._say(f"resuming: {skipped} of {plural(total, 'job')} already succeeded with this configuration and "
                      f"their files check out; skipped")
        for job_id, why in (rerun or {}).items():
            self._say(f"running again: {job_id} succeeded before, but its record cannot be trusted ({why})")
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
            self._say(job_line(row, "" if self.interactive else f"[{self.done}/{self.total}] "))
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

    def _say(self, text: str) -> None:
        if self.enabled:
            tqdm.write(wrap(text), file=sys.stderr)


def job_line(row: Mapping[str, Any], prefix: str = "") -> str:
    """``ok        keras-mnist_convnet__mnist__s0__1a2b3c4d   41 s  accuracy 0.9812``, then a finding that
    wraps (``did not learn: ...``) or an error cut to the terminal's width."""
    head = f"{prefix}{row['status']:<15} {row['job_id']}  {float(row['duration_s'] or 0):6.0f} s"
    if row["status"] == Status.OK and row.get("accuracy") is not None:
        line = f"{head}  accuracy {float(row['accuracy']):.4f}"
        return f"{line}  did not learn: {row['did_not_learn']}" if row.get("did_not_learn") else line
    error = " ".join(str(row.get("error") or "").split())
    columns = width()
    if not error:
        return head
    if columns is None:
        return f"{head}  {truncate(error, ERROR_CHARS_OFF_TERMINAL)}"
    if columns - len(head) - 2 >= MIN_ERROR_CHARS:
        return f"{head}  {truncate(error, columns - len(head) - 2)}"
    return f"{head}\n{ERROR_INDENT}{truncate(error, columns - len(ERROR_INDENT))}"  # too narrow beside it
