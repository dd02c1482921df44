"""`imgbench infer`: its input checks, its rows (ok, out of memory, a runtime that cannot run a model), the
agreement with eager fp32 against ONNX Runtime and the engine's own evaluation, and the report's section.

The sweeps run on the bundled ``digits`` (8x8, no download) with tiny models from a plugin file, timed for a
few hundredths of a second: the figures are not the point, the rows are.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from imgbench import schema
from imgbench.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
TINY_PLUGIN = '''
import torch
from imgbench import ModelSpec, hookimpl


class Net(torch.nn.Module):
    def __init__(self, in_chans, num_classes, oom_above=0, branchy=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, num_classes)
        self.oom_above, self.branchy = oom_above, branchy

    def forward(self, x):
        if self.oom_above and x.shape[0] > self.oom_above and not torch.compiler.is_exporting():
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {x.shape[0]}")
        x = torch.relu(self.bn(self.conv(x)))
        if self.branchy and bool(x.mean() > 0):  # data-dependent Python control flow: no graph to export
            x = x * 2
        return self.fc(x.mean((2, 3)))


def build(oom_above=0, branchy=False, *, num_classes, in_chans, image_size, pretrained=False):
    return Net(in_chans, num_classes, oom_above, branchy)


@hookimpl
def imgbench_models():
    return [ModelSpec("tiny/net", build, "conv-BN-ReLU, pooled, linear", min_size=4),
            ModelSpec("tiny/oom", lambda **k: build(oom_above=2, **k), "out of memory above batch 2", min_size=4),
            ModelSpec("tiny/branchy", lambda **k: build(branchy=True, **k), "data-dependent branch", min_size=4)]
'''
FAST = ["--bench-seconds", "0.05", "--test-samples", "100", "--quiet"]


@pytest.fixture
def plugins(tmp_path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "tiny_models.py").write_text(TINY_PLUGIN)
    return folder


def infer(*args: str) -> int:
    return cli_main(["infer", *args])


def rows_of(out: Path) -> list[dict[str, str]]:
    with (out / schema.INFERENCE_CSV).open(newline="") as handle:
        return list(csv.DictReader(handle))


def by_key(rows: list[dict[str, str]]) -> dict[tuple[str, str, str, int], dict[str, str]]:
    return {(r["model"], r["runtime"], r["precision"], int(r["batch_size"])): r for r in rows}


# -- input checks ------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_whole_before_any_model_is_built(tmp_path, plugins, monkeypatch, capsys):
    from imgbench.registry import Registry

    monkeypatch.setattr(Registry, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    code = infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-m", "tiny/nope", "-d", "digits",
                 "--runtimes", "eager,tensorrt", "--precisions", "fp32,fp8", "--batch-sizes", "0,4",
                 "--bench-seconds", "-1", "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2
    for problem in ("'tensorrt' not known", "'fp8' not known", "'0' is not a batch size", "tiny/nope",
                    "bench_seconds"):
        assert problem in err, problem
    assert not (tmp_path / "out").exists()


def test_weights_a_model_does_not_have_are_refused(plugins, tmp_path, capsys):
    code = infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-d", "digits", "--weights", "pretrained",
                 "--out", str(tmp_path / "out"))
    assert code == 2 and "tiny/net has no pretrained weights" in capsys.readouterr().err
    code = infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-d", "digits", "--weights",
                 f"tiny/net={tmp_path / 'missing.safetensors'}", "--out", str(tmp_path / "out"))
    assert code == 2 and "missing.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_precision_the_device_lacks_is_refused_and_left_out_of_the_default(plugins, tmp_path, monkeypatch, capsys):
    from imgbench.inference import plan

    monkeypatch.setattr(plan, "cpu_has", lambda precision: precision == "bf16")
    code = infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-d", "digits", "--device", "cpu",
                 "--precisions", "fp16", "--out", str(tmp_path / "out"))
    assert code == 2
    err = capsys.readouterr().err
    assert "fp16: this CPU has no fp16 instructions" in err and "supported here: fp32, bf16" in err
    import torch

    assert plan._precisions(None, torch.device("cpu"), []) == ("fp32", "bf16")


def test_a_missing_runtime_package_names_the_extra_alone_and_becomes_rows_among_others(plugins, tmp_path, monkeypatch,
                                                                                       capsys):
    from imgbench.inference import plan

    real = plan.importlib.util.find_spec
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    code = infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-d", "digits", "--runtimes", "onnxruntime",
                 "--out", str(tmp_path / "alone"))
    assert code == 2 and "pip install 'imgbench[onnx]'" in capsys.readouterr().err
    out = tmp_path / "among"
    code = infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-d", "digits", "--runtimes", "eager,onnxruntime",
                 "--precisions", "fp32", "--batch-sizes", "1,4", "--out", str(out), *FAST)
    assert code == 0
    rows = by_key(rows_of(out))
    assert rows[("tiny/net", "eager", "fp32", 4)]["status"] == schema.Status.OK
    missing = rows[("tiny/net", "onnxruntime", "fp32", 4)]
    assert missing["status"] == schema.Status.FAILED and "imgbench[onnx]" in missing["error"]


def test_an_inference_suite_is_for_infer_not_for_run(capsys):
    assert cli_main(["run", "inference"]) == 2
    assert "is an inference suite" in capsys.readouterr().err
    assert cli_main(["infer", "quick"]) == 2
    assert "no [infer] table" in capsys.readouterr().err


def test_the_shipped_inference_suites_check_out(real_data):
    """Each shipped inference suite's grid and [infer] values pass the plan's checks on this machine."""
    from imgbench.inference.cli import _suite
    from imgbench.inference.plan import RECIPE_KEYS, make_plan
    from imgbench.registry import get_registry

    for name in ("inference", "inference-gpu"):
        suite, table = _suite(name)
        made = make_plan(get_registry(), models=list(suite.models), datasets=list(suite.datasets),
                         runtimes=table["runtimes"], precisions=table.get("precisions"), batch=table["batch_sizes"],
                         out_dir=Path("unused"), data_dir=str(real_data),
                         params={k: table[k] for k in RECIPE_KEYS if k in table})
        assert len(made.runs) == len(suite.models) * len(suite.datasets)
        assert made.batch_sizes == tuple(table["batch_sizes"])


# -- the sweep ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """One sweep of the three tiny models: eager and ONNX Runtime, fp32, batches 1, 2 and 4."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "tiny_models.py").write_text(TINY_PLUGIN)
    out = tmp_path_factory.mktemp("swept")
    code = infer("--plugins-dir", str(folder), "-m", "tiny/*", "-d", "digits", "--runtimes", "eager,onnxruntime",
                 "--precisions", "fp32", "--batch-sizes", "1,2,4", "--out", str(out), *FAST)
    assert code == 0
    return out


def test_every_row_is_filled_or_says_why_not(swept):
    rows = rows_of(swept)
    assert len(rows) == 3 * 2 * 3  # models x runtimes x batch sizes
    for row in rows:
        assert row["status"] in schema.INFERENCE_STATUSES
        if row["status"] == schema.Status.OK:
            assert float(row["throughput"]) > 0 and float(row["peak_memory_mb"]) > 0
            assert float(row["latency_p50_ms"]) <= float(row["latency_p90_ms"]) <= float(row["latency_p99_ms"])
            assert row["energy_source"] and float(row["energy_per_image_j"]) > 0 or row["energy_note"]
        else:
            assert row["error"], row


def test_onnxruntime_agrees_with_eager_fp32(swept):
    rows = by_key(rows_of(swept))
    for size in (1, 2, 4):
        row = rows[("tiny/net", "onnxruntime", "fp32", size)]
        assert row["status"] == schema.Status.OK
        assert float(row["agreement"]) >= 0.999 and float(row["max_logit_diff"]) < 1e-4
        assert row["compile_time_s"] and "CPUExecutionProvider" in row["runtime_version"]
        eager = rows[("tiny/net", "eager", "fp32", size)]
        assert float(eager["agreement"]) == 1.0 and float(eager["max_logit_diff"]) < 1e-5  # other batch sizes
        assert eager["accuracy"] == row["accuracy"]


def test_an_out_of_memory_batch_is_a_row_and_larger_ones_are_not_tried(swept):
    rows = by_key(rows_of(swept))
    assert [rows[("tiny/oom", "eager", "fp32", s)]["status"] for s in (1, 2, 4)] == ["ok", "ok", "oom"]
    assert "out of memory" in rows[("tiny/oom", "eager", "fp32", 4)]["error"]
    assert rows[("tiny/oom", "eager", "fp32", 2)]["agreement"]  # measured on the batches that fitted


def test_a_model_the_exporter_cannot_trace_fails_its_runtime_s_rows_only(swept):
    rows = by_key(rows_of(swept))
    assert all(rows[("tiny/branchy", "eager", "fp32", s)]["status"] == "ok" for s in (1, 2, 4))
    failed = [rows[("tiny/branchy", "onnxruntime", "fp32", s)] for s in (1, 2, 4)]
    assert all(r["status"] == "failed" and r["error"] for r in failed)


def test_the_run_is_recorded(swept):
    info = json.loads((swept / schema.INFERENCE_JSON).read_text())
    assert info["batch_sizes"] == [1, 2, 4] and info["runtimes"] == ["eager", "onnxruntime"]
    assert info["allocator"] and info["energy"]["counter"] and info["versions"]["onnxruntime"]


def test_a_rerun_replaces_its_own_rows_and_keeps_the_others(swept, tmp_path):
    from imgbench.inference.table import InferenceTable

    copy = tmp_path / schema.INFERENCE_CSV
    copy.write_text((swept / schema.INFERENCE_CSV).read_text())
    table = InferenceTable(copy)
    key = {"model": "tiny/net", "dataset": "digits", "runtime": "eager", "precision": "fp32", "batch_size": 2}
    table.put({**key, "status": schema.Status.FAILED, "error": "replaced"})
    rows = by_key(rows_of(tmp_path))
    assert len(rows) == 18 and rows[("tiny/net", "eager", "fp32", 2)]["error"] == "replaced"
    with pytest.raises(KeyError, match="not inference.csv columns"):
        table.put({**key, "speed": 1})


@pytest.mark.slow
def test_torch_compile_reports_each_batch_size_s_compile_time_apart(plugins, tmp_path):
    out = tmp_path / "out"
    assert infer("--plugins-dir", str(plugins), "-m", "tiny/net", "-d", "digits", "--runtimes", "compile",
                 "--precisions", "fp32", "--batch-sizes", "1,4", "--out", str(out), *FAST) == 0
    rows = by_key(rows_of(out))
    for size in (1, 4):
        row = rows[("tiny/net", "compile", "fp32", size)]
        assert row["status"] == "ok", row["error"]
        assert float(row["compile_time_s"]) > 0 and float(row["agreement"]) >= 0.999


@pytest.mark.slow
def test_a_trained_checkpoint_scores_what_the_engine_scored(tmp_path):
    """The engine's evaluation is the independent reference: the same checkpoint on the same test split gives
    the same accuracy in eager fp32 (and in ONNX Runtime, which agrees with it)."""
    from imgbench.engine import run_job

    job = run_job("keras/mnist_convnet", "digits", out_dir=tmp_path / "job", epochs=2, save_weights=True,
                  bench_seconds=0.05, progress=False)
    out = tmp_path / "out"
    assert infer("-d", "digits", "--weights", str(tmp_path / "job" / schema.MODEL_CHECKPOINT), "--runtimes",
                 "eager,onnxruntime", "--precisions", "fp32", "--batch-sizes", "32", "--test-samples", "0",
                 "--bench-seconds", "0.05", "--quiet", "--out", str(out)) == 0
    rows = by_key(rows_of(out))
    eager = rows[("keras/mnist_convnet", "eager", "fp32", 32)]
    n = int(eager["agreement_samples"])
    assert n == job.metrics["test_samples"]
    assert float(eager["accuracy"]) == pytest.approx(job.metrics["accuracy"], abs=1.5 / n)
    assert job.metrics["accuracy"] > 0.5  # trained: far above the 10% of random weights
    ort = rows[("keras/mnist_convnet", "onnxruntime", "fp32", 32)]
    assert float(ort["agreement"]) >= 0.999 and eager["weights"].endswith(schema.MODEL_CHECKPOINT)


# -- timing and the allocator -----------------------------------------------------------------------------------------
def test_latency_ms_returns_the_percentiles_asked_for():
    import torch

    from imgbench.engine import timing

    def forward(x):
        return x * 2

    figures = timing.latency_ms(forward, torch.ones(4), torch.device("cpu"), 0.02, percentiles=(50, 90, 99))
    assert figures["latency_p50_ms"] <= figures["latency_p90_ms"] <= figures["latency_p99_ms"]
    default = timing.latency_ms(forward, torch.ones(4), torch.device("cpu"), 0.02)
    assert {f"latency_p{p}_ms" for p in timing.LATENCY_PERCENTILES} <= set(default)


FAULTS_PROBE = """
import resource, sys
import timm, torch
from imgbench.inference.allocator import pin_thresholds
if sys.argv[1] == "pinned":
    pin_thresholds()
torch.set_num_threads(1)
model = timm.create_model("resnet18", num_classes=10).eval()  # as timm's benchmark.py builds it
with torch.inference_mode():
    x = torch.randn(128, 3, 32, 32)
    for _ in range(5):  # warm: glibc's thresholds have risen as far as they will
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_pinned_thresholds_keep_freed_memory_so_a_fresh_process_stops_faulting_it_back():
    """The cause of run_job reading 1.12x timm's benchmark.py (timm/resnet18, batch 128, 32 px): a fresh process
    returns freed activation memory to the kernel and faults it back in, zeroed, on every forward pass (about
    5,000 pages); one that trained first, or that pinned the thresholds, keeps it."""
    def faults(mode: str) -> float:
        done = subprocess.run([sys.executable, "-c", FAULTS_PROBE, mode], capture_output=True, text=True, check=True)
        return float(done.stdout.strip())

    assert faults("default") > 1000
    assert faults("pinned") < 100


# -- the report --------------------------------------------------------------------------------------------------
def _synthetic_rows() -> list[dict[str, object]]:
    rows = []
    for runtime, precision, agreement, energy in (("eager", "fp32", 1.0, 0.02), ("eager", "bf16", 0.95, 0.012),
                                                  ("onnxruntime", "fp32", 1.0, 0.015)):
        for size in (1, 8, 32):
            rows.append({"model": "m/a", "family": "m", "dataset": "digits", "runtime": runtime,
                         "precision": precision, "batch_size": size, "status": "ok", "error": "",
                         "throughput": 100.0 * size, "latency_p50_ms": 2.0, "latency_p90_ms": 3.0,
                         "latency_p99_ms": 4.5, "agreement": agreement, "max_logit_diff": 0.1,
                         "accuracy": 0.9 * agreement, "agreement_samples": 100, "energy_per_image_j": energy,
                         "energy_source": "nvml", "peak_memory_mb": 10.0})
    rows.append({"model": "m/a", "family": "m", "dataset": "digits", "runtime": "onnxruntime", "precision": "bf16",
                 "batch_size": 1, "status": "failed", "error": "InvalidGraph: no bf16 Conv"})
    return rows


def test_the_report_shows_the_inference_section_of_an_infer_folder(tmp_path):
    from imgbench.inference.table import InferenceTable
    from imgbench.report import render

    table = InferenceTable(tmp_path / schema.INFERENCE_CSV)
    for row in _synthetic_rows():
        table.put(row)
    html = render(tmp_path).read_text()  # no results.csv: an inference folder alone
    md = (tmp_path / schema.REPORT_MD).read_text()
    assert '<section id="inference">' in html and 'href="#inference"' in html
    assert 'id="inference-latency-digits"' in html and 'id="inference-agreement-digits"' in html
    assert html.count('data-flagged="true"') == 1 and "below 99%" in html  # eager bf16 at 95 %
    assert "InvalidGraph: no bf16 Conv" in html
    assert "#### Latency at batch 1" in md and "| m/a | onnxruntime | fp32 | 2.00 ms | 3.00 ms | 4.50 ms |" in md
    for key in ("inference-throughput", "inference-energy"):
        assert (tmp_path / schema.FIGURES_DIR / f"{key}-digits.png").is_file()


def test_the_report_of_a_grid_folder_gains_the_section_only_with_inference_csv(tmp_path):
    from report_synthetic import make_results  # the report tests' synthetic grid

    from imgbench.report import render

    make_results(tmp_path)
    assert '<section id="inference">' not in render(tmp_path).read_text()
    from imgbench.inference.table import InferenceTable

    table = InferenceTable(tmp_path / schema.INFERENCE_CSV)
    for row in _synthetic_rows():
        table.put(row)
    html = render(tmp_path).read_text()
    assert '<section id="inference">' in html and 'id="leaderboards"' in html


def test_docs_inference_table_is_the_generated_one():
    docs = (REPO / "docs" / "inference.md").read_text(encoding="utf-8")
    assert schema.markdown_table(schema.INFERENCE_COLUMNS) in docs, (
        "docs/inference.md's inference.csv table differs: replace it with `python -m imgbench.schema inference`")
