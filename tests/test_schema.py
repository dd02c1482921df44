"""The results schema is defined once (imgbench.schema); results.csv, metrics.json and the docs follow it (the docs'
table: tests/test_docs.py)."""

from __future__ import annotations

from imgbench import schema
from imgbench.engine.record import empty_metrics

CONTRACT = (
    "job_id, model, family, plugin, dataset, seed, status, error, accuracy, top5_accuracy, f1_macro, "
    "precision_macro, recall_macro, f1_weighted, precision_weighted, recall_weighted, balanced_accuracy, log_loss, "
    "ece, chance_accuracy, chance_p_value, did_not_learn, best_val_accuracy, train_throughput, infer_throughput, "
    "latency_p50_ms, latency_p95_ms, latency_p99_ms, train_throughput_rel_iqr, infer_throughput_rel_iqr, "
    "latency_rel_iqr, train_gpu_busy, infer_gpu_busy, params, flops, peak_memory_mb, train_peak_memory_mb, epochs, "
    "batch_size, image_size, model_input_size, train_samples, val_samples, test_samples, train_split_samples, "
    "test_split_samples, device, precision, threads, concurrency, load_average, free_cores, train_time_s, "
    "compile_time_s, time_to_target_s, train_energy_j, energy_per_train_image_j, energy_to_target_j, "
    "energy_per_inference_image_j, energy_source, energy_note, duration_s, dataset_fingerprint, config_hash, notebook"
)


def test_results_columns_match_the_contract():
    assert schema.RESULT_COLUMNS == tuple(CONTRACT.split(", "))


def test_metrics_json_carries_every_engine_column_and_the_job_identity():
    keys = set(empty_metrics())
    assert set(schema.ENGINE_COLUMNS) <= keys
    assert {"model", "dataset", "seed", "status", "error", "config_hash"} <= keys
    assert not keys & {"job_id", "duration_s", "notebook"}  # the runner's alone


def test_every_measured_figure_says_which_way_is_better():
    for name in ("accuracy", "f1_macro", "train_throughput", "infer_throughput", "latency_p50_ms", "params",
                 "flops", "peak_memory_mb"):
        assert schema.BY_NAME[name].better, name
    assert schema.higher_is_better("infer_throughput") and not schema.higher_is_better("latency_p50_ms")


def test_text_and_numeric_columns_split_the_table():
    assert set(schema.TEXT_COLUMNS) | set(schema.NUMERIC_COLUMNS) == set(schema.RESULT_COLUMNS)
    assert not set(schema.TEXT_COLUMNS) & set(schema.NUMERIC_COLUMNS)


def test_every_speed_figure_names_its_spread_column_and_the_report_names_each():
    from imgbench.report import noise

    assert schema.SPREADS == {"train_throughput": "train_throughput_rel_iqr",
                              "infer_throughput": "infer_throughput_rel_iqr", "latency_p50_ms": "latency_rel_iqr"}
    assert all(schema.BY_NAME[spread].better == schema.LOWER for spread in schema.SPREADS.values())
    assert set(noise.FIGURE_NAMES) == set(schema.SPREADS)
