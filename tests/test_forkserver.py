"""Kernels forked from a warm server (imgbench.forkserver): they run a notebook like a fresh kernel, in the
job's folder, environment and log, and no kernel outlives the job process that asked for it or the launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from imgbench import forkserver
from imgbench.forkserver import ADDRESS_ENV, FORKED_KERNEL_ENV, ForkServers

pytestmark = [pytest.mark.notebook,
              pytest.mark.skipif(not forkserver.SUPPORTED, reason="fork servers run on Linux only")]

# ipykernel, and one module no kernel imports by itself: it is loaded in a forked kernel only if preloaded
PRELOAD = ("ipykernel.kernelapp", "wave")
GONE_WAIT_S = 10


def _gone(pid: int, wait_s: float = GONE_WAIT_S) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not forkserver._alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def servers():
    made = ForkServers(PRELOAD)
    yield made
    made.close()


# Runs a one-cell notebook through papermill with imgbench's kernel manager, as the job process does, with
# stdout and stderr going to LOG; the cell records what its kernel sees.
NOTEBOOK_RUN = textwrap.dedent("""
    import json, sys
    import nbformat, papermill
    from imgbench.kernel import KernelHandle
    folder, cell = sys.argv[1:3]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbformat.write(notebook, folder + "/in.ipynb")
    kernel = KernelHandle()
    papermill.execute_notebook(folder + "/in.ipynb", folder + "/out.ipynb", kernel_name="python3",
                               kernel_manager_class=kernel.manager_class, cwd=folder, progress_bar=False,
                               shutdown_kernel="immediate")
""")


SEEN = textwrap.dedent("""
    import json, os, sys
    os.write(2, b"written-to-fd-2\\n")
    seen = {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "marker": os.environ.get("MARKER"),
            "preloaded": "wave" in sys.modules, "name": open("/proc/self/comm").read().strip()}
""") + f"seen['forked'] = os.environ.get({FORKED_KERNEL_ENV!r})\n"
SAVE = 'json.dump(seen, open("seen.json", "w"))'


def _run_notebook(folder: Path, address: str | None, cell: str = "") -> tuple[dict, str]:
    env = {**os.environ, "MARKER": "job-42"}
    env.pop(ADDRESS_ENV, None)
    if address is not None:
        env[ADDRESS_ENV] = address
    with open(folder / "runner.log", "wb") as log:
        done = subprocess.run([sys.executable, "-c", NOTEBOOK_RUN, str(folder), SEEN + cell + SAVE], env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=120)
    text = (folder / "runner.log").read_text(errors="replace")
    assert done.returncode == 0, text
    return json.loads((folder / "seen.json").read_text()), text


def test_a_forked_kernel_runs_the_notebook_in_the_jobs_folder_environment_and_log(servers, tmp_path):
    address = servers.address(dict(os.environ), ())
    [(server, _)] = servers._servers.values()
    seen, log = _run_notebook(tmp_path, address)
    assert seen["ppid"] == server.pid  # forked by the server...
    assert seen["preloaded"] is True  # ...after it imported what it preloads
    assert seen["forked"] == "1" and seen["name"] == forkserver.KERNEL_PROCESS_NAME  # as ps and top show it
    assert seen["cwd"] == str(tmp_path) and seen["marker"] == "job-42"  # the job's folder and environment
    assert "written-to-fd-2" in log  # the job process's stderr: its runner.log
    assert not forkserver._alive(seen["pid"])  # shut down with the notebook


def test_without_a_server_that_answers_the_kernel_starts_fresh_and_says_why(tmp_path):
    seen, log = _run_notebook(tmp_path, str(tmp_path / "no-such.sock"))
    assert seen["forked"] is None and seen["preloaded"] is False and seen["marker"] == "job-42"
    assert "starting a fresh kernel, the fork server did not give one" in log


def test_one_server_per_job_environment_less_the_per_job_variables(servers):
    first = servers.address({**os.environ, "SLOT": "0", "PER_JOB": "a"}, ("PER_JOB",))
    again = servers.address({**os.environ, "SLOT": "0", "PER_JOB": "b"}, ("PER_JOB",))
    other = servers.address({**os.environ, "SLOT": "1", "PER_JOB": "a"}, ("PER_JOB",))
    assert first == again != other
    processes = [process for process, _ in servers._servers.values()]
    assert len(processes) == 2
    servers.close()
    assert all(process.poll() is not None for process in processes)
    assert not Path(first).exists() and not Path(other).exists()


def test_a_server_also_imports_what_the_jobs_environment_names(tmp_path):
    made = ForkServers(("ipykernel.kernelapp",))  # "wave" comes only from the environment
    try:
        address = made.address({**os.environ, forkserver.PRELOAD_ENV: "wave,no_such_module"}, ())
        seen, _ = _run_notebook(tmp_path, address)
    finally:
        made.close()
    assert seen["forked"] == "1" and seen["preloaded"] is True  # and a module that is not installed is skipped


def test_start_returns_at_once_and_address_then_finds_that_server(servers):
    process, path = servers.start(dict(os.environ), ())
    assert process.poll() is None and servers.address(dict(os.environ), ()) == str(path)
    assert [server for server, _ in servers._servers.values()] == [process]


def test_a_server_stops_at_once_however_slowly_its_imports_would_unload(tmp_path):
    # a preloaded module whose teardown takes seconds, as torch's and Keras' together take over one
    (tmp_path / "slow_teardown.py").write_text("import atexit, time\natexit.register(time.sleep, 30)\n")
    made = ForkServers((*PRELOAD, "slow_teardown"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    address = made.address(env, ())
    _run_notebook(tmp_path, address)  # answered: its imports are done
    [(server, _)] = made._servers.values()
    began = time.monotonic()
    made.close()
    assert time.monotonic() - began < 2.0 and server.returncode == 0  # not killed after close's wait
    assert not Path(address).parent.exists()  # its socket folder went with it


REQUESTER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from imgbench import forkserver
    folder = Path(sys.argv[1])
    address = sys.argv[2] if len(sys.argv) > 2 else forkserver.ForkServers(("ipykernel.kernelapp",)).address(
        dict(os.environ), ())
    kernel = forkserver.request_kernel(address, ["-f", str(folder / "kernel.json")], dict(os.environ),
                                       str(folder), folder / "kernel.exit")
    print(kernel.pid, flush=True)
    time.sleep(600)
""")


def _requester(tmp_path: Path, *address: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-c", REQUESTER, str(tmp_path), *address], stdout=subprocess.PIPE,
                               text=True)
    return process, int(process.stdout.readline())


def test_a_kernel_dies_with_the_job_process_that_asked_for_it(servers, tmp_path):
    requester, kernel = _requester(tmp_path, servers.address(dict(os.environ), ()))
    assert forkserver._alive(kernel)
    requester.kill()  # as the launcher kills a job that ran past its timeout
    requester.wait()
    assert _gone(kernel)


def test_the_exit_status_of_a_forked_kernel_reaches_the_job_process(servers, tmp_path):
    requester, pid = _requester(tmp_path, servers.address(dict(os.environ), ()))
    try:
        kernel = forkserver.ForkedKernel(pid, tmp_path / "kernel.exit")
        assert kernel.poll() is None
        os.kill(pid, signal.SIGSEGV)
        assert kernel.wait(GONE_WAIT_S) == -signal.SIGSEGV  # written by the server, which reaped it
    finally:
        requester.kill()
        requester.wait()


def test_no_kernel_is_left_running_once_close_returns(tmp_path):
    # the launcher checks for a timed-out job's processes right after its grid ends: the server must have
    # reaped the kernels it killed before it leaves, not leave them dying
    made = ForkServers(PRELOAD)
    requester, kernel = _requester(tmp_path, made.address(dict(os.environ), ()))
    try:
        made.close()
        assert not psutil.pid_exists(kernel)
    finally:
        requester.kill()
        requester.wait()


def test_no_server_or_kernel_outlives_a_launcher_killed_by_sigkill(tmp_path):
    launcher, kernel = _requester(tmp_path)  # its own ForkServers: the server is its child
    [server] = psutil.Process(launcher.pid).children()
    socket_path = Path(server.cmdline()[3])  # python -m imgbench.forkserver SOCKET PRELOAD
    assert socket_path.exists()
    launcher.kill()
    launcher.wait()
    assert _gone(server.pid) and _gone(kernel)
    assert not socket_path.parent.exists()  # the server removed its socket's folder as it left


def test_a_server_refuses_a_kernel_of_another_python(servers, tmp_path, monkeypatch):
    address = servers.address(dict(os.environ), ())
    monkeypatch.setattr(sys, "executable", "/elsewhere/python3")
    with pytest.raises(OSError, match="this server runs .* not /elsewhere/python3"):
        forkserver.request_kernel(address, ["-f", str(tmp_path / "kernel.json")], dict(os.environ), str(tmp_path),
                                  tmp_path / "kernel.exit")


@pytest.mark.gpu
def test_a_kernel_forked_after_torch_was_imported_computes_on_the_gpu(tmp_path):
    servers = ForkServers(("torch", *PRELOAD))  # the server imports torch but never initialises CUDA
    try:
        seen, log = _run_notebook(tmp_path, servers.address(dict(os.environ), ()), textwrap.dedent("""
            import torch
            seen["sum"] = torch.ones(1000, device="cuda").sum().item()
            seen["device"] = torch.cuda.get_device_name()
        """))
    finally:
        servers.close()
    assert seen["forked"] == "1" and seen["sum"] == 1000.0 and seen["device"]
