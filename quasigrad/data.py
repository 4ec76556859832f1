"""Real data sets, read from their original files.

MNIST comes as four IDX files, gzip-compressed or not. `load_mnist` looks for them in
the directory it is given, else in `$QUASIGRAD_MNIST` (or `$QUASIGRAD_DATA/mnist`): a
directory named by the caller or by one of these variables is the only one searched, and one
that does not hold the files is an error naming it. With none named it searches the user's cache
(`$XDG_CACHE_HOME/quasigrad/mnist`, by default `~/.cache/quasigrad/mnist`), then
`../shared/data/mnist` (where the repository's checkouts find them).
It checks each file's size (decompressing no more than the expected number of bytes, so a gzip
bomb costs no memory), IDX header and the SHA-256 of its decompressed bytes, and when a file is
missing, damaged or unreadable says which file, what it expected and how to get the files.
With `download=True` it fetches missing files from the usual public mirrors and verifies them
before use. Nothing is ever generated to stand in for real data.

In this repository the files live in `../shared/data/mnist` (relative to the checkout).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union, cast

import numpy as np
import torch

__all__ = ["MNIST", "load_mnist", "mnist_dir_candidates", "DataError", "MNIST_FILES"]

PathLike = Union[str, os.PathLike]


class DataError(FileNotFoundError):
    """A data set's files are missing or damaged; the message says how to get them."""


@dataclasses.dataclass(frozen=True)
class _IdxFile:
    name: str            # file name without .gz
    magic: int           # IDX magic number
    shape: Tuple[int, ...]
    sha256: str          # SHA-256 of the decompressed bytes


# SHA-256 of the decompressed files: the same bytes whatever gzip settings compressed them.
MNIST_FILES: Dict[str, _IdxFile] = {
    "train-images": _IdxFile("train-images-idx3-ubyte", 2051, (60000, 28, 28),
                             "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels": _IdxFile("train-labels-idx1-ubyte", 2049, (60000,),
                             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test-images": _IdxFile("t10k-images-idx3-ubyte", 2051, (10000, 28, 28),
                            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test-labels": _IdxFile("t10k-labels-idx1-ubyte", 2049, (10000,),
                            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclasses.dataclass
class MNIST:
    """MNIST as tensors: images `uint8 (N, 28, 28)` and labels `int64 (N,)`."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    root: Path

    def split(self, train: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """`(images, labels)` of the training or the test split.

        Args:
            train: the training split (else the test split).

        Returns:
            `(images, labels)`: `uint8 (N, 28, 28)` and `int64 (N,)`.
        """
        return (self.train_images, self.train_labels) if train else (self.test_images, self.test_labels)

    def flat(self, train: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Images of a split as `(N, 784)` grey levels scaled to [0, 1].

        Args:
            train: the training split (else the test split).
            dtype: the floating dtype of the result.

        Returns:
            A `(N, 784)` tensor in `dtype`.
        """
        images = self.train_images if train else self.test_images
        return images.reshape(images.shape[0], -1).to(dtype) / 255.0


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "quasigrad" / "mnist"


def _explicit(root: PathLike | None) -> tuple[Path, str] | None:
    """The directory the caller named, with how it was named, or None."""
    if root is not None:
        return Path(root), "the root argument"
    if os.environ.get("QUASIGRAD_MNIST"):
        return Path(os.environ["QUASIGRAD_MNIST"]), "$QUASIGRAD_MNIST"
    if os.environ.get("QUASIGRAD_DATA"):
        return Path(os.environ["QUASIGRAD_DATA"]) / "mnist", "$QUASIGRAD_DATA"
    return None


def mnist_dir_candidates(root: Optional[PathLike] = None) -> List[Path]:
    """The directories `load_mnist` looks in, in order.

    Only the one named by `root`, `$QUASIGRAD_MNIST` or `$QUASIGRAD_DATA/mnist` if any is, else the user's
    cache and `../shared/data/mnist`.

    Args:
        root: a directory the caller names (it then is the only candidate).

    Returns:
        The candidate directories, in the order they are tried.
    """
    named = _explicit(root)
    if named is not None:
        return [named[0]]
    return [_cache_dir(), Path("..") / "shared" / "data" / "mnist"]  # the latter beside a checkout


def _unreadable(path: Path, exc: OSError) -> DataError:
    reason = exc.strerror or type(exc).__name__
    return DataError(f"{path} cannot be read ({reason}); check its permissions, or pass a directory "
                     f"that holds readable MNIST files")


def _find(directory: Path, spec: _IdxFile) -> Optional[Path]:
    for candidate in (directory / (spec.name + ".gz"), directory / spec.name,
                      directory / spec.name.replace("-idx", ".idx")):
        try:
            if candidate.is_file():
                return candidate
        except OSError as exc:   # a directory without search permission
            raise _unreadable(directory, exc) from None
    return None


def _read_bytes(path: Path, limit: int) -> bytes:
    """The file's contents, decompressed if gzip; at most `limit + 1` bytes are ever read or
    decompressed, so that a file larger than expected (a gzip bomb) is refused without the memory."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except PermissionError as exc:
        raise _unreadable(path, exc) from None
    except (OSError, EOFError, zlib.error) as exc:   # BadGzipFile is an OSError; a corrupt deflate stream is not
        raise DataError(f"{path} is damaged: it could not be decompressed ({exc})") from None
    if len(raw) > limit:
        raise DataError(f"{path} is damaged: it decompresses to more than the {limit} bytes expected")
    return raw


def _parse(path: Path, spec: _IdxFile, verify: bool) -> torch.Tensor:
    header = 4 * (1 + len(spec.shape))
    expected = header + int(np.prod(spec.shape))
    raw = _read_bytes(path, expected)
    if len(raw) != expected:
        raise DataError(f"{path} is damaged: {len(raw)} bytes after decompression, expected {expected} "
                        f"for {spec.name} of shape {spec.shape}")
    magic, *dims = struct.unpack(">" + "I" * (1 + len(spec.shape)), raw[:header])
    if magic != spec.magic or tuple(dims) != spec.shape:
        raise DataError(f"{path} is damaged: IDX header says magic {magic} and shape {tuple(dims)}, "
                        f"expected magic {spec.magic} and shape {spec.shape}")
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{path} is damaged: SHA-256 of its contents is {digest}, expected {spec.sha256}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(spec.shape)
    return torch.from_numpy(array.copy())


def _how_to_get(looked: List[Path]) -> str:
    names = ", ".join(s.name + ".gz" for s in MNIST_FILES.values())
    where = ", ".join(str(p) for p in looked)
    return (f"expected the MNIST files {names} (gzip-compressed or not); looked in: {where}. "
            f"Pass the directory that holds them (load_mnist(root=...) or --data DIR), set "
            f"QUASIGRAD_MNIST to it, or call load_mnist(download=True) to fetch them from a public mirror. "
            f"In the quasigrad repository they are in ../shared/data/mnist.")


def _download(directory: Path, spec: _IdxFile) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {directory} to download {spec.name}.gz into ({exc.strerror}); "
                        f"pass a writable directory") from None
    target = directory / (spec.name + ".gz")
    errors = []
    for mirror in MNIST_MIRRORS:
        url = mirror + spec.name + ".gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
            continue
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
        except OSError as exc:
            raise DataError(f"cannot write into {directory} to download {spec.name}.gz ({exc.strerror}); "
                            f"pass a writable directory") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        try:
            _parse(Path(tmp), spec, verify=True)
        except DataError as exc:
            os.unlink(tmp)
            errors.append(f"{url}: {exc}")
            continue
        os.replace(tmp, target)
        return target
    raise DataError(f"could not download {spec.name}.gz: " + "; ".join(errors))


def load_mnist(root: Optional[PathLike] = None, *, download: bool = False, verify: bool = True) -> MNIST:
    """Load MNIST from its original IDX files.

    Args:
        root: directory holding the four files. Default: `$QUASIGRAD_MNIST`, else
            `$QUASIGRAD_DATA/mnist`; a directory named by either (or by `root`) is the only
            one searched. With none named: the user's cache directory, then `../shared/data/mnist`.
        download: fetch missing files from a public mirror into `root` (or the cache) and verify them.
        verify: check the SHA-256 of each file's decompressed contents (size and header are always checked).

    Returns:
        `MNIST` with `uint8` images `(N, 28, 28)` and `int64` labels.

    Raises:
        DataError: a file is missing, damaged or unreadable; the message names the file or the
            directory (and the variable that named it), what was expected and how to get the files.
    """
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a directory path (str or os.PathLike) or None, got {type(root).__name__}")
    for name, flag in (("download", download), ("verify", verify)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    named = _explicit(root)
    if named is not None:
        try:
            not_dir = named[0].exists() and not named[0].is_dir()
        except OSError as exc:   # a parent without search permission
            raise _unreadable(named[0], exc) from None
        if not_dir:
            raise DataError(f"{named[0]} (set by {named[1]}) is not a directory; " + _how_to_get([named[0]]))
    candidates = mnist_dir_candidates(root)
    for directory in candidates:
        found = {key: _find(directory, spec) for key, spec in MNIST_FILES.items()}
        if all(found.values()):
            break
    else:
        directory = candidates[0]
        found = {key: _find(directory, spec) for key, spec in MNIST_FILES.items()}
        if not download:
            missing = [MNIST_FILES[k].name for k, v in found.items() if v is None]
            where = "" if named is None else f" in {named[0]} (set by {named[1]})"
            raise DataError(f"MNIST files missing{where} ({', '.join(missing)}): " + _how_to_get(candidates))
        for key, spec in MNIST_FILES.items():
            if found[key] is None:
                found[key] = _download(directory, spec)
    tensors = {}
    for key, spec in MNIST_FILES.items():
        try:
            tensors[key] = _parse(cast(Path, found[key]), spec, verify)
        except DataError as exc:
            raise DataError(f"{exc}. " + _how_to_get([directory])) from None
    return MNIST(tensors["train-images"], tensors["train-labels"].long(),
                 tensors["test-images"], tensors["test-labels"].long(), root=directory)
