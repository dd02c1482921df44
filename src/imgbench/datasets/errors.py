"""What can go wrong with a dataset, each with a message that names the file and the fix.

All are :class:`imgbench.errors.UsageError` subclasses: the CLI prints them plainly, and none of them is a
bug in imgbench (a file is missing, damaged, tampered with, or the network is down).
"""

from __future__ import annotations

from imgbench.errors import UsageError


class DatasetError(UsageError):
    """A dataset cannot be loaded as asked; the message says which file and what to do."""


class ChecksumError(DatasetError):
    """A file's size or hash differs from the pinned one: truncated, corrupted or not the official file."""


class UnsafeArchiveError(DatasetError):
    """An archive member would land outside the target folder, or is a link or device."""


class UnsafePickleError(DatasetError):
    """A pickle asks for something other than the plain arrays, lists and strings a dataset holds."""


class DownloadError(DatasetError):
    """A download failed for good (offline, refused URL, every retry and mirror exhausted)."""
