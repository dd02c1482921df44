"""Kernels forked from a warm process: a job's kernel starts with torch, its framework and imgbench imported.

Importing the frameworks costs seconds per job (about 6 s of a small job's 10 s of harness on a 2-core CPU);
forking a process that has already imported them costs milliseconds. So the launcher keeps one *fork server*
per job environment (:class:`ForkServers`): ``python -m imgbench.forkserver SOCKET MODULES`` imports
``PRELOAD`` and the modules the jobs' environment names in ``PRELOAD_ENV`` (the engine's, and the frameworks of
the grid's model families: :mod:`imgbench.engine.frameworks`) once, then forks one kernel per request. The job
process asks for its kernel through :class:`imgbench.kernel.CurrentPythonKernelManager`, which falls back to
starting a fresh kernel when no server answers.

What keeps a forked kernel equal to a fresh one:

- the server computes nothing and never initialises CUDA (``PYTORCH_NVML_BASED_CUDA_CHECK``): a child may use
  the GPU, and the native thread pools are still unstarted;
- the server runs with the job's own environment (less the variables that change per job, ``PER_JOB_ENV``),
  so everything read at import time (thread counts, ``KERAS_BACKEND``, ``CUDA_VISIBLE_DEVICES``) is the job's;
  a job whose environment differs gets a server of its own;
- the kernel takes the job's environment, working directory and stdout/stderr (passed as file descriptors),
  leads a session of its own like a fresh kernel, and dies with the server (``PR_SET_PDEATHSIG``) or when the
  job process that asked for it is gone (the server kills it: timeouts and crashes leave no orphan);
- ``FORKED_KERNEL_ENV`` tells the engine, which records it in the job's provenance.

Linux only (``fork`` with these libraries loaded is safe there); ``IMGBENCH_FORK_KERNELS=0`` turns it off.
Imports no framework in the launcher: only the server process imports its modules.
"""

from __future__ import annotations

import atexit
import ctypes
import faulthandler
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Mapping

import psutil

PRELOAD = (  # what a job's kernel and notebook import, besides the engine's (imgbench.engine.frameworks)
    "ipykernel.kernelapp", "pandas", "matplotlib.pyplot", "imgbench.engine.job", "imgbench.jobrecord.display",
)
ADDRESS_ENV = "IMGBENCH_KERNEL_FORK_SERVER"  # the job process finds its server's socket here
PRELOAD_ENV = "IMGBENCH_KERNEL_PRELOAD"  # what else a server imports for these jobs: the launcher names the
# engine's modules and the grid's frameworks (imgbench.engine.frameworks), comma-separated
FORKED_KERNEL_ENV = "IMGBENCH_FORKED_KERNEL"  # "1" in a forked kernel's environment
SWITCH_ENV = "IMGBENCH_FORK_KERNELS"  # "0": every kernel starts fresh
SUPPORTED = sys.platform == "linux"
POLL_S = 0.1  # how often the server reaps its kernels and checks on the job processes that asked for them
STATUS_WAIT_S = 1.0  # for the status file of a kernel the server has just reaped
CLOSE_WAIT_S = 5.0  # for a server to leave once told to, before it is killed
REAP_WAIT_S = 3.0  # for the kernels a leaving server killed to be gone (within CLOSE_WAIT_S)
MAX_REQUEST_BYTES = 1 << 20
STD_FDS = 3  # stdin, stdout, stderr of the job process, passed to its kernel
PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15  # prctl(2)
KERNEL_PROCESS_NAME = "imgbench-kernel"  # a forked kernel's name in ps and top (its command line is the server's)


def enabled() -> bool:
    return SUPPORTED and os.environ.get(SWITCH_ENV, "1") != "0"


# -- the launcher's side: one server per job environment -----------------------------------------------------

class ForkServers:
    """The fork servers of this process, one per job environment; each started on first use."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.preload = preload
        self._lock = threading.Lock()
        self._servers: dict[frozenset[tuple[str, str]], tuple[subprocess.Popen, Path]] = {}

    def start(self, env: Mapping[str, str], per_job: tuple[str, ...]) -> tuple[subprocess.Popen, Path]:
        """The server (process, socket path) for jobs run with ``env`` (its ``per_job`` variables left out),
        started now if there is none; it may still be starting."""
        server_env = {name: value for name, value in env.items() if name not in per_job}
        key = frozenset(server_env.items())
        with self._lock:
            known = self._servers.pop(key, None)
            if known is not None:
                if known[0].poll() is None:
                    self._servers[key] = known
                    return known
                _remove_socket(known[1])  # it died: a new one takes its place
            folder = Path(tempfile.mkdtemp(prefix="imgbench-forks-"))
            path = folder / "server.sock"
            preload = (*self.preload, *(name for name in server_env.get(PRELOAD_ENV, "").split(",") if name))
            process = subprocess.Popen([sys.executable, "-m", __name__, str(path), ",".join(preload)],
                                       env=server_env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None,
                                       start_new_session=True)  # Ctrl-C goes to the launcher, which stops it
            self._servers[key] = (process, path)
            return process, path

    def address(self, env: Mapping[str, str], per_job: tuple[str, ...]) -> str:
        """The socket of the server for jobs run with ``env`` (:meth:`start`), once it listens. The socket is
        bound before the server imports anything: a kernel requested meanwhile waits for the imports instead
        of racing them."""
        process, path = self.start(env, per_job)
        _wait_for_socket(path, process)
        return str(path)

    def running(self) -> str | None:
        """The socket of a server that is up, for a kernel whose environment it need not match (the report's:
        the grid's server already imported pandas and matplotlib), or None."""
        with self._lock:
            servers = list(self._servers.values())
        return next((str(path) for process, path in servers if process.poll() is None and path.exists()), None)

    def close(self) -> None:
        """Stop every server (their kernels die with them) and remove their sockets."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for process, path in servers:
            process.terminate()
        for process, path in servers:
            try:
                process.wait(CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _remove_socket(path)  # a server that had to be killed left it


def _remove_socket(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass


def _wait_for_socket(path: Path, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the kernel fork server did not start (exit status {process.poll()})")
        time.sleep(0.005)


SERVERS = ForkServers()  # the launcher's, or a Dask worker's
atexit.register(SERVERS.close)


# -- the job process's side: ask for a kernel, and watch it like a Popen ---------------------------------------

class ForkedKernel:
    """A kernel forked by a server: the part of ``subprocess.Popen`` that jupyter_client's provisioner uses.

    It is the server's child, not ours: its exit status comes from the file the server writes when it reaps it.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, status_path: Path) -> None:
        self.pid, self.status_path = pid, status_path
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._status()
            if self.returncode is None and not psutil.pid_exists(self.pid):  # reaped (not even a zombie)
                deadline = time.monotonic() + STATUS_WAIT_S  # the server writes the status right after
                while (code := self._status()) is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.returncode = -signal.SIGKILL if code is None else code  # None: the server died too
        return self.returncode

    def _status(self) -> int | None:
        try:
            return int(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def request_kernel(address: str, argv: list[str], env: Mapping[str, str], cwd: str, status_path: Path) -> ForkedKernel:
    """Ask the server at ``address`` for a kernel running ``ipykernel`` with ``argv``, in ``cwd`` with ``env``
    and this process's stdin, stdout and stderr. Raises OSError when no server answers or it refuses."""
    request = {"argv": argv, "env": dict(env), "cwd": cwd, "requester": os.getpid(),
               "status_path": str(status_path), "executable": sys.executable}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(address)
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        connection.shutdown(socket.SHUT_WR)
        reply = json.loads(_read_all(connection) or b"{}")
    if "pid" not in reply:
        raise OSError(f"the kernel fork server refused: {reply.get('error', 'no reply')}")
    return ForkedKernel(int(reply["pid"]), status_path)


def _read_all(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- the server ----------------------------------------------------------------------------------------------

def _preload(names: list[str]) -> None:
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # torch.cuda.is_available() without initialising CUDA
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def serve(path: str, preload: list[str]) -> None:
    """Bind ``path``, import ``preload``, then fork a kernel per request until the launcher is gone."""
    launcher = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    _preload(preload)
    # numpy's and scipy's BLAS and jemalloc keep native threads; all three handle fork (pthread_atfork)
    warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
    listener.settimeout(POLL_S)
    kernels: dict[int, tuple[int, Path]] = {}  # pid -> (the job process that asked, its status file)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ForkServers.close: leave through the cleanup below
    try:
        while os.getppid() == launcher:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                connection = None
            if connection is not None:
                with connection:
                    _answer(connection, listener, kernels)
            _reap(kernels)
    finally:  # also when the launcher or Dask worker that started it died without closing it
        for pid in kernels:
            _kill_group(pid)
        _reap_killed(kernels)
        _remove_socket(Path(path))


def _answer(connection: socket.socket, listener: socket.socket, kernels: dict[int, tuple[int, Path]]) -> None:
    connection.settimeout(10)
    try:
        message, fds, _flags, _address = socket.recv_fds(connection, MAX_REQUEST_BYTES, STD_FDS)
        request = json.loads(message)
    except (OSError, ValueError) as exc:
        _reply(connection, {"error": f"unreadable request: {exc}"})
        return
    try:
        if request.get("executable") != sys.executable:
            _reply(connection, {"error": f"this server runs {sys.executable}, not {request.get('executable')}"})
            return
        if _cuda_initialised():
            _reply(connection, {"error": "CUDA was initialised while importing; a forked kernel could not use it"})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            connection.close()  # else the job process would wait for this reply's end as long as the kernel lives
            _become_kernel(request, fds)  # never returns
        kernels[pid] = (int(request["requester"]), Path(request["status_path"]))
        _reply(connection, {"pid": pid})
    finally:
        for fd in fds:
            os.close(fd)


def _reply(connection: socket.socket, message: Mapping[str, Any]) -> None:
    try:
        connection.sendall(json.dumps(message).encode())
    except OSError:
        pass


def _become_kernel(request: Mapping[str, Any], fds: list[int]) -> None:
    code = 1
    try:
        os.setsid()  # a session of its own, as jupyter_client starts kernels: signals go to its group
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's handler is not a fresh kernel's
        libc = ctypes.CDLL(None, use_errno=True)  # Linux: servers run only there (SUPPORTED)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(PR_SET_NAME, KERNEL_PROCESS_NAME.encode())
        for target, fd in zip(range(STD_FDS), fds):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[FORKED_KERNEL_ENV] = "1"
        if os.environ.get("PYTHONFAULTHANDLER"):  # read at interpreter start: the server's, on its stderr
            faulthandler.enable()
        from ipykernel import kernelapp

        # the job process is its parent, as for a fresh kernel (JPY_PARENT_PID was read when the server imported)
        kernelapp.launch_new_instance(argv=[*request["argv"], f"--IPKernelApp.parent_handle={request['requester']}"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _reap(kernels: dict[int, tuple[int, Path]]) -> None:
    """Record the exit status of every kernel that ended; kill those whose job process is gone."""
    for pid, (requester, status_path) in list(kernels.items()):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            del kernels[pid]
            try:
                # a few bytes, read until they parse; not paths.atomic_write_text, which would recreate the folder
                # that a finished job process has removed
                status_path.write_text(str(os.waitstatus_to_exitcode(status)), encoding="utf-8")
            except OSError:  # the job process already removed its folder
                pass
        elif not _alive(requester):
            _kill_group(pid)


def _reap_killed(kernels: dict[int, tuple[int, Path]]) -> None:
    """Wait, up to ``REAP_WAIT_S``, for the kernels just killed to be gone: whoever closed the server may look
    for a timed-out job's processes as soon as it returns, and a killed process takes a moment to end."""
    deadline = time.monotonic() + REAP_WAIT_S
    while kernels and time.monotonic() < deadline:
        _reap(kernels)
        if kernels:
            time.sleep(0.01)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    try:
        serve(argv[1], [name for name in argv[2].split(",") if name])
    except SystemExit:  # SIGTERM from ForkServers.close; serve has cleaned up
        pass
    # leave without finalising the interpreter: unloading what PRELOAD imported takes over a second, which the
    # launcher would wait for at the end of every grid
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
