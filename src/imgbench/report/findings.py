"""Everything the report finds in a results folder: leaderboards, verdicts, comparisons, baseline changes,
failures and provenance, as one :class:`Report`. ``assemble`` reads and computes; nothing here draws or
writes (that is :mod:`imgbench.report.build`), so the pages can import this data model without a circle."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from imgbench.report import baseline as baseline_mod
from imgbench.report import fmt
from imgbench.report.figures import FigureFile
from imgbench.report.inference import InferenceFindings, load_inference
from imgbench.report.load import Results, load_results
from imgbench.report.noise import speed_notes
from imgbench.report.stats import ALPHA, Comparison, compare_top_two
from imgbench.report.tables import is_subset, leaderboard

FAILURE_COLUMNS = ["job_id", "model", "dataset", "seed", "status", "error"]
SPLIT_BY_ELSEWHERE = ("test_samples",)  # recipe fields that already give rows their own leaderboard


@dataclass(frozen=True)
class Verdict:
    """The answer for one leaderboard (a dataset and a test set): kind is significant | tie | untested | single
    | failed."""

    dataset: str
    kind: str
    headline: str
    details: list[str]
    tested_on: str = ""

    @property
    def text(self) -> str:
        return " ".join([self.headline, *self.details])


@dataclass
class Baseline:
    out_dir: Path
    board: pd.DataFrame
    changes: pd.DataFrame
    only_here: list[str]
    only_there: list[str]


@dataclass
class Report:
    results: Results
    board: pd.DataFrame
    comparisons: list[Comparison]
    baseline: Baseline | None = None
    figures: list[FigureFile] = field(default_factory=list)
    inference: InferenceFindings | None = None  # OUT/inference.csv, from `imgbench infer`
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def out_dir(self) -> Path:
        return self.results.out_dir

    @property
    def datasets(self) -> list[str]:
        return sorted(set(self.results.table["dataset"]))

    @property
    def failures(self) -> pd.DataFrame:
        return self.results.not_ok[FAILURE_COLUMNS].sort_values(["dataset", "model", "seed"])

    def speed_notes(self) -> list[str]:
        """Shown beside the speed columns and verdicts: shared-CPU jobs, figures too noisy to rank on."""
        return speed_notes(self.results.ok)

    def comparison(self, dataset: str, test_set: str = "") -> Comparison | None:
        return next((c for c in self.comparisons if c.dataset == dataset and c.tested_on == test_set), None)

    def test_sets(self, dataset: str) -> list[str]:
        """The test sets the dataset's leaderboards were scored on (one unless test_samples differed)."""
        return sorted(set(self.board.loc[self.board["dataset"] == dataset, "tested_on"]))

    def board_title(self, dataset: str, test_set: str) -> str:
        """A leaderboard's heading: the dataset, and its test set when that is a subset or one of several."""
        return f"{dataset}, {test_set}" if self._shows_test_set(dataset, test_set) else dataset

    def tested_note(self, dataset: str, test_set: str) -> str:
        """What a leaderboard of a test subset, or of one of several test sets, was scored and trained on."""
        note = f"Every model here was {test_set}."
        if len(self.test_sets(dataset)) > 1:
            note += " Rows tested on other images of the dataset are ranked in their own leaderboard, not here."
        ranked = self.board[(self.board["dataset"] == dataset) & (self.board["tested_on"] == test_set)]
        return " ".join([note, *_training_subsets(ranked)])

    def _place(self, dataset: str, test_set: str) -> str:
        return f"{dataset} ({test_set})" if self._shows_test_set(dataset, test_set) else dataset

    def _shows_test_set(self, dataset: str, test_set: str) -> bool:
        return is_subset(test_set) or len(self.test_sets(dataset)) > 1

    def headline(self) -> str:
        """The one line above everything: how many jobs, how many succeeded, or why there is nothing."""
        table = self.results.table
        if table.empty:
            return "results.csv has no jobs yet: there is nothing to compare."
        n_ok, n_models, n_datasets = len(self.results.ok), table["model"].nunique(), table["dataset"].nunique()
        if n_ok == 0:
            return f"All {len(table)} job(s) failed: there is no leaderboard; see Failures for the errors."
        seeds = ", ".join(str(int(s)) for s in sorted(table["seed"].dropna().unique()))
        summary = (f"{len(table)} jobs: {n_ok} ok, {len(table) - n_ok} not ok; {n_models} model"
                   f"{'s' * (n_models > 1)} on {n_datasets} dataset{'s' * (n_datasets > 1)}, seeds {seeds}.")
        return summary

    def verdicts(self) -> list[Verdict]:
        """One Verdict per leaderboard, in dataset order: a dataset whose rows were tested on different test
        subsets gets one per test set, and says that they are not ranked against each other."""
        out = []
        for dataset in self.datasets:
            test_sets = self.test_sets(dataset)
            if not test_sets:
                n_jobs = int((self.results.table["dataset"] == dataset).sum())
                out.append(Verdict(dataset, "failed", f"All {n_jobs} job(s) on {dataset} failed: no result.",
                                   ["See Failures for the errors."]))
            for test_set in test_sets:
                ranked = self.board[(self.board["dataset"] == dataset) & (self.board["tested_on"] == test_set)]
                where = self._place(dataset, test_set)
                if len(ranked) == 1:
                    leader = ranked.iloc[0]
                    verdict = Verdict(dataset, "single", f"{leader['model']} is the only model with results on "
                                      f"{where}: {fmt.number('accuracy', leader['accuracy_mean'])}.", [],
                                      test_set)
                else:
                    verdict = self._verdict(dataset, test_set, where, ranked)
                verdict.details.extend(_training_subsets(ranked))
                others = [t for t in test_sets if t != test_set]
                if others:
                    verdict.details.append(f"Not ranked against the rows {'; '.join(others)}: different test "
                                           f"images.")
                out.append(verdict)
        return out

    def _verdict(self, dataset: str, test_set: str, where: str, ranked: pd.DataFrame) -> Verdict:
        leader, second = ranked.iloc[0], ranked.iloc[1]
        c = self.comparison(dataset, test_set)
        lead = (f"{leader['model']} leads on {where} by {c.margin_points:.2f} points over {second['model']}"
                if c.margin_points > 0 else
                f"{leader['model']} and {second['model']} have the same mean accuracy on {where}")
        details = [f"Accuracy {fmt.number('accuracy', leader['accuracy_mean'])} against "
                   f"{fmt.number('accuracy', second['accuracy_mean'])}."]
        if not c.tested:
            kind, headline = "untested", f"{lead}; not tested: {c.reason}."
        elif c.significant:
            kind, headline = "significant", f"{lead}, significant ({_mcnemar(c)})."
        else:
            kind, headline = "tie", f"{lead}, not significant ({_mcnemar(c)}): treat them as tied."
        if c.tests_disagree:
            details.append(f"Borderline: the bootstrap interval of the difference, [{c.diff_low:+.2f}, "
                           f"{c.diff_high:+.2f}] points, {'excludes' if c.diff_low > 0 else 'includes'} zero.")
        details.extend(_cost(leader, second))
        return Verdict(dataset, kind, headline, details, test_set)

    def provenance(self) -> dict[str, list[tuple[str, str]]]:
        """Sections of (key, value) rows: run, environment (versions, device), datasets, recipe per dataset."""
        jobs = [self.results.metrics(job_id) for job_id in self.results.ok["job_id"]]
        jobs = [m for m in jobs if m]
        sections: dict[str, list[tuple[str, str]]] = {}
        if self.results.run_info:
            run = _flatten(self.results.run_info)
            if isinstance(run.get("command"), list):  # argv: show it as it was typed
                run["command"] = shlex.join(map(str, run["command"]))
            sections["Run (run.json)"] = [(k, _text(v)) for k, v in run.items()]
        environment = _tally([_flatten(m.get("provenance") or {}) for m in jobs])
        environment += _tally([{"device (results.csv)": d} for d in self.results.ok["device"] if d])
        sections["Environment"] = environment
        sections["Datasets"] = _tally([{f"{d} fingerprint": f} for d, f in
                                       zip(self.results.table["dataset"], self.results.table["dataset_fingerprint"])
                                       if f])
        for dataset in self.datasets:
            recipes = [_flatten(m.get("recipe") or {}) for m in jobs if m.get("dataset") == dataset]
            if recipes:
                sections[f"Recipe on {dataset}"] = _tally(recipes)
        return sections


def assemble(out_dir: str | Path, baseline: str | Path | None = None) -> Report:
    """Read ``out_dir`` (and the baseline folder) and compute every table and test of the report."""
    results = load_results(out_dir)
    name_recipe_variants(results)
    board = leaderboard(results.ok)
    report = Report(results, board, compare_top_two(results, board), inference=load_inference(results.out_dir))
    if baseline:
        base = load_results(baseline)
        name_recipe_variants(base)
        base_board = leaderboard(base.ok)
        only_here, only_there = baseline_mod.unmatched(board, base_board)
        report.baseline = Baseline(base.out_dir, base_board, baseline_mod.compare_to_baseline(board, base_board),
                                   only_here, only_there)
    return report


def name_recipe_variants(results: Results) -> None:
    """Jobs of one model on one dataset trained with different recipes (the reference suite's published and
    default recipes) are different entries: their model name gets the fields that differ, e.g.
    ``keras/mnist_convnet [epochs=15, optimizer=adam]``, so no leaderboard pools them as seeds of one."""
    ok = results.ok
    recipes = {job_id: (results.metrics(job_id) or {}).get("recipe") for job_id in ok["job_id"]}
    for (_, model), group in ok.groupby(["dataset", "model"]):
        known = {index: recipes[job_id] for index, job_id in zip(group.index, group["job_id"]) if recipes[job_id]}
        keys = sorted({key for recipe in known.values() for key in recipe} - set(SPLIT_BY_ELSEWHERE))
        differing = [key for key in keys
                     if len({json.dumps(r.get(key), sort_keys=True) for r in known.values()}) > 1]
        for index, recipe in known.items() if differing else ():
            label = ", ".join(f"{key}={recipe.get(key)}" for key in differing)
            results.table.loc[index, "model"] = f"{model} [{label}]"


def _training_subsets(ranked: pd.DataFrame) -> list[str]:
    """``Trained on 8,000 of 54,000 images.`` for each training subset among a leaderboard's rows."""
    subsets = sorted({label for labels in ranked["trained_on"] for label in labels.split("; ") if is_subset(label)})
    return [f"{label[0].upper()}{label[1:]}." for label in subsets]


def _mcnemar(c: Comparison) -> str:
    return f"McNemar {fmt.p_value(c.p_value)}, alpha {ALPHA}"


def _cost(leader: pd.Series, second: pd.Series) -> list[str]:
    """What the lead costs against the runner-up: inference speed and size."""
    lines = []
    speed, speed2 = leader["infer_throughput_mean"], second["infer_throughput_mean"]
    if pd.notna(speed) and pd.notna(speed2) and speed2 > 0:
        lines.append(f"Inference {fmt.number('infer_throughput', speed)} against "
                     f"{fmt.number('infer_throughput', speed2)} ({speed / speed2:.2f}x).")
    if pd.notna(leader["params_mean"]) and pd.notna(second["params_mean"]):
        lines.append(f"Parameters {fmt.number('params', leader['params_mean'])} against "
                     f"{fmt.number('params', second['params_mean'])}.")
    return lines


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _tally(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, value) per key; a key whose value differs between jobs lists each value with its job count."""
    counts: dict[str, Counter] = {}
    for record in records:
        for key, value in record.items():
            counts.setdefault(key, Counter())[_text(value)] += 1
    rows = []
    for key, counter in counts.items():
        if len(counter) == 1:
            rows.append((key, next(iter(counter))))
        else:
            rows.append((key, "; ".join(f"{v} ({n} jobs)" for v, n in counter.most_common())))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list)) for v in value):
        return f"{len(value)} entries (see the file)"  # e.g. run.json's grid: one record per job
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "none" if value is None else str(value)
