"""Content fingerprints of image folders, without rehashing thousands of files on every load.

A folder's fingerprint is the sha256 over its sorted relative paths and their files' sha256s, so it changes
exactly when a file is added, removed, renamed or edited. Hashing 20,000 PNGs costs seconds, so each file's
hash is remembered in a manifest under the cache keyed by (size, mtime_ns), the same trade-off git's index
makes: a file whose size and mtime are unchanged is not read again, and when no file changed the stored
fingerprint is reused. A warm load therefore costs one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from imgbench.datasets.checksums import cache_record, hash_file
from imgbench.paths import atomic_write_json

MANIFEST_DIR = "manifests"


def folder_content(root: Path, relpaths: Sequence[str], cache_dir: Path) -> tuple[list[str], str]:
    """The sha256 of every ``root/relpath`` and the folder's fingerprint, reusing the cached manifest."""
    root = Path(root).resolve()
    manifest_path = cache_record(cache_dir, MANIFEST_DIR, root)
    try:
        saved = json.loads(manifest_path.read_text(encoding="utf-8"))
        known, saved_fingerprint = saved["files"], saved["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        known, saved_fingerprint = {}, None
    entries, changed = {}, []
    base = f"{root}{os.sep}"
    for rel in relpaths:
        stat = os.stat(base + rel)
        entry = known.get(rel)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            entries[rel] = entry
        else:
            entries[rel] = [stat.st_size, stat.st_mtime_ns, None]
            changed.append(rel)
    for rel in tqdm(changed, unit="file", desc=f"hashing {root.name}", disable=None, leave=False):
        entries[rel][2] = hash_file(root / rel)["sha256"]
    hashes = [entries[rel][2] for rel in relpaths]
    if changed or len(known) != len(entries) or saved_fingerprint is None:
        fingerprint = _fingerprint(relpaths, hashes)
        atomic_write_json(manifest_path, {"root": str(root), "fingerprint": fingerprint, "files": entries})
        return hashes, fingerprint
    return hashes, saved_fingerprint


def _fingerprint(relpaths: Sequence[str], hashes: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for rel, file_hash in sorted(zip(relpaths, hashes)):
        digest.update(f"{rel}\t{file_hash}\n".encode())
    return f"sha256:{digest.hexdigest()}"
