"""`--cache DIR`: decoded, resized and cropped uint8 images (and binary masks), stored once per source
file and geometry, so that sweeps over the same images decode no PNG or JPEG after the first run.

An entry's key is a hash of: this module's VERSION, what it holds (image or mask), the source's
resolved path, its size, mtime_ns and ctime_ns, and the dataset's transform key (every geometry
parameter of ImageDataset). Any change to the file or the geometry gives another key, so a stale entry
is never served; it is simply no longer used. Why file metadata and not a hash of the content: hashing
reads every source byte on every run (MVTec AD is 5 GB), which costs about what the cache saves on a
cold page cache. mtime alone can be carried over by `cp -p` or `rsync -a` onto a file of the same size;
ctime cannot be set by any tool and changes with every write, so a file replaced in place is still
noticed. (A chmod or a hard link also changes ctime: those files are decoded once more, harmlessly.)

Entries are written to a temporary file and renamed into place, so two runs sharing a cache never see
a partial entry; if both write the same entry the contents are identical. An entry is used only when it
is what its key promises: it names that key (a file copied or renamed in from another entry does not), its
array is uint8 of the shape the decoding setting gives (a mask's values 0 or 1) and its size two positive
integers. Anything else (an unreadable entry, e.g. from a disk that filled up earlier, or one replaced by
hand or by another tool) counts as a miss: the source is decoded again and the entry replaced.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common import UserError, atomic_write

VERSION = 2  # bump when decoding or resizing changes, so entries of the old code are not reused
# 2: EXIF orientation applied, floating-point images scaled from [0, 1]; entries name their key

Decoded = tuple[np.ndarray, tuple[int, int]]  # the uint8 array and the source's (width, height)


class ImageCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | Path, flag: str = "--cache") -> ImageCache:
        """The cache folder, created if missing; a one-line UserError when it cannot be a folder."""
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise UserError(f"{flag} {root} is a file; pass a folder for the decoded images")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{flag} {root}: cannot create the folder ({e.strerror}); pass a writable folder") \
                from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {root} is not writable; pass a writable folder")
        return cls(root)

    def entry(self, kind: str, source: Path, transform_key: str) -> Path:
        """Where the entry of `source` decoded with this transform lives (it may not exist yet)."""
        return self._path(self._digest(kind, source, transform_key))

    def _path(self, digest: str) -> Path:
        return self.root / f"v{VERSION}" / digest[:2] / f"{digest}.npz"

    @staticmethod
    def _digest(kind: str, source: Path, transform_key: str) -> str:
        info = source.stat()  # follows links: the file whose content is decoded
        text = "\n".join(map(str, (VERSION, kind, source.resolve(), info.st_size, info.st_mtime_ns,
                                   info.st_ctime_ns, transform_key)))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, kind: str, source: Path, transform_key: str, decode: Callable[[], Decoded],
            shape: tuple[int, ...]) -> Decoded:
        """The cached (array, original size) of `source`, decoded and stored on a miss; `shape` is the array's
        shape under this transform, what a stored entry must have to be used."""
        try:
            digest = self._digest(kind, source, transform_key)
        except OSError:
            return decode()  # missing or unreadable source: the decoder says so, in its words
        path = self._path(digest)
        try:
            with np.load(path) as stored:
                pixels, size, key = stored["pixels"], stored["size"], str(stored["key"])
            if key == digest and _valid(kind, pixels, size, shape):
                return pixels, (int(size[0]), int(size[1]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a miss, or an unreadable entry: decoded again and replaced
        pixels, size = decode()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # uncompressed: loading must beat decoding
                np.savez(f, pixels=pixels, size=np.array(size), key=np.array(digest))
        try:
            atomic_write(path, write)
        except OSError:
            pass  # a full or read-only cache slows the next run down, it does not stop this one
        return pixels, size


def _valid(kind: str, pixels: np.ndarray, size: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether a stored entry is what its key promises: uint8 of `shape` (a mask 0/1), a size of two positive ints."""
    if pixels.dtype != np.uint8 or pixels.shape != tuple(shape):
        return False
    if size.shape != (2,) or size.dtype.kind not in "iu" or size.min() < 1:
        return False
    return kind != "mask" or int(pixels.max()) <= 1
