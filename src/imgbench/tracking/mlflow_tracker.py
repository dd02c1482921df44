"""The built-in MLflow tracker: ``imgbench run --track mlflow`` (``pip install "imgbench[mlflow]"``).

Store: ``--track-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's own default: the sqlite database
``mlflow.db`` in the folder imgbench runs from, artifacts in ``./mlruns`` beside it, which is what ``mlflow ui``
started in that folder shows. Experiment: ``MLFLOW_EXPERIMENT_NAME``, else ``imgbench``.

One parent run per results folder, one nested child run per job. A child holds the job's params (model,
dataset, seed, every recipe field), every numeric results.csv column as a metric and history.csv as step
metrics (step = epoch), every other results.csv column with a value and the job's provenance (git commit,
package versions, device) as tags, and its notebook, metrics.json, predictions.csv and history.csv as
artifacts. The parent holds results.csv and report.html. Values go in ``log_batch`` calls, not one per value.

Resume finds the parent of the same results folder by its tag and reuses it. A job that runs again replaces
its earlier attempt's child (deleted). A skipped job without a complete child (tracking was off, or MLflow
did not answer) gets one from its job folder, so rerunning the same command logs what an outage missed
without running a job again.

HTTP retries are capped (``MLFLOW_SETTINGS``, unless the environment sets them): MLflow's own defaults would
stall the launcher for minutes on a dead server. Any failure raises, once; the lifecycle reports it and does
not call this tracker again for the grid.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from imgbench import __version__, schema
from imgbench.errors import UsageError
from imgbench.hookspecs import hookimpl
from imgbench.specs import GridInfo, GridOutcome, JobInfo, JobOutcome, RunLink, TrackerSpec

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

NAME = "mlflow"
INSTALL_HINT = 'pip install "imgbench[mlflow]"'
DEFAULT_EXPERIMENT = "imgbench"
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store unless told otherwise
MLFLOW_SETTINGS = {  # set unless the environment sets them
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # MLflow's defaults: 7 retries, backoff factor 2, 120 s per request
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # two lines per run otherwise; the report links them
}
QUIET_LOGGERS = ("urllib3.connectionpool",)  # one warning per failure, not one per retry
JOB_ARTIFACTS = (schema.NOTEBOOK, schema.METRICS_JSON, schema.PREDICTIONS_CSV, schema.HISTORY_CSV)
GRID_ARTIFACTS = (schema.RESULTS_CSV, schema.REPORT_HTML)
TAG_PREFIX = "imgbench."  # results.csv's text columns and the provenance, as tags: imgbench.status, ...
ROLE_TAG, GRID_ROLE, JOB_ROLE = "imgbench.role", "grid", "job"
FOLDER_TAG = "imgbench.results_folder"
JOB_TAG = TAG_PREFIX + "job_id"
HASH_TAG = TAG_PREFIX + "config_hash"
PROVENANCE_PREFIX = TAG_PREFIX + "provenance."
AS_PARAMS = ("model", "dataset", "seed")  # results.csv columns a child already holds as params
SEARCH_PAGE = 1000
FINISHED, FAILED, RUNNING = "FINISHED", "FAILED", "RUNNING"


class TrackerUnavailable(RuntimeError):
    """MLflow did not take what was logged (unreachable, refused, misconfigured)."""


class MlflowTracker:
    """The lifecycle hooks for one grid (see the module docstring). Created by :meth:`create` before any job."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri or ""
        self.client: "MlflowClient | None" = None
        self.experiment_id = ""
        self.grid_run = ""
        self.job_runs: dict[str, str] = {}  # job id -> its child run

    @classmethod
    def create(cls, uri: str | None) -> "MlflowTracker":
        try:
            import mlflow  # noqa: F401  (imported here so a missing install stops the grid before any job)
        except ImportError as exc:
            raise UsageError(f"--track {NAME} needs MLflow, which is not installed ({exc}); install it with: "
                             f"{INSTALL_HINT}") from exc
        return cls(uri)

    # -- the lifecycle hooks ------------------------------------------------------------------------------
    @hookimpl
    def imgbench_grid_started(self, grid: GridInfo) -> list[RunLink]:
        import mlflow
        from mlflow import MlflowClient

        for name, value in MLFLOW_SETTINGS.items():
            os.environ.setdefault(name, value)
        self.uri = self.uri or mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default
        with self._logging():
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment()
            self.grid_run = self._grid_run(grid)
            children = {run.data.tags.get(JOB_TAG, ""): run for run in
                        self._search(f"tags.`mlflow.parentRunId` = '{self.grid_run}'")}
            self.job_runs = {job_id: run.info.run_id for job_id, run in children.items() if job_id}
            for job in grid.jobs:  # skipped jobs that were never logged completely
                run = children.get(job.job_id)
                if job.job_id in grid.done and (run is None or run.info.status == RUNNING):
                    self._log_job(job, grid.done[job.job_id])
        return [self._link(self.grid_run), *(self._link(run, job_id) for job_id, run in self.job_runs.items())]

    @hookimpl
    def imgbench_job_finished(self, job: JobInfo, record: JobOutcome) -> RunLink:
        with self._logging():
            self._log_job(job, record)
        return self._link(self.job_runs[job.job_id], job.job_id)

    @hookimpl
    def imgbench_grid_finished(self, grid: GridInfo, results: GridOutcome) -> None:
        from mlflow.entities import Metric

        ok = sum(row["status"] == schema.Status.OK for row in results.rows)
        now = _millis()
        with self._logging():
            client = self._client()
            client.log_batch(self.grid_run, metrics=[Metric("jobs", len(results.rows), now, 0),
                                                     Metric("jobs_ok", ok, now, 0)])
            for path in (grid.out_dir / name for name in GRID_ARTIFACTS):
                if path.is_file():
                    client.log_artifact(self.grid_run, str(path))
            client.set_terminated(self.grid_run, FINISHED if results.exit_code == 0 else FAILED)

    # -- runs -----------------------------------------------------------------------------------------------
    def _experiment(self) -> str:
        from mlflow.entities import LifecycleStage

        client = self._client()
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return client.create_experiment(name)
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            raise TrackerUnavailable(f"the MLflow experiment {name!r} is deleted; restore it (`mlflow experiments "
                                     f"restore --experiment-id {experiment.experiment_id}`) or set "
                                     f"MLFLOW_EXPERIMENT_NAME to another name")
        return experiment.experiment_id

    def _grid_run(self, grid: GridInfo) -> str:
        """The parent run of this results folder: found again on a resume, else created."""
        import mlflow
        from mlflow.entities import RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

        from imgbench.engine.record import git_state

        client = self._client()
        git = git_state()
        tags = {TAG_PREFIX + "suite": grid.suite, TAG_PREFIX + "executor": grid.executor,
                TAG_PREFIX + "command": " ".join(grid.command), PROVENANCE_PREFIX + "imgbench": __version__,
                PROVENANCE_PREFIX + "mlflow": mlflow.__version__, PROVENANCE_PREFIX + "python": platform.python_version(),
                PROVENANCE_PREFIX + "launcher": platform.node(),
                **({MLFLOW_GIT_COMMIT: git["git_commit"], PROVENANCE_PREFIX + "git_dirty": str(git["git_dirty"])}
                   if git else {})}
        for run in self._search(f"tags.`{ROLE_TAG}` = '{GRID_ROLE}'"):
            if run.data.tags.get(FOLDER_TAG) == str(grid.out_dir):
                client.update_run(run.info.run_id, status=RUNNING)
                client.log_batch(run.info.run_id, tags=[RunTag(key, _text(value)) for key, value in tags.items()])
                return run.info.run_id
        name = f"{Path(grid.suite).stem or 'grid'} {grid.out_dir.name}"
        run = client.create_run(self.experiment_id, run_name=name,
                                tags={ROLE_TAG: GRID_ROLE, FOLDER_TAG: str(grid.out_dir),
                                      **{key: _text(value) for key, value in tags.items()}})
        return run.info.run_id

    def _log_job(self, job: JobInfo, record: JobOutcome) -> None:
        """One child run for ``job``, replacing an earlier one; terminated last, so RUNNING means incomplete."""
        from mlflow.entities import Param, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        client = self._client()
        if (earlier := self.job_runs.pop(job.job_id, None)) is not None:
            client.delete_run(earlier)  # the job ran again: its newer attempt replaces that run
        ended = _millis(record.finished_at)
        started = ended - round(1000 * (_number(record.row.get("duration_s")) or 0.0))
        run = client.create_run(self.experiment_id, start_time=started, run_name=job.job_id, tags={
            MLFLOW_PARENT_RUN_ID: self.grid_run, ROLE_TAG: JOB_ROLE, FOLDER_TAG: str(record.job_dir.parent.parent),
            JOB_TAG: job.job_id, HASH_TAG: job.config_hash})
        run_id = run.info.run_id
        self.job_runs[job.job_id] = run_id
        params = [Param(key, _text(value, MAX_PARAM_VAL_LENGTH)) for key, value in job.params.items()]
        metrics = row_metrics(record.row, ended) + history_metrics(record.job_dir / schema.HISTORY_CSV, ended)
        tags = [RunTag(key, _text(value)) for key, value in job_tags(record).items()]
        self._log_batches(run_id, metrics, params, tags)
        for path in (record.job_dir / name for name in JOB_ARTIFACTS):
            if path.is_file():
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, FINISHED if record.ok else FAILED, end_time=ended)

    def _log_batches(self, run_id: str, metrics: Sequence["Metric"], params: Sequence["Param"],
                     tags: Sequence["RunTag"]) -> None:
        """As few ``log_batch`` calls as MLflow's per-request limits allow."""
        from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

        per_call = MAX_ENTITIES_PER_BATCH - 2 * MAX_PARAMS_TAGS_PER_BATCH  # metrics beside full params and tags
        calls = max(math.ceil(len(metrics) / per_call), math.ceil(len(params) / MAX_PARAMS_TAGS_PER_BATCH),
                    math.ceil(len(tags) / MAX_PARAMS_TAGS_PER_BATCH), 1)
        for i in range(calls):
            self._client().log_batch(run_id, metrics=metrics[i * per_call:(i + 1) * per_call],
                                     params=params[i * MAX_PARAMS_TAGS_PER_BATCH:(i + 1) * MAX_PARAMS_TAGS_PER_BATCH],
                                     tags=tags[i * MAX_PARAMS_TAGS_PER_BATCH:(i + 1) * MAX_PARAMS_TAGS_PER_BATCH])

    def _search(self, filter_string: str) -> Iterator["Run"]:
        client, token = self._client(), None
        while True:
            page = client.search_runs([self.experiment_id], filter_string, max_results=SEARCH_PAGE, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _link(self, run_id: str, job_id: str = "") -> RunLink:
        """The run's page in the MLflow UI: on the tracking server, or where ``mlflow ui`` serves a local store."""
        served = self.uri.startswith(("http://", "https://"))
        base = self.uri.rstrip("/") if served else UI_ADDRESS
        note = "" if served or job_id else f"start `mlflow ui --backend-store-uri {self.uri}` to open it"
        return RunLink(f"{base}/#/experiments/{self.experiment_id}/runs/{run_id}", job_id, note)

    def _client(self) -> "MlflowClient":
        assert self.client is not None, "imgbench_grid_started connects first"
        return self.client

    @contextmanager
    def _logging(self) -> Iterator[None]:
        """Quiet urllib3's per-retry warnings; turn any failure into one :class:`TrackerUnavailable`."""
        loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        except TrackerUnavailable:
            raise
        except Exception as exc:
            raise TrackerUnavailable(
                f"could not log to MLflow at {self.uri} ({type(exc).__name__}: {exc}); rerun the same command with "
                f"the same --out once it answers: finished jobs are not run again, and the runs MLflow lacks are "
                f"logged then") from exc
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


# -- what a job's run holds ----------------------------------------------------------------------------------
def row_metrics(row: Mapping[str, Any], timestamp: int) -> list["Metric"]:
    """Every numeric results.csv column with a finite value, at step 0."""
    from mlflow.entities import Metric

    return [Metric(name, value, timestamp, 0) for name in schema.NUMERIC_COLUMNS
            if (value := _number(row.get(name))) is not None]


def history_metrics(path: Path, timestamp: int) -> list["Metric"]:
    """history.csv's columns as step metrics (step = epoch); none when the job has no history."""
    from mlflow.entities import Metric

    epoch, *columns = schema.HISTORY_COLUMNS
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return []
    return [Metric(name, value, timestamp, int(float(row[epoch]))) for row in rows for name in columns
            if (value := _number(row.get(name))) is not None]


def job_tags(record: JobOutcome) -> dict[str, str]:
    """results.csv's other columns with a value, and the job's provenance from metrics.json."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    tags = {TAG_PREFIX + name: value for name in schema.RESULT_COLUMNS
            if name not in schema.NUMERIC_COLUMNS and name not in AS_PARAMS
            and (value := record.row.get(name)) not in (None, "")}
    try:
        provenance = json.loads((record.job_dir / schema.METRICS_JSON).read_text(encoding="utf-8"))["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        provenance = {}
    tags.update({PROVENANCE_PREFIX + key: value for key, value in provenance.items()
                 if value not in (None, "") and not isinstance(value, (dict, list))})
    if provenance.get("git_commit"):
        tags[MLFLOW_GIT_COMMIT] = provenance["git_commit"]
    return {key: str(value) for key, value in tags.items()}


def _number(value: Any) -> float | None:
    """A finite number from a row or a CSV cell; None for empty cells, text and NaN."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any, limit: int | None = None) -> str:
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    return str(value)[:limit or MAX_TAG_VAL_LENGTH]


def _millis(iso: str = "") -> int:
    """Milliseconds since the epoch of an ISO 8601 time (now when empty), as MLflow stamps runs and metrics."""
    moment = datetime.fromisoformat(iso) if iso else datetime.now(timezone.utc)
    return round(moment.timestamp() * 1000)


@hookimpl
def imgbench_trackers() -> list[TrackerSpec]:
    return [TrackerSpec(NAME, MlflowTracker.create, "MLflow: a parent run per grid, a child run per job "
                                                    f"(needs {INSTALL_HINT})")]
