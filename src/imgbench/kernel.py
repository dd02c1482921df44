"""The Jupyter kernel every notebook runs in, a job's and the report's: this Python (``sys.executable``),
talking over ipc sockets.

Using the running interpreter means a job never picks up whatever kernelspec happens to be named
``python3``. Unix-domain (ipc) sockets in a private folder per job replace TCP ports, so jobs started at
the same moment cannot race for the same port.

Where the job's launcher keeps a fork server (:mod:`imgbench.forkserver`), a job's kernel is forked from it,
with the frameworks already imported, and so is the report's at the end of a grid; when none answers, the
kernel starts fresh.

A kernel that dies hard must leave its trace: it inherits the job process's stdout and stderr (the job's
``runner.log``), runs with ``PYTHONFAULTHANDLER=1``, and ipykernel is told not to capture the process-level
stderr into the notebook. That capture would swallow a crash's faulthandler stack: it goes through a pipe
read by a thread of the very process that is dying.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from imgbench import forkserver

KERNEL_NAME = "imgbench-python"
KERNEL_ARGS = ("--IPKernelApp.capture_fd_output=False",)  # fd 2 stays runner.log, where faulthandler writes
KERNEL_ENV = {"PYTHONFAULTHANDLER": "1"}  # a segfault, abort or fatal error prints every thread's stack
KERNEL_MODULE = ("-m", "ipykernel_launcher")  # what follows it in the kernel's command is ipykernel's argv
EXIT_STATUS_FILE = "kernel.exit"  # where a fork server writes the exit status of the kernel it forked


def socket_dir_prefix(pid: int) -> str:
    """How the socket folders of process ``pid``'s kernels begin (in the temporary folder)."""
    return f"imgbench-kernel-{pid}-"


def remove_socket_dirs(pid: int) -> None:
    """Remove the socket folders of process ``pid``'s kernels: what a job process killed by its supervisor (a
    timeout, Ctrl-C) could not remove itself."""
    for folder in Path(tempfile.gettempdir()).glob(socket_dir_prefix(pid) + "*"):
        shutil.rmtree(folder, ignore_errors=True)


class ForkingProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, except that the kernel is forked by the job's fork server when one
    is named in ``forkserver.ADDRESS_ENV`` and answers (a fresh kernel is started otherwise)."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert isinstance(self.parent, CurrentPythonKernelManager)  # the manager that made this provisioner
        address = self.parent.fork_server or os.environ.get(forkserver.ADDRESS_ENV)
        if address and forkserver.enabled() and tuple(cmd[1:3]) == KERNEL_MODULE:
            cwd = str(kwargs.get("cwd") or os.getcwd())
            try:
                kernel = forkserver.request_kernel(address, cmd[3:], kwargs.get("env") or os.environ, cwd,
                                                   self.parent.socket_dir / EXIT_STATUS_FILE)
            except OSError as exc:  # the launcher's server is gone or refused: a fresh kernel loses nothing
                print(f"imgbench: starting a fresh kernel, the fork server did not give one ({exc})",
                      file=sys.stderr, flush=True)
            else:
                self.process = kernel  # type: ignore[assignment]  # the part of Popen the provisioner uses
                self.pid = self.pgid = kernel.pid  # the kernel leads its own session
                self.cwd = cwd
                return self.connection_info
        return await super().launch_kernel(cmd, **kwargs)


class CurrentPythonKernelManager(AsyncKernelManager):
    """An ipykernel started with ``sys.executable``; its Popen is kept to read its exit status later."""

    kernel_process: Any = None  # subprocess.Popen of the kernel, once launched
    kernel_args: tuple[str, ...] = KERNEL_ARGS
    fork_server: str | None = None  # the socket of the fork server to ask for the kernel; None: ADDRESS_ENV's

    def __init__(self, **kwargs: Any) -> None:
        # A short private folder: socket paths must stay under ~100 characters.
        self.socket_dir = Path(tempfile.mkdtemp(prefix=socket_dir_prefix(os.getpid())))
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("connection_file", str(self.socket_dir / "kernel.json"))
        super().__init__(**kwargs)

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", *self.kernel_args],
            display_name=f"Python ({sys.executable})", language="python", name=KERNEL_NAME,
        )

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        if self.provisioner is None:  # jupyter_client's factory would make a LocalProvisioner
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", None) or str(uuid.uuid4())
            self.provisioner = ForkingProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            self.remove_socket_dir()

    def remove_socket_dir(self) -> None:
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        kw["env"] = {**kw.get("env", os.environ), **KERNEL_ENV}
        await super()._async_launch_kernel(kernel_cmd, **kw)
        self.kernel_process = getattr(self.provisioner, "process", None)


class ReportKernelManager(CurrentPythonKernelManager):
    """The report notebook's kernel, which shares the launcher's terminal rather than a job's runner.log:
    ipykernel keeps capturing its own fd output, so its log lines (such as the interrupt jupyter_client sends
    before shutting a kernel down) stay out of the user's terminal."""

    kernel_args = ()

    @classmethod
    def forked_from(cls, fork_server: str | None) -> type[ReportKernelManager]:
        """This manager, its kernel forked from the server at ``fork_server`` (None: started fresh)."""
        return cls if fork_server is None else type(cls.__name__, (cls,), {"fork_server": fork_server})


class KernelHandle:
    """The kernel of one notebook run, for whoever must clean up after it.

    papermill builds the kernel manager itself from a class, so each handle gives its run a class of its own,
    ``manager_class``, whose instance records itself here: the job process reads a dead kernel's exit status
    from it, and removes its socket folder however the run ended (a dead kernel skips the manager's cleanup).
    """

    def __init__(self) -> None:
        self.manager: CurrentPythonKernelManager | None = None
        handle = self

        class RecordedKernelManager(CurrentPythonKernelManager):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                handle.manager = self

        self.manager_class: type[CurrentPythonKernelManager] = RecordedKernelManager

    def exit_code(self, wait_s: float) -> int | None:
        """The kernel process's exit status, waiting up to ``wait_s`` for it; None when no kernel was launched
        or it is still running."""
        process = self.manager.kernel_process if self.manager is not None else None
        try:
            return process.wait(wait_s) if process is not None else None
        except subprocess.TimeoutExpired:
            return None

    def remove_socket_dir(self) -> None:
        if self.manager is not None:
            self.manager.remove_socket_dir()
