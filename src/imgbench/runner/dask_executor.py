"""The ``dask`` executor: each job of a grid runs as one task on a Dask distributed cluster.

``imgbench run --executor dask --scheduler tcp://HOST:8786`` (or ``IMGBENCH_DASK_SCHEDULER``) sends the
jobs to that scheduler's workers; without an address a :class:`distributed.LocalCluster` is started on this
machine (one worker per GPU, else ``--jobs`` CPU workers), so the same command works on a laptop.

How one job travels
-------------------
1. The launcher submits :func:`run_on_worker` with the picklable :class:`JobTask` and the notebook's bytes
   (the worker may not have the launcher's files). A job that wants a GPU asks for the worker resource
   ``GPU=1``, so a worker started with ``--resources GPU=n`` runs at most ``n`` of them at once.
2. On the worker, :func:`imgbench.runner.execute.execute_job` runs the job into a temporary folder in the
   worker's ``local_directory``; the kernel runs there. The finished folder comes back as a tar in memory
   beside the results.csv row (whose paths are relative to OUT, so they are the launcher's too).
3. The launcher unpacks it beside ``OUT/jobs/<job-id>/`` and renames it into place, so the folder (and its
   ``job.json``) appears whole or not at all, whether or not the workers share the launcher's filesystem.
   A job that ran twice (a retry) is simply replaced: one folder, one row.

A worker that dies mid-job (killed, out of memory, node lost) gets the job rescheduled by the scheduler on
another worker, up to its ``allowed-failures``; after that the job is recorded as ``crashed``. Ctrl-C (or a
launcher that goes away) cancels the tasks, and a running job notices and kills its kernel. ``distributed`` is
imported inside the functions that use it, so the module loads without the ``dask`` extra.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from imgbench import schema
from imgbench.engine.threads import thread_env
from imgbench.errors import UsageError
from imgbench.hookspecs import hookimpl
from imgbench.paths import CACHE_DIR_ENV, DATA_DIR_ENV
from imgbench.plugins import PLUGINS_DIR_ENV
from imgbench.runner.execute import JobTask, execute_job
from imgbench.runner.executors import OnResult, OnStart, check_device_indices, job_device, visible_gpus, wants_gpu
from imgbench.runner.results import make_row, write_record
from imgbench.specs import Executor, ExecutorOption, ExecutorSpec

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client, Future, LocalCluster

SCHEDULER_ENV = "IMGBENCH_DASK_SCHEDULER"
INSTALL_HINT = "pip install imgbench[dask]"
GPU_RESOURCE = "GPU"
ALLOWED_FAILURES = 2  # worker deaths one job may cause before it is recorded as crashed (our LocalCluster)
DASHBOARD_ADDRESS = ":0"  # any free port: a second grid on this machine must not collide with the first
WORKER_SATURATION = 1.0  # tasks the scheduler sends a one-thread worker at once (our LocalCluster)
TASK_RETRIES = 1  # reruns after run_on_worker itself raised (e.g. a full disk); job faults are rows, not errors
CONNECT_TIMEOUT_S = 30
FIRST_WORKER_TIMEOUT_S = 600  # a batch-queue cluster (dask-jobqueue) may take minutes to get its first node
STOP_POLL_S = 1.0  # how often a running job checks whether the launcher cancelled it
STARTED_TOPIC = "imgbench-job-started"  # worker -> launcher event: a job really started (progress bar)
SCHEDULER_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|ws|wss|inproc)://)?(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)(?::\d+)?$")
NOTEBOOK_ON_WORKER = "benchmark.ipynb"
MACHINE_LOCAL_ENV = (DATA_DIR_ENV, CACHE_DIR_ENV)  # a worker's own setting of these wins over the launcher's
DONE_STATES = ("cancelled", "released", "forgotten")  # worker task states after the launcher let go


def import_distributed() -> ModuleType:
    """``distributed``, or a UsageError that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise UsageError(f"the dask executor needs Dask distributed, which is not installed "
                         f"({exc}); install it with: {INSTALL_HINT}") from exc
    return distributed


def check_scheduler_address(address: str) -> str:
    """``tcp://host:8786``, ``tls://...``, or ``host:port``; anything else is a UsageError."""
    address = address.strip()
    if not SCHEDULER_ADDRESS.match(address):
        raise UsageError(f"--scheduler {address!r} is not a Dask scheduler address; use one like "
                         f"tcp://HOST:8786 (what `dask scheduler` prints)")
    return address


class DaskExecutor(Executor[JobTask]):
    """Runs every job as one Dask task, on the cluster at ``scheduler`` or on a LocalCluster it starts.

    ``workers`` and ``gpus`` shape the LocalCluster only; an existing cluster's workers decide for
    themselves. ``local_directory`` is the LocalCluster workers' scratch space (jobs run there).
    """

    def __init__(self, scheduler: str | None = None, workers: int = 1, gpus: Sequence[str] = (),
                 local_directory: str | os.PathLike | None = None) -> None:
        self.scheduler = scheduler
        self.workers = workers
        self.gpus = tuple(gpus)
        self.local_directory = str(local_directory) if local_directory else None

    def check(self, tasks: Sequence[JobTask]) -> None:
        """Nothing to refuse yet: which jobs can have a GPU is known once the cluster's workers answer, so
        ``run`` checks that."""

    def run(self, tasks: Sequence[JobTask], on_result: OnResult, on_start: OnStart | None = None) -> None:
        if not tasks:
            return
        distributed = import_distributed()
        notebooks = {path: Path(path).read_bytes() for path in {task.notebook for task in tasks}}
        with self._client(distributed) as client:
            gpu_cluster = self._wait_for_workers(client)
            check_gpu_jobs(tasks, gpu_cluster)
            if self.gpus:  # our LocalCluster pins each worker to one GPU, which it sees as cuda:0
                check_device_indices(tasks)
            slots = host_slots(client.scheduler_info(n_workers=-1)["workers"], len(tasks))
            started = _StartTracker(tasks, on_start)
            client.subscribe_topic(STARTED_TOPIC, started.event)
            futures = {self._submit(client, task, notebooks[task.notebook], gpu_cluster, slots): task
                       for task in tasks}
            try:
                for future in distributed.as_completed(futures):
                    task = futures[future]
                    row = collect(future, task)
                    started.ensure(task)
                    on_result(task, row)
            except BaseException:
                client.cancel(list(futures))  # running jobs see their task cancelled and kill their kernels
                raise

    def _submit(self, client: "Client", task: JobTask, notebook: bytes, gpu_cluster: bool,
                slots: dict[str, int]) -> "Future":
        # A fresh key per submission: a rerun of the same job never collides with a forgotten earlier one.
        return client.submit(run_on_worker, task, notebook, self.gpus, slots, pure=False, retries=TASK_RETRIES,
                             key=f"imgbench-{task.job.job_id}-{uuid.uuid4().hex[:8]}",
                             resources=job_resources(task, gpu_cluster))

    @contextmanager
    def _client(self, distributed: ModuleType) -> Iterator["Client"]:
        if self.scheduler:
            try:
                client = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {self.scheduler} ({exc}); start one with "
                                 f"`dask scheduler`, or leave out --scheduler/{SCHEDULER_ENV} to run a "
                                 f"LocalCluster on this machine") from exc
            with client:
                yield client
            return
        with start_local_cluster(self.workers, self.gpus, self.local_directory) as cluster:
            with distributed.Client(cluster) as client:
                yield client

    def _wait_for_workers(self, client: "Client") -> bool:
        """Wait for the first worker; say whether any worker offers the GPU resource."""
        try:
            client.wait_for_workers(1, timeout=FIRST_WORKER_TIMEOUT_S)
        except TimeoutError as exc:
            scheduler = client.scheduler
            assert scheduler is not None  # a client that waited for workers is connected to one
            raise UsageError(f"no Dask worker joined the scheduler at {scheduler.address} within "
                             f"{FIRST_WORKER_TIMEOUT_S} s; start workers with `dask worker "
                             f"{scheduler.address}`") from exc
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        return any(info.get("resources", {}).get(GPU_RESOURCE, 0) > 0 for info in workers)


class _StartTracker:
    """Calls ``on_start`` once per job, when its first attempt starts (a retried job starts again)."""

    def __init__(self, tasks: Sequence[JobTask], on_start: OnStart | None) -> None:
        self.by_id = {task.job.job_id: task for task in tasks}
        self.on_start = on_start
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def event(self, event: tuple[float, Any]) -> None:
        task = self.by_id.get(str(event[1]))
        if task is not None:
            self.ensure(task)

    def ensure(self, task: JobTask) -> None:
        with self.lock:
            first = task.job.job_id not in self.seen
            self.seen.add(task.job.job_id)
        if first and self.on_start is not None:
            self.on_start(task)


def start_local_cluster(workers: int, gpus: Sequence[str] = (), local_directory: str | None = None,
                        allowed_failures: int = ALLOWED_FAILURES) -> "LocalCluster":
    """A LocalCluster of worker processes, one job at a time each: one per GPU (``GPU=1``), else ``workers``."""
    import dask
    from distributed import LocalCluster

    # Saturation 1: a worker holds only the job it runs, so a job waits at the scheduler for the first free
    # worker, and a dying worker takes no queued job's retry budget with it.
    with dask.config.set({"distributed.scheduler.worker-saturation": WORKER_SATURATION}):
        return LocalCluster(
            n_workers=len(gpus) or workers, threads_per_worker=1, processes=True, dashboard_address=DASHBOARD_ADDRESS,
            resources={GPU_RESOURCE: 1} if gpus else None, local_directory=local_directory,
            scheduler_kwargs={"allowed_failures": allowed_failures}, silence_logs=logging.ERROR,
        )


def job_resources(task: JobTask, gpu_cluster: bool) -> dict[str, int] | None:
    """``{"GPU": 1}`` for a job that will use a GPU: ``device=cuda*``, or ``auto`` on a cluster that has GPUs."""
    return {GPU_RESOURCE: 1} if wants_gpu(job_device(task), gpu_cluster) else None


def host_slots(workers: dict[str, dict[str, Any]], n_tasks: int) -> dict[str, int]:
    """Worker address -> how many jobs may run at once on that worker's machine (the threads of all its
    workers, which share its CPU), at most the number of jobs: each job's thread share and ``concurrency``."""
    per_host: dict[str, int] = {}
    for address, info in workers.items():
        host = info.get("host") or address
        per_host[host] = per_host.get(host, 0) + int(info.get("nthreads") or 1)
    return {address: max(1, min(n_tasks, per_host[info.get("host") or address]))
            for address, info in workers.items()}


def check_gpu_jobs(tasks: Sequence[JobTask], gpu_cluster: bool) -> None:
    """A job asking for CUDA on a cluster without GPU workers would wait forever: refuse to send it."""
    needs_gpu = [task.job.job_id for task in tasks if job_resources(task, gpu_cluster)]
    if needs_gpu and not gpu_cluster:
        raise UsageError(f"{len(needs_gpu)} jobs ask for a CUDA device (first: {needs_gpu[0]}) but no worker of the "
                         f"cluster offers the {GPU_RESOURCE} resource; start GPU workers with `dask worker ... "
                         f"--resources {GPU_RESOURCE}=1`, or set device=cpu")


def collect(future: "Future", task: JobTask) -> dict[str, Any]:
    """The row of a finished task; its job folder is moved into the launcher's OUT/jobs/<job-id>/."""
    try:
        row, archive = future.result()
    except Exception as exc:  # the workers kept dying (KilledWorker), or the task itself broke
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            error = f"every Dask worker that ran this job died during it ({exc}); see the workers' logs"
        else:
            error = f"the Dask task failed on the worker: {type(exc).__name__}: {exc}"
        return record_crash(task, error)
    unpack_job_dir(archive, task.job_dir)
    return row


def record_crash(task: JobTask, error: str) -> dict[str, Any]:
    """Write a job folder holding only ``job.json`` with a ``crashed`` row, as execute_job would."""
    row = make_row(task.job, status=schema.Status.CRASHED, error=error, metrics=None, duration_s=0.0, notebook="")
    staging = _staging_dir(task.job_dir)
    write_record(staging, task.job, row)
    replace_dir(staging, task.job_dir)
    return row


# -- on the worker -----------------------------------------------------------------------------------

def run_on_worker(task: JobTask, notebook: bytes, gpus: Sequence[str] = (),
                  slots: dict[str, int] | None = None) -> tuple[dict[str, Any], bytes]:
    """Run ``task`` in this worker's scratch space; return its row and its job folder as a tar.

    ``slots`` (from :func:`host_slots`) says how many jobs share this worker's machine; a worker that joined
    after the grid started counts its own threads."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(STARTED_TOPIC, task.job.job_id)
    scratch = Path(tempfile.mkdtemp(prefix="imgbench-job-", dir=worker.local_directory))
    stop, finished = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_stop_when_released, args=(worker, worker.get_current_task(), stop, finished),
                               daemon=True)
    watcher.start()
    try:
        local = worker_task(task, scratch, notebook)
        extra_env = {"CUDA_VISIBLE_DEVICES": gpus[int(worker.name) % len(gpus)]} if gpus else {}
        concurrency = (slots or {}).get(worker.address, worker.state.nthreads)
        extra_env.update(thread_env(task.job.recipe.threads, concurrency))
        row = execute_job(local, extra_env=extra_env, stop=stop)
        return row, pack_job_dir(local.job_dir)
    finally:
        finished.set()
        shutil.rmtree(scratch, ignore_errors=True)


def _stop_when_released(worker, key, stop: threading.Event, finished: threading.Event) -> None:
    """Set ``stop`` once the launcher cancels this task or goes away (the scheduler releases it)."""
    while not finished.wait(STOP_POLL_S):
        state = worker.state.tasks.get(key)
        if state is None or state.state in DONE_STATES:
            stop.set()
            return


def worker_task(task: JobTask, scratch: Path, notebook: bytes) -> JobTask:
    """``task`` rewritten for this machine: output and notebook in ``scratch``, this machine's env paths.

    Data and cache folders are machine-local: the worker's own ``IMGBENCH_DATA_DIR`` / ``IMGBENCH_CACHE_DIR``
    win, the launcher's are kept only where they exist here. Plugin folders: the launcher's that exist
    here, then the worker's own ``IMGBENCH_PLUGINS_DIR``.
    """
    notebook_file = scratch / NOTEBOOK_ON_WORKER
    notebook_file.write_bytes(notebook)
    env = dict(task.env)
    for key in MACHINE_LOCAL_ENV:
        launcher_value = env.get(key)
        if os.environ.get(key) or (launcher_value and not Path(launcher_value).is_dir()):
            env.pop(key, None)  # execute_job starts from os.environ, so the worker's own value applies
    plugin_dirs = [*env.get(PLUGINS_DIR_ENV, "").split(os.pathsep), *os.environ.get(PLUGINS_DIR_ENV, "").split(os.pathsep)]
    env[PLUGINS_DIR_ENV] = os.pathsep.join(dict.fromkeys(d for d in plugin_dirs if d and Path(d).is_dir()))
    return replace(task, out_dir=str(scratch / "out"), notebook=str(notebook_file), env=env)


# -- the job folder in transit ---------------------------------------------------------------------

def pack_job_dir(folder: Path) -> bytes:
    """The folder's files as a gzipped tar in memory (paths relative to the folder)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(Path(folder).rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def unpack_job_dir(archive: bytes, dest: Path) -> None:
    """Extract ``archive`` beside ``dest``, flush it to disk, then rename it into place (whole or nothing)."""
    staging = _staging_dir(dest)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            tar.extractall(staging, filter="data")  # refuses absolute paths and ../ escapes
        for path in staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest``, replacing what is there (an earlier attempt's folder)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(dest, old)
    os.rename(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".incoming", dir=dest.parent))
    staging.chmod(dest.parent.stat().st_mode & 0o777)  # mkdtemp's 0700 would hide the job from the team
    return staging


# -- the plugin --------------------------------------------------------------------------------------

OPTIONS = (
    ExecutorOption("scheduler", f"Dask scheduler address, e.g. tcp://HOST:8786 (default: ${SCHEDULER_ENV}, else a "
                                f"LocalCluster on this machine)", env=SCHEDULER_ENV, metavar="ADDRESS"),
    ExecutorOption("local_directory", "scratch folder of the LocalCluster's workers (jobs run there)",
                   metavar="DIR"),
)


def create(slots: int = 1, scheduler: str | None = None,
           local_directory: str | os.PathLike | None = None) -> DaskExecutor:
    """The ``dask`` executor, on the cluster at ``scheduler``; without one a LocalCluster with one worker per
    GPU (else ``slots`` CPU workers) is started when the grid runs. ``IMGBENCH_DASK_SCHEDULER`` reaches
    ``scheduler`` through the declared option (:meth:`imgbench.specs.ExecutorSpec.resolve_options`)."""
    import_distributed()
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise UsageError(f"--jobs must be 1 or more, got {slots!r}")
    address = (scheduler or "").strip() or None
    if address is not None:
        address = check_scheduler_address(address)
    return DaskExecutor(address, workers=slots, gpus=() if address else visible_gpus(),
                        local_directory=local_directory)


@hookimpl
def imgbench_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec("dask", create, f"a Dask distributed cluster (--scheduler tcp://HOST:8786 or "
                                         f"{SCHEDULER_ENV}), else a LocalCluster here; needs {INSTALL_HINT}",
                         options=OPTIONS)]
