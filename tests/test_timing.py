"""Speed figures carry their noise: the spread of equal timed chunks, windows and samples, flagged in the report
when too large; throughput intervals over seeds stay above zero."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from imgbench.engine import timing
from imgbench.engine.gpu_busy import BusyMeter
from imgbench.report import noise
from imgbench.report.findings import assemble
from imgbench.report.html_page import render_html
from imgbench.report.markdown_page import render_markdown
from imgbench.report.tables import leaderboard, log_t_interval, t_interval

from report_synthetic import make_results

CPU = torch.device("cpu")
BATCH = torch.zeros(8, 1)


def sleeper(seconds_for):
    """A fake forward pass that sleeps ``seconds_for(t)`` seconds, t = seconds since the first call."""
    start = []

    def forward(x):
        start.append(start[0] if start else time.perf_counter())
        time.sleep(seconds_for(time.perf_counter() - start[0]))

    return forward


def test_relative_iqr_is_interquartile_range_over_median_by_hand():
    assert timing.relative_iqr([5.0, 1.0, 3.0, 2.0, 4.0]) == pytest.approx((4 - 2) / 3)
    assert timing.relative_iqr([1.0, 2.0, 3.0]) is None  # too few to say


def test_inference_throughput_times_equal_chunks_and_reports_a_small_spread_when_steady(monkeypatch):
    sizes = []
    real = timing.synchronize

    calls = {"n": 0}
    took = []  # what each call really lasted: a loaded machine oversleeps

    def forward(x):
        calls["n"] += 1
        start = time.perf_counter()
        time.sleep(0.01)
        took.append(time.perf_counter() - start)

    def counting_sync(device):  # a chunk ends with one synchronisation: record how many calls it held
        sizes.append(calls["n"])
        real(device)

    monkeypatch.setattr(timing, "synchronize", counting_sync)
    figures = timing.inference_throughput(forward, BATCH, CPU, seconds=1.0)
    warm = next(i for i, n in enumerate(sizes) if i and n - sizes[i - 1] > 1)  # warm-up syncs every call
    chunks = np.diff(sizes[warm - 1:])
    assert len(chunks) >= timing.MIN_CHUNKS and len(set(chunks)) == 1  # equal chunks, not growing ones
    assert figures["infer_throughput"] == pytest.approx(len(BATCH) / float(np.median(took)), rel=0.35)
    assert figures["infer_throughput_rel_iqr"] < noise.NOISY_REL_IQR


def test_inference_throughput_spread_exposes_a_machine_that_slows_down_half_the_time():
    # 1 ms per call, then 4 ms during every other 0.3 s: what another process taking the CPU looks like
    forward = sleeper(lambda t: 0.004 if int(t / 0.3) % 2 else 0.001)
    figures = timing.inference_throughput(forward, BATCH, CPU, seconds=1.2)
    assert figures["infer_throughput_rel_iqr"] > noise.NOISY_REL_IQR


def test_latency_reports_percentiles_and_the_spread_of_its_samples():
    figures = timing.latency_ms(sleeper(lambda t: 0.002), BATCH[:1], CPU, seconds=0.2)
    assert figures["latency_p50_ms"] == pytest.approx(2.0, rel=0.5)
    assert 0 <= figures["latency_rel_iqr"] < 0.5


class FakeGpu:
    """Stands in for a CUDA stream: work is queued (``launch``) and runs at its own pace, events are stamped
    with the GPU time at which the work queued before them ends, and synchronising is recorded."""

    def __init__(self) -> None:
        self.queued_ms = 0.0  # when the GPU will have run everything launched so far
        self.syncs: list[float] = []  # the GPU time of each event a host waited for

    def launch(self, ms: float) -> None:
        self.queued_ms += ms

    def event(self) -> "FakeEvent":
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu, self.stamp = gpu, None

    def record(self) -> None:
        self.stamp = self.gpu.queued_ms

    def synchronize(self) -> None:
        self.gpu.syncs.append(self.stamp)

    def elapsed_time(self, end: "FakeEvent") -> float:
        return end.stamp - self.stamp


def test_steady_timer_marks_gpu_window_edges_with_events_and_waits_only_when_stopped():
    gpu = FakeGpu()
    timer = timing.SteadyTimer(torch.device("cuda"), clock=timing.EventClock(gpu.event))
    timer.start()
    for _ in range(25):
        gpu.launch(4.0)  # a step queues 4 ms of GPU work and returns at once
        timer.step(4)
        assert gpu.syncs == []  # never a host sync while training: not per step, not per window
    timer.stop()
    assert gpu.syncs == [40.0, 80.0, 100.0]  # each window's end, read once the epoch's steps are queued
    assert timer.images == 100 and timer.window_rates == [pytest.approx(1000.0)] * 3  # 40 images / 40 ms...
    assert timer.elapsed == pytest.approx(0.1) and timer.images_per_second() == pytest.approx(1000.0)


def test_inference_on_events_times_the_gpus_work_not_the_hosts():
    gpu = FakeGpu()

    def forward(x):  # 2 ms of GPU work per batch of 8; the host returns at once
        gpu.launch(2.0)

    figures = timing.inference_throughput(forward, BATCH, torch.device("cuda"), seconds=0.1,
                                          clock=timing.EventClock(gpu.event))
    assert figures["infer_throughput"] == pytest.approx(8 / 0.002)
    assert figures["infer_throughput_rel_iqr"] == 0.0 and figures["infer_gpu_busy"] is None


def _noisy_then_steady(noisy_ms: float):
    """A fake GPU forward: 1 ms, but 3 ms in every other 25 ms of the first ``noisy_ms`` of GPU time."""
    gpu, calls = FakeGpu(), []

    def forward(x):
        calls.append(1)
        slow = gpu.queued_ms < noisy_ms and int(gpu.queued_ms / 25) % 2
        gpu.launch(3.0 if slow else 1.0)

    return gpu, calls, forward


def test_inference_chunks_are_added_until_their_spread_is_small():
    seconds = 0.2
    gpu, calls, forward = _noisy_then_steady(noisy_ms=150)
    figures = timing.inference_throughput(forward, BATCH, CPU, seconds, clock=timing.EventClock(gpu.event))
    timed_s = gpu.queued_ms / 1000
    warm_up = timing.WARMUP_SHARE * seconds
    assert seconds * 1.5 < timed_s - warm_up < timing.MAX_BENCH_FACTOR * seconds  # past bench_seconds, then stopped
    assert figures["infer_throughput_rel_iqr"] <= timing.TARGET_REL_IQR


def test_inference_chunks_stop_at_the_time_cap_when_the_spread_stays_large():
    seconds = 0.2
    gpu, calls, forward = _noisy_then_steady(noisy_ms=float("inf"))
    figures = timing.inference_throughput(forward, BATCH, CPU, seconds, clock=timing.EventClock(gpu.event))
    timed_s = gpu.queued_ms / 1000
    assert timing.MAX_BENCH_FACTOR * seconds <= timed_s - timing.WARMUP_SHARE * seconds < (timing.MAX_BENCH_FACTOR + 0.5) * seconds
    assert figures["infer_throughput_rel_iqr"] > timing.TARGET_REL_IQR


def test_the_gpu_busy_share_averages_the_drivers_samples_taken_inside_the_windows():
    driver = [(100, 90.0), (200, 90.0)]  # samples from before the window: left out
    meter = BusyMeter(lambda since: [sample for sample in driver if sample[0] > since])
    gpu = FakeGpu()

    def forward(x):  # the driver samples as the batches run: a launch-bound 30% busy
        gpu.launch(1.0)
        driver.append((driver[-1][0] + 100, 30.0))

    figures = timing.inference_throughput(forward, BATCH, torch.device("cuda"), seconds=0.05,
                                          clock=timing.EventClock(gpu.event), busy=meter)
    assert figures["infer_gpu_busy"] == pytest.approx(0.30)
    driver.append((10**9, 100.0))  # after the window: left out too
    assert meter.share() == pytest.approx(0.30)
    timer = timing.SteadyTimer(torch.device("cuda"), clock=timing.EventClock(gpu.event), busy=meter)
    timer.start()
    for busy in (50.0, 70.0):  # a second meter window, during training: its samples join the first's
        driver.append((driver[-1][0] + 100, busy))
        gpu.launch(1.0)
        timer.step(8)
    timer.stop()
    samples = [30.0] * (len(meter.values) - 2) + [50.0, 70.0]
    assert timer.gpu_busy() == pytest.approx(sum(samples) / len(samples) / 100)
    assert BusyMeter(lambda since: []).share() is None  # no sample inside: no figure, not zero


def test_steady_timer_on_the_cpu_times_every_step_and_measures_their_spread():
    timer = timing.SteadyTimer(CPU)
    timer.start()
    for step in range(8):
        time.sleep(0.004 if step % 2 else 0.001)  # a step that takes 1 ms, then 4 ms
        timer.step(10)
    timer.stop()
    assert len(timer.window_rates) == 8
    assert timer.rel_iqr() > noise.NOISY_REL_IQR


def test_throughput_interval_over_seeds_stays_above_zero_with_a_huge_spread():
    values = [10.0, 1000.0, 40.0]
    assert t_interval(values)[1] < 0  # the plain t-interval goes below zero: a negative speed
    mean, low, high = log_t_interval(values)
    assert mean == pytest.approx(stats.gmean(values))
    assert 0 < low < mean < high
    logs = np.log(values)  # by hand: the t-interval of the logarithms, mapped back
    half = stats.t.ppf(0.975, len(values) - 1) * logs.std(ddof=1) / np.sqrt(len(values))
    assert (low, high) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)))


def test_leaderboard_gives_throughputs_as_geometric_means_with_positive_intervals():
    rows = pd.DataFrame({"dataset": "d", "model": "m", "seed": [0, 1, 2], "accuracy": 0.5,
                         "infer_throughput": [5.0, 500.0, 50.0], "train_throughput": [1.0, 2.0, 4.0]})
    board = leaderboard(rows).iloc[0]
    assert board["infer_throughput_mean"] == pytest.approx(50.0)
    assert board["train_throughput_mean"] == pytest.approx(2.0)
    assert board["infer_throughput_low"] > 0 and board["train_throughput_low"] > 0


def _ok(**columns):
    base = {"dataset": "d", "model": "m", "seed": 0, "device": "cpu", "threads": 1, "concurrency": 1,
            "train_throughput_rel_iqr": 0.02, "infer_throughput_rel_iqr": 0.02, "latency_rel_iqr": 0.05}
    return pd.DataFrame([{**base, **columns}])


def test_noise_note_names_the_noisy_figure_and_why():
    assert noise.speed_notes(_ok()) == []
    note = " ".join(noise.noise_notes(_ok(infer_throughput_rel_iqr=0.31)))
    assert "m on d, seed 0: inference speed 31%" in note and "another process took the cpu" in note.lower()


def test_shared_cpu_note_only_for_cpu_jobs_that_ran_beside_others():
    assert "2 jobs at once, 1 thread each" in noise.shared_cpu_note(_ok(concurrency=2))
    assert noise.shared_cpu_note(_ok(concurrency=2, device="cuda:0")) == ""
    assert noise.shared_cpu_note(_ok(concurrency=1)) == ""


def test_report_pages_carry_the_shared_cpu_and_noise_notes(tmp_path):
    out = make_results(tmp_path / "out", seeds=(0, 1))
    table = pd.read_csv(out / "results.csv")
    table["threads"], table["concurrency"] = 1, 2
    table["infer_throughput_rel_iqr"] = 0.01
    table.loc[0, "infer_throughput_rel_iqr"] = 0.4
    table.to_csv(out / "results.csv", index=False)
    report = assemble(out)  # no figures: the notes are text
    noisy = f"{table.loc[0, 'model']} on {table.loc[0, 'dataset']}, seed {table.loc[0, 'seed']}: inference speed 40%"
    for text in (render_markdown(report), render_html(report)):
        assert "come from CPU jobs that shared the machine (2 jobs at once" in text
        assert noisy in text
