"""Where an official file comes from, in order: the local copy, the cache, a download.

Local copies live in ``<data dir>/<dataset>/`` (``IMGBENCH_DATA_DIR`` or ``--data-dir``); downloads in
``<cache>/<dataset>/downloads/``. Both are verified against the pinned checksums before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from imgbench.datasets.checksums import FileCheck, verify_file
from imgbench.datasets.download import fetch
from imgbench.datasets.errors import ChecksumError
from imgbench.specs import CanDownload, Where

DOWNLOADS = "downloads"


def local_folder(data_dir: Path | None, name: str) -> Path | None:
    return Path(data_dir) / name if data_dir is not None else None


def download_folder(cache_dir: Path, name: str) -> Path:
    return Path(cache_dir) / name / DOWNLOADS


def where_to_put(name: str, files: Sequence[FileCheck], data_dir: Path | None, cache_dir: Path) -> str:
    """The sentence an offline user needs: which files, and the folders that would hold them."""
    target = local_folder(data_dir, name) or f"$IMGBENCH_DATA_DIR/{name}"
    return (f"No network? Put the official {', '.join(f.name for f in files)} into {target}/ "
            f"(set IMGBENCH_DATA_DIR or pass --data-dir) or into {download_folder(cache_dir, name)}/, then load again.")


def find_files(name: str, files: Sequence[FileCheck], data_dir: Path | None, cache_dir: Path) -> tuple[Where, Path] | None:
    """``("local" | "cache", folder)`` of the first place holding every file, or None."""
    places: tuple[tuple[Where, Path | None], ...] = (("local", local_folder(data_dir, name)),
                                                    ("cache", download_folder(cache_dir, name)))
    for where, folder in places:
        if folder is not None and all((folder / f.name).is_file() for f in files):
            return where, folder
    return None


def obtain(name: str, files: Sequence[FileCheck], urls: Mapping[str, Sequence[str]], data_dir: Path | None,
           cache_dir: Path) -> tuple[str, dict[str, Path]]:
    """Every file verified in full (ready to parse), from the local copy, the cache or a download.

    Returns where they came from and their paths by name. A damaged local file is an error (we never
    overwrite a user's copy); a damaged cached file is downloaded again.
    """
    found = find_files(name, files, data_dir, cache_dir)
    if found is not None and found[0] == "local":
        for check in files:
            verify_file(found[1] / check.name, check, cache_dir, trust_memo=False)
        return f"local: {found[1]}", {f.name: found[1] / f.name for f in files}
    folder = download_folder(cache_dir, name)
    hint = where_to_put(name, files, data_dir, cache_dir)
    paths = {f.name: fetch(f, urls[f.name], folder / f.name, where_to_put=hint) for f in files}
    return (f"cache: {folder}" if found is not None else f"downloaded into {folder}"), paths


def checksum_problems(folder: Path, files: Sequence[FileCheck], cache_dir: Path) -> list[str]:
    """Why each file in ``folder`` fails its pinned checksum (remembered by size and mtime: cheap when warm)."""
    problems = []
    for check in files:
        try:
            verify_file(folder / check.name, check, cache_dir)
        except ChecksumError as exc:
            problems.append(str(exc))
    return problems


def files_problems(name: str, files: Sequence[FileCheck], urls: Mapping[str, Sequence[str]], data_dir: Path | None,
                   cache_dir: Path, can_download: CanDownload) -> list[str]:
    """What would stop :func:`obtain`, found without downloading: a local copy that fails its checksum (it is
    never changed), or files to download (absent, or a damaged cached copy) that this machine cannot download."""
    found = find_files(name, files, data_dir, cache_dir)
    if found is not None and found[0] == "local":
        return checksum_problems(found[1], files, cache_dir)
    needed = list(files)
    if found is not None:  # a damaged cached download is downloaded again
        needed = [f for f in files if checksum_problems(found[1], [f], cache_dir)]
    why = {}
    for check in needed:
        answers = [can_download(url) for url in urls[check.name]]
        if all(answers):  # no mirror can be reached
            why[check.name] = answers[0] if answers else "no download URL"
    if not why:
        return []
    missing = [f for f in needed if f.name in why]
    return [f"files must be downloaded, but this machine cannot download them ({why[missing[0].name]}). "
            f"{where_to_put(name, missing, data_dir, cache_dir)}"]
