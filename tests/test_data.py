"""Tests for fosc_jax.data: file formats written by hand here, tfds mock, pipeline vs numpy."""

from __future__ import annotations

import gzip
import os
import struct
import sys
import types
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax.data import (
    AUGMENT_NAMES,
    Dataset,
    augment_cifar,
    augment_none,
    crop_and_flip,
    epoch_permutation,
    get_augment,
    load_dataset,
    to_float,
)
from fosc_jax.data.idx import parse_idx
from fosc_jax.data.tfds_source import DataNotPrepared

MNIST_ENV = "FOSC_JAX_MNIST_DIR"
MNIST_FIRST_TRAIN = [5, 0, 4, 1, 9]
MNIST_FIRST_TEST = [7, 2, 1, 0, 4]


# ---- writers: each format encoded by hand from its specification -----------------------------
def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: 0x00 0x00, type 0x08 (ubyte), rank, big-endian uint32 dims, raw bytes."""
    assert arr.dtype == np.uint8
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(folder: Path, rng: np.random.Generator, n_train=5, n_test=3,
                gz=(True, False, False, True)):
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for (name, arr), use_gz in zip(arrays.items(), gz):
        data = idx_bytes(arr)
        if use_gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return list(arrays.values())


def cifar_record_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary: per record 1 label byte then the image as 3 planes of 32x32 (CHW)."""
    out = bytearray()
    for img, lab in zip(images, labels):
        out.append(int(lab))
        for ch in range(3):
            out += img[:, :, ch].tobytes()
    return bytes(out)


def write_cifar(folder: Path, rng: np.random.Generator, per_file=2):
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        x = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, (per_file,), dtype=np.uint8)
        (folder / name).write_bytes(cifar_record_bytes(x, y))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- files: MNIST IDX ------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [(True, True, True, True), (False, False, False, False),
                                (True, False, False, True)])
def test_mnist_idx_round_trip(tmp_path, rng, gz):
    xtr, ytr, xte, yte = write_mnist(tmp_path, rng, gz=gz)
    ds = load_dataset(f"files:{tmp_path}", "mnist")
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10 and ds.name == "mnist"
    np.testing.assert_array_equal(ds.x_train[..., 0], xtr)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.x_test[..., 0], xte)
    np.testing.assert_array_equal(ds.y_test, yte)


def test_files_source_with_data_dir_is_equivalent(tmp_path, rng):
    write_mnist(tmp_path, rng)
    a = load_dataset(f"files:{tmp_path}", "mnist")
    b = load_dataset("files", "mnist", data_dir=str(tmp_path))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    with pytest.raises(ValueError, match="once"):
        load_dataset(f"files:{tmp_path}", "mnist", data_dir=str(tmp_path))


def test_idx_big_endian_multibyte_types():
    vals = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    data = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 3) + vals.tobytes()
    out = parse_idx(data)
    np.testing.assert_array_equal(out, [[1, -2, 70000], [3, 4, -5]])
    assert out.dtype == np.int32


def test_idx_corrupt_magic_raises(tmp_path, rng):
    write_mnist(tmp_path, rng, gz=(False,) * 4)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x08\x03" + path.read_bytes()[2:])
    with pytest.raises(ValueError, match="magic.*train-labels|train-labels.*magic"):
        load_dataset(f"files:{tmp_path}", "mnist")


def test_idx_truncated_raises(tmp_path, rng):
    write_mnist(tmp_path, rng, gz=(False,) * 4)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="size mismatch"):
        load_dataset(f"files:{tmp_path}", "mnist")


def test_idx_corrupt_gzip_raises(tmp_path, rng):
    write_mnist(tmp_path, rng, gz=(True,) * 4)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="gzip"):
        load_dataset(f"files:{tmp_path}", "mnist")


def test_missing_mnist_file_is_named(tmp_path, rng):
    write_mnist(tmp_path, rng, gz=(False,) * 4)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"files:{tmp_path}", "mnist")


def test_missing_or_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.*expected"):
        load_dataset(f"files:{tmp_path / 'nope'}", "mnist")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset(f"files:{tmp_path}", "mnist")


def test_name_must_match_image_shape(tmp_path, rng):
    write_mnist(tmp_path, rng)
    with pytest.raises(ValueError, match=r"cifar10.*\(32, 32, 3\)"):
        load_dataset(f"files:{tmp_path}", "cifar10")


def test_ambiguous_folder_raises(tmp_path, rng):
    write_mnist(tmp_path, rng)
    write_cifar(tmp_path, rng)
    with pytest.raises(ValueError, match="several formats"):
        load_dataset(f"files:{tmp_path}", "mnist")


# ---- files: CIFAR-10 binary ------------------------------------------------------------------
def test_cifar_binary_round_trip(tmp_path, rng):
    xtr, ytr, xte, yte = write_cifar(tmp_path, rng)
    ds = load_dataset(f"files:{tmp_path}", "cifar10")
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train, xtr)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.x_test, xte)
    np.testing.assert_array_equal(ds.y_test, yte)


def test_cifar_binary_release_subfolder(tmp_path, rng):
    xtr, *_ = write_cifar(tmp_path / "cifar-10-batches-bin", rng)
    np.testing.assert_array_equal(load_dataset(f"files:{tmp_path}", "cifar10").x_train, xtr)


def test_cifar_binary_truncated_or_missing(tmp_path, rng):
    write_cifar(tmp_path, rng)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="data_batch_3.bin.*3073"):
        load_dataset(f"files:{tmp_path}", "cifar10")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin"):
        load_dataset(f"files:{tmp_path}", "cifar10")


# ---- files: npz ------------------------------------------------------------------------------
def small_npz_arrays(rng, hw=(28, 28)):
    return {"x_train": rng.integers(0, 256, (4, *hw), dtype=np.uint8),
            "y_train": np.array([0, 3, 9, 1], dtype=np.int64),
            "x_test": rng.integers(0, 256, (2, *hw), dtype=np.uint8),
            "y_test": np.array([[2], [5]], dtype=np.uint8)}


def test_npz_round_trip_path_and_folder(tmp_path, rng):
    arrays = small_npz_arrays(rng)
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    for source in (f"files:{tmp_path / 'mnist.npz'}", f"files:{tmp_path}"):
        ds = load_dataset(source, "mnist")
        np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
        np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"])
        assert ds.y_train.tolist() == [0, 3, 9, 1] and ds.y_test.tolist() == [2, 5]
        assert ds.y_train.dtype == np.int32


def test_npz_unknown_name_infers_num_classes(tmp_path, rng):
    np.savez(tmp_path / "d.npz", **small_npz_arrays(rng, hw=(5, 6)))
    ds = load_dataset(f"files:{tmp_path}", "toy")
    assert ds.num_classes == 10 and ds.image_shape == (5, 6, 1)


def test_npz_object_array_is_refused(tmp_path, rng):
    arrays = small_npz_arrays(rng)
    arrays["y_train"] = np.array([0, "x", None, 1], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match="allow_pickle"):
        load_dataset(f"files:{tmp_path}", "mnist")


def test_npz_bad_contents(tmp_path, rng):
    arrays = small_npz_arrays(rng)
    np.savez(tmp_path / "a.npz", x_train=arrays["x_train"])
    with pytest.raises(ValueError, match="lacks arrays y_train, x_test, y_test"):
        load_dataset(f"files:{tmp_path / 'a.npz'}", "mnist")
    np.savez(tmp_path / "b.npz", **{**arrays, "x_train": arrays["x_train"] / 255.0})
    with pytest.raises(ValueError, match="uint8"):
        load_dataset(f"files:{tmp_path / 'b.npz'}", "mnist")
    with pytest.raises(ValueError, match="2 .npz files"):
        load_dataset(f"files:{tmp_path}", "mnist")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="c.npz"):
        load_dataset(f"files:{tmp_path / 'c.npz'}", "mnist")


# ---- Dataset validation and load_dataset arguments -------------------------------------------
def test_dataset_validation():
    x = np.zeros((3, 2, 2, 1), np.uint8)
    y = np.array([0, 1, 2], np.int32)
    Dataset("ok", x, y, x, y, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        Dataset("bad", x, y, x, y, num_classes=2)
    with pytest.raises(ValueError, match="3 images but y_test has 2"):
        Dataset("bad", x, y, x, y[:2], num_classes=3)
    with pytest.raises(ValueError, match="x_train must be a uint8"):
        Dataset("bad", x[..., 0], y, x, y, num_classes=3)
    with pytest.raises(ValueError, match="y_train must be an int32"):
        Dataset("bad", x, y.astype(np.int64), x, y, num_classes=3)


def test_load_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'http'.*bundled"):
        load_dataset("http", "mnist")
    with pytest.raises(ValueError, match="needs a directory"):
        load_dataset("files", "mnist")
    with pytest.raises(ValueError, match="only.*mnist"):
        load_dataset("bundled", "cifar10")
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("tfds", "svhn")


# ---- bundled and real MNIST ------------------------------------------------------------------
def test_bundled_subset():
    ds = load_dataset("bundled", "mnist")
    assert ds.x_train.shape == (2000, 28, 28, 1) and ds.x_test.shape == (500, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.num_classes == 10
    assert ds.y_train[:5].tolist() == MNIST_FIRST_TRAIN
    assert ds.y_test[:5].tolist() == MNIST_FIRST_TEST
    assert set(np.unique(ds.y_train).tolist()) == set(range(10))
    bundled = Path(__file__).parents[1] / "fosc_jax/data/mnist_subset.npz"
    assert bundled.stat().st_size < 1.5e6


def _mnist_dir() -> str:
    path = os.environ.get(MNIST_ENV)
    if not path:
        pytest.skip(f"set {MNIST_ENV} to a folder with the four MNIST IDX files to run this test")
    return path


def test_real_mnist_idx_smoke():
    ds = load_dataset(f"files:{_mnist_dir()}", "mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train[:5].tolist() == MNIST_FIRST_TRAIN
    assert ds.y_test[:5].tolist() == MNIST_FIRST_TEST
    assert abs(ds.x_train.mean() / 255.0 - 0.1307) < 5e-4


def test_bundled_subset_equals_real_mnist_prefix():
    real = load_dataset(f"files:{_mnist_dir()}", "mnist")
    sub = load_dataset("bundled", "mnist")
    np.testing.assert_array_equal(sub.x_train, real.x_train[:2000])
    np.testing.assert_array_equal(sub.y_train, real.y_train[:2000])
    np.testing.assert_array_equal(sub.x_test, real.x_test[:500])
    np.testing.assert_array_equal(sub.y_test, real.y_test[:500])


# ---- tfds ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock_without_tensorflow(name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset("tfds", name)
        reference = tfds.data_source(name, split="test")
        ref_x = np.stack([np.asarray(reference[i]["image"]) for i in range(len(reference))])
        ref_y = [int(reference[i]["label"]) for i in range(len(reference))]
    assert ds.x_train.shape == (6, *shape) and ds.x_test.shape == (6, *shape)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_test, ref_x)
    assert ds.y_test.tolist() == ref_y


def test_tfds_without_tensorflow_explains_the_fix(monkeypatch, tmp_path):
    def data_source(*args, **kwargs):  # prepared as TFRecord: only tfds.load (TF) reads it
        raise NotImplementedError("Random access data source for FileFormat.TFRECORD")

    def load(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'tensorflow'")

    fake = types.SimpleNamespace(data_source=data_source, load=load, as_numpy=lambda d: d)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotPrepared, match=r"mnist is not prepared in .*files:DIR.*bundled"):
        load_dataset("tfds", "mnist")  # nothing on disk: never reaches tfds.load (download)
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
    with pytest.raises(RuntimeError,
                       match=r"pip install tensorflow-datasets tensorflow.*files:DIR"):
        load_dataset("tfds", "mnist")


def test_tfds_not_installed_explains_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"pip install tensorflow-datasets tensorflow"):
        load_dataset("tfds", "mnist")


# ---- pipeline --------------------------------------------------------------------------------
def test_to_float():
    x = jnp.arange(256, dtype=jnp.uint8).reshape(1, 16, 16, 1)
    out = to_float(x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out).ravel(), np.arange(256) / 255.0, rtol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        to_float(out)


def test_epoch_permutation():
    perm = jax.jit(epoch_permutation, static_argnums=(1, 2))(jax.random.key(0), 103, 10)
    assert perm.shape == (10, 10) and perm.dtype == jnp.int32
    flat = np.asarray(perm).ravel()
    assert len(set(flat.tolist())) == 100 and flat.min() >= 0 and flat.max() < 103
    other = np.asarray(epoch_permutation(jax.random.key(1), 103, 10)).ravel()
    assert not np.array_equal(flat, other)
    full = np.asarray(epoch_permutation(jax.random.key(2), 12, 4)).ravel()
    assert sorted(full.tolist()) == list(range(12))
    with pytest.raises(ValueError, match="batch_size"):
        epoch_permutation(jax.random.key(0), 5, 8)


def numpy_crop_flip(img: np.ndarray, dy: int, dx: int, flip: bool, pad: int = 4) -> np.ndarray:
    h, w, _ = img.shape
    out = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))[dy:dy + h, dx:dx + w]
    return out[:, ::-1] if flip else out


def test_crop_and_flip_matches_numpy(rng):
    x = rng.random((6, 5, 7, 2)).astype(np.float32)
    offsets = np.array([[0, 0], [8, 8], [0, 8], [8, 0], [3, 5], [4, 4]], dtype=np.int32)
    flips = np.array([False, True, False, True, True, False])
    out = jax.jit(crop_and_flip)(jnp.asarray(x), jnp.asarray(offsets), jnp.asarray(flips))
    out = np.asarray(out)
    for i in range(6):
        np.testing.assert_array_equal(out[i], numpy_crop_flip(x[i], *offsets[i], flips[i]))


def test_augment_cifar_outputs_are_valid_crops(rng):
    x = rng.random((8, 32, 32, 3)).astype(np.float32)
    out = np.asarray(jax.jit(augment_cifar)(jax.random.key(0), jnp.asarray(x)))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    for i in range(8):  # each output is one of the 9*9*2 brute-force candidates
        assert any(np.array_equal(out[i], numpy_crop_flip(x[i], dy, dx, f))
                   for dy in range(9) for dx in range(9) for f in (False, True))
    again = np.asarray(augment_cifar(jax.random.key(0), jnp.asarray(x)))
    np.testing.assert_array_equal(out, again)  # a pure function of (key, x)


def test_augment_cifar_is_independent_per_example():
    x = jnp.broadcast_to(jnp.arange(32.0 * 32 * 3).reshape(1, 32, 32, 3) / (32 * 32 * 3),
                         (16, 32, 32, 3))
    out = np.asarray(augment_cifar(jax.random.key(3), x))
    assert len({o.tobytes() for o in out}) > 8  # 162 outcomes: 16 draws cannot all coincide


def test_get_augment():
    assert AUGMENT_NAMES == ("none", "cifar")
    assert get_augment("cifar") is augment_cifar and get_augment("none") is augment_none
    x = jnp.ones((2, 4, 4, 1))
    assert augment_none(jax.random.key(0), x) is x
    with pytest.raises(ValueError, match="none, cifar"):
        get_augment("mixup")


# ---- training subsets (data.train_limit) -------------------------------------------------------
def _class_sorted_npz(tmp_path):
    """CIFAR-10's .npz as often shipped: sorted by class, so the first N are all class 0."""
    y = np.repeat(np.arange(10), 30).astype(np.int64)
    x = np.random.default_rng(0).integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
    path = tmp_path / "sorted.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    return f"files:{path}"


def test_train_limit_takes_a_seeded_random_subset(tmp_path):
    from fosc_jax.config import base_config
    from fosc_jax.training import load_training_data

    c = base_config()
    c.data.source, c.data.train_limit = _class_sorted_npz(tmp_path), 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all classes present: no warning
        ds = load_training_data(c)
    assert len(ds.y_train) == 50 and set(ds.y_train.tolist()) == set(range(10))
    again = load_training_data(c)
    np.testing.assert_array_equal(ds.x_train, again.x_train)  # seeded by config.seed
    c.seed = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 50 of 300 at random may miss a class; warned then
        assert not np.array_equal(load_training_data(c).x_train, ds.x_train)
    c.data.subset = "first"  # the older behaviour, for runs that started with it
    with pytest.warns(UserWarning, match=r"holds 2 of 10 classes \(missing \[2, 3, 4, 5, 6, 7, 8, 9\]\)"):
        first = load_training_data(c)
    assert first.y_train.tolist() == [0] * 30 + [1] * 20


def test_a_resume_compares_the_subset_only_with_a_train_limit_and_never_the_executor(tmp_path):
    from fosc_jax.config import ConfigError, base_config
    from fosc_jax.rundir.config_file import check_config

    old = base_config()
    old.data.train_limit = 100
    old.data.subset = "first"
    del old["executor"]  # a config.json written before the executor field
    (tmp_path / "config.json").write_text(old.to_json())
    new = base_config()
    new.data.train_limit = 100
    with pytest.raises(ConfigError, match=r"data.subset: 'first' -> 'random'"):
        check_config(str(tmp_path), new)
    new.data.subset = "first"
    new.executor = "host"
    check_config(str(tmp_path), new)  # the run resumes as it started, on another executor
    whole = tmp_path / "whole"
    whole.mkdir()
    old.data.train_limit = 0
    (whole / "config.json").write_text(old.to_json())
    check_config(str(whole), base_config())  # no subset taken: "first" and "random" agree
