"""The ``imagefolder:/path`` dataset, and :func:`imagefolder_dataset` for a plugin's own folder dataset.

Both read a folder-per-class tree through :mod:`.tree`: ``root/<class>/...`` (a test set is held out by
content) or ``root/train/<class>/...`` with ``root/test/<class>/...`` (the official split is kept).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from imgbench.datasets.tree import DEFAULT_SIZE, class_folders, is_split_layout, load_tree, scan_tree, tree_problems
from imgbench.errors import UsageError
from imgbench.specs import DatasetSpec, LoadedDataset, RecipeDefaults, Where


def _load_arg(*, image_size: int, val_size: float, data_dir: Path | None, cache_dir: Path,
              arg: str = "") -> LoadedDataset:
    if not arg:
        raise UsageError("imagefolder needs a folder: imagefolder:/path/to/root")
    tree = scan_tree(Path(arg))
    return load_tree(tree, name=f"imagefolder:{arg}", image_size=image_size, val_size=val_size,
                     cache_dir=cache_dir, source=f"local: {tree.root}")


def _check_root(root: str | Path, *, data_dir: Path | None, cache_dir: Path, arg: str = "",
                can_download: object = None) -> list[str]:
    if not str(root or arg):
        return ["imagefolder needs a folder: imagefolder:/path/to/root"]
    return tree_problems(Path(root or arg))


def _locate_root(root: str | Path, *, data_dir: Path | None, cache_dir: Path, arg: str = "") -> tuple[Where, str]:
    folder = Path(root or arg).expanduser()
    if not str(root or arg):
        return "missing", "needs a folder: imagefolder:/path/to/root"
    return ("local", str(folder.resolve())) if folder.is_dir() else ("missing", f"{folder} does not exist")


def imagefolder_dataset(name: str, root: str | Path, *, description: str = "", default_size: int = DEFAULT_SIZE,
                        recipe: RecipeDefaults | None = None) -> DatasetSpec:
    """A :class:`DatasetSpec` for a folder-per-class tree at ``root``, for a plugin to return from its
    ``imgbench_datasets`` hook. Listing reads only the class folder names; nothing is decoded until loaded.
    ``recipe`` gives its jobs their own defaults (none: the generic recipe).

    Example (a plugin file)::

        @imgbench.hookimpl
        def imgbench_datasets():
            return [imagefolder_dataset("pets", "/data/pets", description="Oxford pets, my copy",
                                        recipe=RecipeDefaults(from_scratch={"epochs": 30}))]
    """
    root = Path(root).expanduser()
    classes: tuple[str, ...] = ()
    if root.is_dir():
        classes = tuple(class_folders(root / "train" if is_split_layout(root) else root))

    def load(*, image_size: int, val_size: float, data_dir: Path | None, cache_dir: Path, arg: str = "") -> LoadedDataset:
        tree = scan_tree(root)
        return load_tree(tree, name=name, image_size=image_size, val_size=val_size, cache_dir=cache_dir,
                         source=f"local: {tree.root}", default_size=default_size)

    return DatasetSpec(name=name, load=load, locate=partial(_locate_root, root), check=partial(_check_root, root),
                       classes=classes, recipe=recipe or RecipeDefaults(),
                       description=description or f"images in class folders under {root}")


IMAGEFOLDER = DatasetSpec(
    name="imagefolder", load=_load_arg, locate=partial(_locate_root, ""), check=partial(_check_root, ""),
    takes_arg=True,
    description=f"any folder-per-class tree: imagefolder:/path (root/<class>/ or root/train|test/<class>/; "
                f"{DEFAULT_SIZE}px square unless image_size is set)",
)
