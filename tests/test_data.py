"""The MNIST loader: the shared files give the known facts; missing or damaged files give an
error that says what was expected, where the loader looked and how to get the files; the
download path fetches from a mirror (here a local file:// mirror) and verifies what it got."""

import builtins
import gzip
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest
import torch

from quasigrad import data
from quasigrad.data import MNIST_FILES, DataError, load_mnist

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
GZ = [spec.name + ".gz" for spec in MNIST_FILES.values()]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(SHARED)


def test_shared_files_have_the_known_sizes_and_label_counts(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert torch.bincount(mnist.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist.test_labels, minlength=10).tolist() == TEST_COUNTS
    # The mean grey level of the training set, as the data README records it.
    assert abs(float(mnist.train_images.double().mean()) - 33.32) < 0.01


def test_flat_gives_grey_levels_in_unit_interval(mnist):
    x = mnist.flat(train=False)
    assert x.shape == (10000, 784) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def _copy(tmp_path, names=GZ):
    for name in names:
        shutil.copy(SHARED / name, tmp_path / name)
    return tmp_path


def test_uncompressed_files_load_too(tmp_path):
    for name in GZ:
        with gzip.open(SHARED / name, "rb") as src:
            (tmp_path / name[:-3]).write_bytes(src.read())
    m = load_mnist(tmp_path)
    assert m.test_images.shape == (10000, 28, 28)


def test_missing_files_name_the_files_the_places_and_the_way_to_get_them(tmp_path):
    _copy(tmp_path, GZ[:2])
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert str(tmp_path) in msg and "download=True" in msg and "QUASIGRAD_MNIST" in msg


def test_environment_variable_is_searched(tmp_path, monkeypatch):
    monkeypatch.delenv("QUASIGRAD_MNIST", raising=False)
    monkeypatch.delenv("QUASIGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")       # no ../shared/data/mnist beside this directory
    with pytest.raises(DataError) as err:
        load_mnist()
    assert str(tmp_path / "cache") in str(err.value) and "shared/data/mnist" in str(err.value)
    monkeypatch.setenv("QUASIGRAD_MNIST", str(SHARED))
    assert load_mnist(verify=False).test_labels.shape == (10000,)


@pytest.mark.parametrize("variable", ["QUASIGRAD_MNIST", "QUASIGRAD_DATA"])
def test_a_named_directory_without_the_files_is_an_error_not_a_fallback(tmp_path, monkeypatch, variable):
    # the cache holds the files, but the directory the user named does not: that is an error
    monkeypatch.delenv("QUASIGRAD_MNIST", raising=False)
    monkeypatch.delenv("QUASIGRAD_DATA", raising=False)
    cache = tmp_path / "cache"
    (cache / "quasigrad").mkdir(parents=True)
    (cache / "quasigrad" / "mnist").symlink_to(SHARED.resolve())
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert load_mnist(verify=False).test_labels.shape == (10000,)      # found in the cache
    monkeypatch.setenv(variable, str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        load_mnist(verify=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and f"${variable}" in msg and str(cache) not in msg


def test_a_root_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DataError, match="is not a directory"):
        load_mnist(tmp_path / "file")


def test_repository_fallback_is_searched_last(tmp_path, monkeypatch):
    monkeypatch.delenv("QUASIGRAD_MNIST", raising=False)
    monkeypatch.delenv("QUASIGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "mnist").symlink_to(SHARED.resolve())
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert load_mnist(verify=False).train_images.shape == (60000, 28, 28)


def test_truncated_file_is_reported_as_damaged(tmp_path):
    _copy(tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(SHARED / "t10k-labels-idx1-ubyte.gz", "rb") as src:
        raw = src.read()
    with gzip.open(target, "wb") as dst:
        dst.write(raw[:-100])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*damaged.*bytes"):
        load_mnist(tmp_path)


def test_corrupt_gzip_is_reported_as_damaged(tmp_path):
    _copy(tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(DataError, match="damaged"):
        load_mnist(tmp_path)


def test_changed_byte_fails_the_checksum(tmp_path):
    _copy(tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(SHARED / "t10k-labels-idx1-ubyte.gz", "rb") as src:
        raw = bytearray(src.read())
    raw[-1] = (raw[-1] + 1) % 10           # still a valid label, so only the checksum can tell
    with gzip.open(target, "wb") as dst:
        dst.write(bytes(raw))
    with pytest.raises(DataError, match="SHA-256"):
        load_mnist(tmp_path)
    assert load_mnist(tmp_path, verify=False).test_labels.shape == (10000,)


def test_download_from_a_mirror_fetches_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MNIST_MIRRORS", (SHARED.resolve().as_uri() + "/",))
    target = tmp_path / "dl"
    m = load_mnist(target, download=True)
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ)
    assert torch.bincount(m.train_labels, minlength=10).tolist() == TRAIN_COUNTS


def test_download_of_a_damaged_file_is_refused(tmp_path, monkeypatch):
    mirror = _copy(tmp_path / "mirror" if (tmp_path / "mirror").mkdir() is None else None)
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file at all")
    monkeypatch.setattr(data, "MNIST_MIRRORS", (mirror.resolve().as_uri() + "/",))
    with pytest.raises(DataError, match="could not download t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path / "dl", download=True)
    assert not (tmp_path / "dl" / "t10k-labels-idx1-ubyte.gz").exists()


def test_corrupt_deflate_stream_is_reported_as_damaged(tmp_path):
    # bytes changed inside the compressed stream: zlib's own error, not a gzip or OS error
    _copy(tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    for i in range(100, 108):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz is damaged: it could not be decompressed"):
        load_mnist(tmp_path)


def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    # 256 MB of zeros in a 250 KB file where 47 MB are expected: the loader stops reading past the
    # expected size, so its peak memory stays below the bomb's size.
    _copy(tmp_path)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(target, "wb", compresslevel=9) as fh:
        chunk = bytes(1 << 20)
        for _ in range(256):
            fh.write(chunk)
    assert target.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="decompresses to more than the 47040016 bytes expected"):
            load_mnist(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 160 << 20, f"peak {peak / 2**20:.0f} MiB"


def _deny(monkeypatch, path):
    """Make ``path`` unreadable: by its mode, and, where the tests run as root (who reads any file),
    by failing the opens and stats of it and of what is inside it."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open, real_stat = builtins.open, Path.stat

    def denied(p):
        p = Path(os.fspath(p))
        return p == path or path in p.parents

    def fake_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and denied(file):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    def fake_stat(self, *args, **kwargs):
        if path in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(Path, "stat", fake_stat)


def test_unreadable_file_is_reported(tmp_path, monkeypatch):
    _copy(tmp_path)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    _deny(monkeypatch, target)
    try:
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz cannot be read \(Permission denied\)"):
            load_mnist(tmp_path)
    finally:
        target.chmod(0o644)


def test_unreadable_directory_is_reported(tmp_path, monkeypatch):
    _copy(tmp_path / "mnist" if (tmp_path / "mnist").mkdir() is None else None)
    directory = tmp_path / "mnist"
    _deny(monkeypatch, directory)
    try:
        with pytest.raises(DataError, match=r"mnist cannot be read \(Permission denied\)"):
            load_mnist(directory)
    finally:
        directory.chmod(0o755)


@pytest.mark.parametrize("kwargs,match", [({"root": 3}, "root must be a directory path"),
                                          ({"root": SHARED, "verify": "yes"}, "verify must be a bool"),
                                          ({"root": SHARED, "download": 1}, "download must be a bool")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(TypeError, match=match):
        load_mnist(**kwargs)
