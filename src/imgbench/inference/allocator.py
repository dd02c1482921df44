"""glibc's malloc thresholds, pinned while inference is timed, so a figure does not depend on what the process
did before.

torch's CPU tensors come from glibc's malloc. Large blocks are mmap'd, and glibc raises its mmap and trim
thresholds as such blocks are freed, up to a ceiling, so how much of a forward pass's freed activation memory
goes back to the kernel (and is faulted in again, zeroed, on the next call) depends on the process's history.
A fresh process timing timm/resnet18 (batch 128, 32 px) takes about 5,500 minor page faults per forward
pass; one that trained first (``run_job``) takes none, and read about 1.12x faster for that alone
(docs/inference.md). Pinned, every process times with freed memory kept in its heap: the steady state of a
process that serves, whatever it ran before. ``GLIBC_ENV`` gives another process (timm's ``benchmark.py``)
the same thresholds through glibc's own environment variables.
"""

from __future__ import annotations

import ctypes
import platform

MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of freed heap instead of returning it after every call
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
GLIBC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def _libc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def pin_thresholds() -> str:
    """Pin the thresholds for this process; returns what is in force, for the run's record."""
    libc = _libc()
    if libc is None:
        return f"not glibc ({platform.system()}): the system allocator as it is"
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc refused mallopt: its default, history-dependent thresholds"
    return f"glibc malloc pinned: mmap threshold {MMAP_THRESHOLD // 2**20} MiB, trim threshold " \
           f"{TRIM_THRESHOLD // 2**20} MiB (environment equivalent: " \
           + " ".join(f"{k}={v}" for k, v in GLIBC_ENV.items()) + ")"


def release_free_memory() -> None:
    """Return the heap's free memory to the kernel (before a window whose peak resident memory is measured)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
