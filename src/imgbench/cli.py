"""The imgbench command: list models, datasets, suites and parameters; run a grid; build its report.

Listing commands import no deep-learning framework. User errors exit 2 with a message that names the
problem and the fix; ``run`` exits 1 when any job did not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Sequence

from imgbench import __version__
from imgbench.engine.recipe import resolve_recipe
from imgbench.errors import UsageError
from imgbench.inference import cli as infer_cli
from imgbench.paths import DATA_DIR_ENV, DataFolders
from imgbench.plugins import BLOCK_ENV, PLUGINS_DIR_ENV, repo_plugins_dir
from imgbench.recipe_fields import RECIPE_FIELDS
from imgbench.registry import Registry, registry_with
from imgbench.report import cli as report_cli
from imgbench.resources import copy_notebooks, shipped_suite_texts
from imgbench.runner import cli as run_cli
from imgbench.runner.suite import is_glob, suite_from_dict
from imgbench.terminal import plural, table, wrap

BROKEN_PIPE = 141  # the shell's code for a process whose reader went away (128 + SIGPIPE)
# Subcommands whose arguments and behaviour live with the code they drive (their modules import nothing heavy).
DELEGATED = {
    "report": (report_cli, "build the comparison report of a results folder"),
    "run": (run_cli, "run a benchmark grid (a suite TOML and/or -m/-d/--seeds)"),
    "infer": (infer_cli, "benchmark inference: batch sizes x precisions x runtimes, energy, agreement"),
}
# (name, one-line help, description) of the commands defined here; argparse shows the help in
# `imgbench --help` and the description in `imgbench NAME --help`.
LISTINGS = {
    "models": ("list models (globs: 'keras/*', 'timm/resnet*')",
               "List the registered models: name, family, the plugin that offers it, smallest input size."),
    "datasets": ("list datasets and where each would load from",
                 "List the registered datasets and where each would load from: local, cache or download."),
    "plugins": ("list plugins, their sources and load errors",
                "List the loaded plugins, what each registers, and the errors of those that failed to load."),
    "suites": ("list the shipped suites with their descriptions",
               "List the suites shipped with imgbench (use a name as `imgbench run NAME`)."),
    "params": ("list the recipe parameters with their defaults for a dataset",
               "List every recipe parameter (-p KEY=VALUE, a suite's [params]) with its type, its default "
               "for DATASET and what it does."),
    "notebooks": ("copy the shipped notebooks into a folder",
                  "Copy the shipped notebooks (benchmark.ipynb, report.ipynb) into DIR, to open in Jupyter."),
}


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("plugins and data")
    group.add_argument("--plugins-dir", action="append", default=[], metavar="DIR",
                       help=f"also load every *.py in DIR as a plugin (repeatable; env {PLUGINS_DIR_ENV})")
    group.add_argument("--block-plugin", action="append", default=[], metavar="NAME",
                       help=f"do not load plugin NAME (repeatable; env {BLOCK_ENV}=a,b)")
    group.add_argument("--strict", action="store_true", help="fail when any plugin fails to load")
    group.add_argument("--data-dir", metavar="DIR", help=f"local dataset copies (env {DATA_DIR_ENV})")
    return common


def registry_from_args(args: argparse.Namespace) -> Registry:
    return registry_with(args.plugins_dir, args.block_plugin, strict=args.strict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"imgbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()

    def listing(name: str, **kwargs) -> argparse.ArgumentParser:
        help_text, description = LISTINGS[name]
        return sub.add_parser(name, help=help_text, description=description, **kwargs)

    models = listing("models", parents=[common])
    models.add_argument("patterns", nargs="*", metavar="PATTERN")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    datasets = listing("datasets", parents=[common])
    datasets.add_argument("patterns", nargs="*", metavar="PATTERN")
    datasets.add_argument("--json", action="store_true")
    datasets.set_defaults(func=cmd_datasets)

    plugins = listing("plugins", parents=[common])
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    suites = listing("suites")
    suites.add_argument("--json", action="store_true")
    suites.set_defaults(func=cmd_suites)

    params = listing("params", parents=[common])
    params.add_argument("dataset", nargs="?", default="", metavar="DATASET",
                        help="whose defaults to show (default: the generic recipe, of datasets without their own)")
    params.add_argument("--json", action="store_true")
    params.set_defaults(func=cmd_params)

    notebooks = listing("notebooks")
    notebooks.add_argument("folder", metavar="DIR", help="where to write the copies (created if missing)")
    notebooks.add_argument("--force", action="store_true", help="overwrite copies already in DIR")
    notebooks.set_defaults(func=cmd_notebooks)

    for name, (delegate, help_text) in DELEGATED.items():
        command = sub.add_parser(name, parents=[common], help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        delegate.add_arguments(command)
        command.set_defaults(func=delegate.main)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    # a listed name is taken exactly, even when it holds glob characters; unlisted names may be resolved
    # (timm/<any timm architecture>)
    globs = [p for p in args.patterns if is_glob(p) and not registry.has_model(p)]
    exact = [p for p in args.patterns if p not in globs]
    specs = registry.models(globs) if globs or not exact else []
    for pattern in globs:
        if not registry.models([pattern]):
            raise UsageError(f"no model matches {pattern!r}; families: "
                             f"{', '.join(sorted({s.family + '/*' for s in registry.models()}))}. "
                             f"{plugin_folders_searched(registry)}")
    specs += [registry.model(name) for name in exact]
    rows = [{
        "name": s.name, "family": s.family, "plugin": registry.model_plugin(s.name)[0], "style": s.style,
        "min_size": s.min_size, "channels": ",".join(map(str, s.channels)), "pretrained": s.pretrained,
        "description": s.description,
    } for s in specs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows, ["name", "family", "plugin", "style", "min_size", "channels", "description"]))
        print(plural(len(rows), "model"))
    _warn_plugin_errors(registry)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    folders = DataFolders.resolve(args.data_dir)
    rows = []
    for spec in registry.datasets(args.patterns):
        where, detail = ("needs an argument", f"{spec.name}:/path/to/root") if spec.takes_arg else \
            spec.locate(arg="", **folders.as_kwargs())
        h, w, c = spec.image_shape
        rows.append({
            "name": spec.name, "classes": len(spec.classes) or "any",
            "shape": f"{h}x{w}x{c}" if h else "any",
            "splits": "/".join(str(spec.split_sizes.get(k, "?")) for k in ("train", "val", "test")),
            "source": where, "from": detail, "description": spec.description,
            "class_names": list(spec.classes),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows, ["name", "classes", "shape", "splits", "source", "from"]))
        print(wrap("splits are train/val/test image counts at the default validation size"))
    _warn_plugin_errors(registry)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """Exit status 1 when any plugin has an error, so that scripts can trust an exit status of 0."""
    registry = registry_from_args(args)
    infos = registry.plugins
    if args.json:
        print(json.dumps([{
            "name": p.name, "status": p.status, "source": p.source.kind, "location": p.source.location,
            "distribution": p.source.distribution, "version": p.source.version,
            "models": list(p.models), "datasets": list(p.datasets), "executors": list(p.executors),
            "errors": list(p.errors),
        } for p in infos], indent=2))
    else:
        for p in infos:
            print(wrap(f"{p.name}  [{p.source.kind}] {p.source.location}  {p.status}"))
            if p.models:
                print(wrap(f"    models ({len(p.models)}): {', '.join(p.models)}"))
            if p.datasets:
                print(wrap(f"    datasets: {', '.join(p.datasets)}"))
            if p.executors:
                print(wrap(f"    executors: {', '.join(p.executors)}"))
            for error in p.errors:
                print(wrap(f"    error: {error}"))
        if registry.blocked:
            print(wrap(f"blocked: {', '.join(registry.blocked)}"))
    return 1 if registry.errors else 0


def cmd_suites(args: argparse.Namespace) -> int:

    rows = []
    for name, text in shipped_suite_texts().items():
        suite = suite_from_dict(tomllib.loads(text), source=name)
        rows.append({"name": name, "models": len(suite.models), "datasets": len(suite.datasets),
                     "seeds": len(suite.seeds), "description": suite.description})
    if not rows:
        raise UsageError("no shipped suites found (package data imgbench.suites is missing); reinstall imgbench")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows, ["name", "models", "datasets", "seeds", "description"]))
        print(wrap("run one with `imgbench run NAME`; a suite file of your own with `imgbench run PATH.toml`"))
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    spec = None
    if args.dataset:  # by its base name, so `imgbench params imagefolder` needs no folder
        base = args.dataset.partition(":")[0]
        registry = registry_from_args(args)
        spec = {s.name: s for s in registry.datasets()}.get(base) or registry.dataset(base)[0]  # unknown: raises
    recipe = resolve_recipe(spec, {}).to_dict()
    if args.json:
        print(json.dumps([{"name": name, "type": field.kind.__name__, "default": recipe[name], "help": field.help}
                          for name, field in RECIPE_FIELDS.items()], indent=2))
        return 0
    tuned = resolve_recipe(spec, {"pretrained": True}).to_dict()

    def shown(kind: type, value: object) -> object:
        return json.dumps(value) if kind is str else str(value).lower() if kind is bool else value

    rows = [{"name": name, "type": field.kind.__name__, "default": shown(field.kind, recipe[name]),
             "from_weights": shown(field.kind, tuned[name]) if name != "pretrained" and tuned[name] != recipe[name]
             else "", "help": field.help} for name, field in RECIPE_FIELDS.items()]
    own = spec is not None and (spec.recipe.from_scratch or spec.recipe.from_weights)
    print(table(rows, ["name", "type", "default", "from_weights", "help"]))
    print(wrap(f"defaults for {args.dataset or 'any dataset without its own'} "
               f"({'its own recipe' if own else 'the generic recipe'}); FROM_WEIGHTS: where a job that starts from "
               f"trained weights (pretrained=true, weights=...) differs; a suite's [params] and "
               f"`imgbench run -p KEY=VALUE` (a TOML literal) override them"))
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    for path in copy_notebooks(args.folder, overwrite=args.force):
        print(path)
    print(wrap("open them with `jupyter lab`; benchmark.ipynb runs one job as is, report.ipynb wants a results folder"))
    return 0


def plugin_folders_searched(registry: Registry) -> str:
    """Which drop-in plugin folders were searched, and how to add one: a plugin file in no searched folder
    is simply not there."""
    searched = ", ".join(str(d) for d in registry.plugin_dirs) or "none"
    checkout = "" if repo_plugins_dir() else (
        f" (the plugins/ folder of an imgbench checkout is searched only when imgbench runs inside that checkout, "
        f"and {Path.cwd()} is not inside one)")
    return (f"Drop-in plugin folders searched: {searched}{checkout}; add one with --plugins-dir DIR or "
            f"{PLUGINS_DIR_ENV}=DIR.")


def _warn_plugin_errors(registry: Registry) -> None:
    if registry.errors:
        print(wrap(f"warning: {plural(len(registry.errors), 'plugin error')}; see `imgbench plugins`:"),
              file=sys.stderr)
        for error in registry.errors:
            print(wrap(f"  {error}"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(wrap(f"imgbench {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `imgbench params | head`: the reader left; say nothing more, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
