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
from imgbench.report.explain import what_one_interval_knows, what_the_interval_knows
from imgbench.report.figures import FigureFile
from imgbench.report.inference import InferenceFindings, load_inference
from imgbench.report.load import Results, load_results
from imgbench.report.noise import mark_noisy, speed_notes
from imgbench.report.significance import Comparison, assess
from imgbench.report.stats import CONFIDENCE
from imgbench.report.tables import is_subset, leaderboard

FAILURE_COLUMNS = ["job_id", "model", "dataset", "seed", "status", "error"]
SPLIT_BY_ELSEWHERE = ("test_samples",)  # recipe fields that already give rows their own leaderboard


@dataclass(frozen=True)
class Verdict:
    """The answer for one leaderboard (a dataset and a test set): kind is significant | tie | untested | single
    | no_learner (every model's jobs did not learn) | failed."""

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
        """Shown once, above the leaderboards: shared-CPU jobs, figures too noisy to rank on and why."""
        return speed_notes(self.results.ok)

    def comparison(self, dataset: str, test_set: str, model: str) -> Comparison | None:
        """``model`` against the leader of the leaderboard (dataset, test set); None for the leader itself and
        for a model that did not learn."""
        return next((c for c in self.comparisons
                     if (c.dataset, c.tested_on, c.other) == (dataset, test_set, model)), None)

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
            return f"{_all(len(table), 'job')} failed: there is no leaderboard; see Failures for the errors."
        seeds = sorted(int(s) for s in table["seed"].dropna().unique())
        return (f"{fmt.plural(len(table), 'job')}: {n_ok} ok, {len(table) - n_ok} not ok; "
                f"{fmt.plural(n_models, 'model')} on {fmt.plural(n_datasets, 'dataset')}, "
                f"{fmt.noun_form(len(seeds), 'seed')} {', '.join(map(str, seeds))}.")

    def verdicts(self) -> list[Verdict]:
        """One Verdict per leaderboard, in dataset order: a dataset whose rows were tested on different test
        subsets gets one per test set, and says that they are not ranked against each other."""
        out = []
        for dataset in self.datasets:
            test_sets = self.test_sets(dataset)
            if not test_sets:
                n_jobs = int((self.results.table["dataset"] == dataset).sum())
                out.append(Verdict(dataset, "failed", f"{_all(n_jobs, 'job')} on {dataset} failed: no result.",
                                   ["See Failures for the errors."]))
            for test_set in test_sets:
                ranked = self.board[(self.board["dataset"] == dataset) & (self.board["tested_on"] == test_set)]
                verdict = self._verdict(dataset, test_set, self._place(dataset, test_set), ranked)
                verdict.details.extend(_training_subsets(ranked))
                others = [t for t in test_sets if t != test_set]
                if others:
                    verdict.details.append(f"Not ranked against the rows {'; '.join(others)}: different test "
                                           f"images.")
                out.append(verdict)
        return out

    def _verdict(self, dataset: str, test_set: str, where: str, ranked: pd.DataFrame) -> Verdict:
        learnt = ranked[ranked["rank"].notna()].sort_values("rank")
        unranked = [f"Not ranked: {row['model']} did not learn ({row['did_not_learn']})."
                    for _, row in ranked[ranked["rank"].isna()].iterrows()]
        if learnt.empty:
            return Verdict(dataset, "no_learner", f"No model learnt on {where}: each has a job that did not, so "
                           "there is no leader.", unranked, test_set)
        leader = learnt.iloc[0]
        if len(learnt) == 1:
            only = "the only model with results" if ranked.shape[0] == 1 else "the only model that learnt"
            return Verdict(dataset, "single", f"{leader['model']} is {only} on {where}: "
                           f"{_score(leader)}.", [what_one_interval_knows(leader), *unranked], test_set)
        second = learnt.iloc[1]
        c = self.comparison(dataset, test_set, second["model"])
        details = [f"Accuracy {_score(leader)} against {_score(second)}."]
        if c is None or (d := c.difference) is None:
            lead = 100 * (leader["accuracy_mean"] - second["accuracy_mean"])
            reason = c.reason if c else "no comparison was made"
            return Verdict(dataset, "untested", f"{leader['model']} leads on {where} by {lead:.2f} points over "
                           f"{second['model']}; not tested: {reason}.", [*details, *unranked,
                                                                        *_cost(leader, second)], test_set)
        interval, p = fmt.points_interval(d.low, d.high), fmt.p_value(d.p_value)
        if c.significant:
            kind, headline = "significant", (f"{leader['model']} leads on {where} by {100 * d.value:.2f} points "
                                             f"over {second['model']}: significant ({CONFIDENCE:.0%} interval of "
                                             f"the lead {interval}, {p}).")
        else:
            kind, headline = "tie", (f"{leader['model']} and {second['model']} are tied on {where}: "
                                     f"{leader['model']} is ahead by {100 * d.value:.2f} points, but the "
                                     f"{CONFIDENCE:.0%} interval of the lead, {interval}, includes zero ({p}).")
        details += [*what_the_interval_knows(c), *unranked, *_cost(leader, second)]
        return Verdict(dataset, kind, headline, details, test_set)

    def provenance(self) -> dict[str, list[tuple[str, str]]]:
        """Sections of (key, value) rows: run, environment (versions, device), datasets, recipe per dataset."""
        jobs = [m for m in map(self.results.metrics, self.results.ok["job_id"]) if m]
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
    board, comparisons = _boards(results)
    report = Report(results, board, comparisons, inference=load_inference(results.out_dir))
    if baseline:
        base = load_results(baseline)
        base_board, _ = _boards(base)
        only_here, only_there = baseline_mod.unmatched(board, base_board)
        report.baseline = Baseline(base.out_dir, base_board, baseline_mod.compare_to_baseline(board, base_board),
                                   only_here, only_there)
    return report


def _boards(results: Results) -> tuple[pd.DataFrame, list[Comparison]]:
    """The leaderboards with every interval and noise flag, and the comparisons with each leader."""
    name_recipe_variants(results)
    board, comparisons = assess(results, leaderboard(results.ok))
    return mark_noisy(board, results.ok), comparisons


def name_recipe_variants(results: Results) -> None:
    """Jobs of one model on one dataset trained with different recipes (the reference suite's published and
    default recipes) are different entries: their model name gets the fields that differ, e.g.
    ``keras/mnist_convnet [epochs=15, optimizer=adam]``, so no leaderboard pools them as seeds of one."""
    ok = results.ok
    recipes: dict[str, dict[str, Any]] = {job_id: (results.metrics(job_id) or {}).get("recipe") or {}
                                          for job_id in ok["job_id"]}
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


def _all(n: int, noun: str) -> str:
    """'The 1 job' / 'All 3 jobs': the subject of 'failed'."""
    return f"The {fmt.plural(n, noun)}" if n == 1 else f"All {fmt.plural(n, noun)}"


def _score(row: pd.Series) -> str:
    """'96.52 % [93.10, 98.40]': a leaderboard row's accuracy with the interval the leaderboard shows."""
    return " ".join(filter(None, [fmt.number("accuracy", row["accuracy_mean"]),
                                  fmt.interval("accuracy", row["accuracy_low"], row["accuracy_high"])]))


def _cost(leader: pd.Series, second: pd.Series) -> list[str]:
    """What the lead costs against the runner-up: inference speed (unless noisy) and size."""
    lines = []
    speed, speed2 = leader["infer_throughput_mean"], second["infer_throughput_mean"]
    if leader.get("infer_throughput_noisy") or second.get("infer_throughput_noisy"):
        lines.append(f"Inference {fmt.number('infer_throughput', speed)} against "
                     f"{fmt.number('infer_throughput', speed2)}: too noisy to compare (see the note under "
                     "Leaderboards).")
    elif pd.notna(speed) and pd.notna(speed2) and speed2 > 0:
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
