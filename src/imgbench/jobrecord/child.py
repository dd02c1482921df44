"""The job process: ``python -m imgbench.jobrecord.child REQUEST SUPERVISOR_PID``.

:func:`imgbench.runner.execute.execute_job` starts it in the job folder, in a session of its own, with the
job's :class:`~imgbench.runner.execute.JobTask` in ``REQUEST``. It executes the notebook with papermill in a
kernel of this very Python (:mod:`imgbench.kernel`) and writes how that ended to ``execution.json``
(``schema.OUTCOME_JSON``): ``completed``, ``failed`` (a cell raised) or ``crashed`` (the kernel died, or did
not start), and when papermill started and returned; the supervisor turns that into the job's status and its
phase breakdown. If the supervisor dies, even by SIGKILL, it takes the kernel down and leaves.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from imgbench import schema
from imgbench.schema import NOTEBOOK_COMPLETED, Status
from imgbench.kernel import KernelHandle
from imgbench.paths import atomic_write_json
from imgbench.runner.execute import KILL_WAIT_S, POLL_S, JobTask, exit_text, while_running

KERNEL_START_TIMEOUT_S = 120
NOTEBOOK_KERNEL_NAME = "python3"  # papermill wants a name; the kernel itself is always sys.executable
# When the last cell has run, the notebook is saved and every file the job writes is complete: a graceful
# shutdown would only wait for the kernel's interpreter to tear down torch and friends.
KERNEL_SHUTDOWN = "immediate"


def _exit_if_orphaned(supervisor_pid: int, kernel: KernelHandle) -> None:
    """If the supervisor dies (even by SIGKILL), take the kernel down and leave: no orphan keeps writing."""
    while os.getppid() == supervisor_pid:
        time.sleep(POLL_S)
    # every descendant, listed before any is killed: the kernel, its workers, a kernel still starting
    for process in psutil.Process().children(recursive=True):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    kernel.remove_socket_dir()  # os._exit skips every cleanup
    os._exit(3)


def run_notebook(task: JobTask, kernel: KernelHandle) -> dict[str, str]:
    """Execute the notebook for ``task`` (in this process) in ``kernel``'s run and say how it ended."""
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            task.notebook, str(task.job_dir / schema.NOTEBOOK), parameters=task.parameters,
            kernel_name=NOTEBOOK_KERNEL_NAME, kernel_manager_class=kernel.manager_class,
            cwd=str(task.job_dir), progress_bar=False, log_output=task.log_output, request_save_on_cell_execute=True,
            start_timeout=KERNEL_START_TIMEOUT_S, shutdown_kernel=KERNEL_SHUTDOWN,
        )
    except PapermillExecutionError as exc:
        return {"status": Status.FAILED, "error": f"{exc.ename}: {exc.evalue} (notebook cell [{exc.exec_count}])"}
    except DeadKernelError:
        return {"status": Status.CRASHED, "error": f"the kernel died ({exit_text(kernel.exit_code(KILL_WAIT_S))})"
                                              f"{while_running(task.job_dir / schema.NOTEBOOK)}"}
    except Exception as exc:  # the kernel did not start, or papermill itself broke
        return {"status": Status.CRASHED, "error": f"{type(exc).__name__}: {exc}"}
    finally:  # a dead kernel skips the manager's own cleanup
        kernel.remove_socket_dir()
    return {"status": NOTEBOOK_COMPLETED, "error": ""}


def _main(request: str, supervisor_pid: int) -> int:
    kernel = KernelHandle()  # before the watcher starts, so that it can take this run's kernel down
    threading.Thread(target=_exit_if_orphaned, args=(supervisor_pid, kernel), daemon=True).start()
    task = JobTask.from_dict(json.loads(Path(request).read_text(encoding="utf-8")))
    if task.log_output:  # papermill logs each output through the "papermill" logger; stdout is runner.log
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    started = time.time()
    outcome = run_notebook(task, kernel)
    # wall-clock times, for the supervisor's phase breakdown (imgbench.engine.phases.JobTimes)
    atomic_write_json(task.job_dir / schema.OUTCOME_JSON,
                      {**outcome, "notebook_started": started, "notebook_ended": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], int(sys.argv[2])))
