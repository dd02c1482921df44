"""The energy reader (imgbench.energy), driven by counters whose values the tests control: a stand-in NVML
module and a powercap tree in tmp_path. This machine has neither a GPU nor /sys/class/powercap."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgbench import energy


class FakeNvml:
    """pynvml's surface that imgbench.energy uses, with a counter (millijoules) the test sets."""

    class NVMLError(Exception):
        pass

    def __init__(self, millijoules: list[int], supported: bool = True, uuids: tuple[str, ...] = ()) -> None:
        self.values = iter(millijoules)
        self.supported = supported
        self.uuids = uuids
        self.asked: list[tuple[str, object]] = []

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.asked.append(("uuid", uuid))
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self.asked.append(("index", index))
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return next(self.values)


class Clock:
    def __init__(self, *times: float) -> None:
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def _zone(root: Path, name: str, label: str, energy_uj: int, max_range_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{label}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return zone


def test_nvml_joules_over_a_window_are_the_counter_difference():
    nvml = FakeNvml([1_000, 251_000, 401_000])  # the first read is the check when the counter is opened
    counter, reason = energy.nvml_counter(0, nvml=nvml)
    assert reason == "" and counter is not None
    meter = energy.EnergyMeter(counter, clock=Clock(10.0, 12.5))
    meter.start()
    reading = meter.stop()
    assert reading.joules == pytest.approx(150.0)  # (401,000 - 251,000) mJ
    assert reading.seconds == pytest.approx(2.5)
    assert reading.watts == pytest.approx(60.0)
    assert reading.per_image(300) == pytest.approx(0.5)
    assert reading.per_image_at(120.0) == pytest.approx(0.5)  # 60 W at 120 images/s
    assert reading.per_image_at(0.0) is None
    assert reading.source == energy.NVML and reading.reason == ""


def test_nvml_finds_the_gpu_by_uuid_and_falls_back_to_cuda_s_index():
    by_uuid = FakeNvml([0], uuids=("GPU-1234",))
    energy.nvml_counter(3, uuid="1234", nvml=by_uuid)
    assert by_uuid.asked == [("uuid", "GPU-1234")]
    unknown = FakeNvml([0])
    counter, _ = energy.nvml_counter(1, uuid="abcd", nvml=unknown)
    assert counter is not None and unknown.asked[-1] == ("index", 1)


def test_a_gpu_without_the_counter_gives_no_joules_and_says_why():
    counter, reason = energy.nvml_counter(0, nvml=FakeNvml([], supported=False))
    assert counter is None and "Not Supported" in reason
    meter = energy.EnergyMeter(counter, reason, clock=Clock(0.0, 5.0))
    meter.start()
    reading = meter.stop()
    assert reading.joules is None and reading.per_image(10) is None and reading.watts is None
    assert reading.per_image_at(100.0) is None
    assert "Not Supported" in reading.reason


def test_nvidia_ml_py_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    counter, reason = energy.nvml_counter(0)
    assert counter is None and "imgbench[gpu]" in reason


def test_a_window_shorter_than_the_counter_allows_gives_no_figure():
    meter = energy.EnergyMeter(energy.NvmlCounter(FakeNvml([0, 100]), "h", "Fake"), clock=Clock(0.0, 0.4))
    meter.start()
    reading = meter.stop()
    assert reading.joules is None and "shorter" in reading.reason and reading.source == energy.NVML


def test_lap_reads_without_stopping_and_stop_before_start_is_an_error():
    meter = energy.EnergyMeter(energy.NvmlCounter(FakeNvml([0, 3_000, 9_000]), "h", "Fake"),
                               clock=Clock(0.0, 2.0, 4.0))
    meter.start()
    assert meter.lap().joules == pytest.approx(3.0)  # energy to a target accuracy, mid-training
    assert meter.stop().joules == pytest.approx(9.0)
    with pytest.raises(RuntimeError, match="before start"):
        meter.stop()


def test_rapl_sums_the_packages_and_folds_in_a_wrap_around(tmp_path):
    root = tmp_path / "powercap"
    package0 = _zone(root, "intel-rapl:0", "package-0", 999_000_000, 999_999_999)
    package1 = _zone(root, "intel-rapl:1", "package-1", 5_000_000, 999_999_999)
    _zone(root / "intel-rapl:0", "intel-rapl:0:0", "core", 1, 999_999_999)  # a subzone: inside package-0
    counter, reason = energy.rapl_counter(root)
    assert reason == "" and [z.name for z in counter.zones] == ["intel-rapl:0", "intel-rapl:1"]
    meter = energy.EnergyMeter(counter, clock=Clock(0.0, 2.0))
    meter.start()
    (package0 / "energy_uj").write_text("2000000\n")  # wrapped: 999,999,999 -> 0 -> 2,000,000
    (package1 / "energy_uj").write_text("35000000\n")
    reading = meter.stop()
    # package-0: (999,999,999 - 999,000,000) + 1 + 2,000,000 uJ; package-1: 30,000,000 uJ
    assert reading.joules == pytest.approx((999_999 + 1 + 2_000_000 + 30_000_000) * 1e-6)
    assert reading.source == energy.RAPL
    assert "package-0, package-1" in counter.description


def test_rapl_readable_only_by_root_says_so(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 1, 10)

    def denied(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)

    original = Path.read_text
    monkeypatch.setattr(Path, "read_text", denied)
    counter, reason = energy.rapl_counter(root)
    assert counter is None and "only by root" in reason


def test_no_counter_at_all_is_recorded_as_such(tmp_path):
    meter = energy.energy_meter("cpu", powercap=tmp_path / "no-powercap")
    meter.start()
    reading = meter.stop()
    assert reading.joules is None and reading.reason.startswith(energy.NO_COUNTER)
    assert energy.energy_meter("mps").reason.startswith(energy.NO_COUNTER)


def test_this_machine_reads_what_it_has():
    """A real reading where the machine has a counter (a GPU, readable RAPL), else the recorded reason."""
    import time

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    meter = energy.energy_meter(device)
    meter.start()
    deadline = time.perf_counter() + energy.MIN_WINDOW_S + 0.1
    x = torch.randn(256, 256, device=device)
    while time.perf_counter() < deadline:
        x = (x @ x).tanh()
    reading = meter.stop()
    if meter.counter is None:
        assert reading.joules is None and reading.reason
    else:
        assert reading.joules is not None and reading.joules > 0 and reading.watts > 1
