"""Stage 2b: each seed's data made once per `lstmbench run` and handed to its runs as memory-mapped files.

Every strategy of a seed trains on the same data by construction (make_data is seeded); making it once in
the parent saves every run that time, and each row's `data_checksum`, computed by the run from what it
loaded, shows it. The files live in a private temporary folder (RAM-backed /dev/shm where it has room),
one seed at a time, and are removed when the next seed's data replaces them or the run ends: the cache is
not a result, and only storage touches results/.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .make import Dataset, Splits, make_data

ARRAYS = tuple(f.name for f in fields(Dataset) if f.name in ("tokens", "offsets", "labels", "padded", "padded_tags"))
SCALARS = tuple(f.name for f in fields(Dataset) if f.name not in ARRAYS)
ROOM = 2.0  # use /dev/shm only when it has twice the data's size free: it is RAM, and other programs share it


class SeedData:
    """`folder(suite, seed)`: the folder holding that seed's splits, made on the first request for them.
    Only the latest seed's files are kept. A context manager: leaving it removes the files."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._key: tuple | None = None
        self._folder: Path | None = None
        self._splits: tuple[tuple, Splits] | None = None  # for runs in this process (--inline)

    def __enter__(self) -> SeedData:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def splits(self, suite: Any, seed: int) -> Splits:
        """The seed's splits, in this process's memory (for runs in this process)."""
        key = (repr(suite.data), suite.origin, seed)
        if self._splits is None or self._splits[0] != key:
            self._splits = None  # the previous seed's data is freed before the next is made
            self._splits = (key, make_data(suite.data, seed, suite.origin))
        return self._splits[1]

    def folder(self, suite: Any, seed: int) -> Path | None:
        """None when the files cannot be written (no room, no temporary folder): the run then makes its data
        itself, as it always could."""
        key = (repr(suite.data), suite.origin, seed)
        if key == self._key:
            return self._folder
        self._drop()
        splits = make_data(suite.data, seed, suite.origin)
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"seed{seed}-", dir=self._root_for(nbytes(splits))))
            save(splits, folder)
        except OSError:
            return None
        self._key, self._folder = key, folder
        return folder

    def _root_for(self, size: int) -> Path:
        if self._root is None:
            shm = Path("/dev/shm")
            base = shm if shm.is_dir() and os.access(shm, os.W_OK) and _free(shm) > ROOM * size else None
            _remove_orphans(Path(base or tempfile.gettempdir()))
            self._root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
        return self._root

    def _drop(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._key = self._folder = None

    def close(self) -> None:
        self._drop()
        self._splits = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


PREFIX = "lstmbench-data-"


def _remove_orphans(base: Path) -> None:
    """Caches left by an `lstmbench run` that was killed (kill -9 leaves it no time to clean up): folders
    whose process is gone."""
    for folder in base.glob(f"{PREFIX}*-*"):
        pid = folder.name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _free(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def nbytes(splits: Splits) -> int:
    return sum(getattr(d, name).nbytes for d in (splits.train, splits.eval) for name in ARRAYS
               if getattr(d, name) is not None)


def save(splits: Splits, folder: Path) -> None:
    for part, data in (("train", splits.train), ("eval", splits.eval)):
        for name in ARRAYS:
            if getattr(data, name) is not None:
                np.save(folder / f"{part}.{name}.npy", getattr(data, name), allow_pickle=False)
        (folder / f"{part}.json").write_text(json.dumps({name: getattr(data, name) for name in SCALARS}))


def load(folder: str | os.PathLike) -> Splits:
    """The splits saved in `folder`, their arrays memory-mapped read-only (pages shared with the page cache)."""
    folder = Path(folder)

    def dataset(part: str) -> Dataset:
        arrays = {name: np.load(folder / f"{part}.{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in ARRAYS if (folder / f"{part}.{name}.npy").exists()}
        return Dataset(**arrays, **json.loads((folder / f"{part}.json").read_text()))

    return Splits(dataset("train"), dataset("eval"))
