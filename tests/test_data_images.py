"""pes.data.images: every source gives the same arrays, the paper's splits and normalisation,
and missing data fails within seconds with a message that says how to provide it."""

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from pes.data import images

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _raw(name, n_train=40, n_test=12, seed=0):
    spec = images.SPECS[name]
    rng = np.random.default_rng(seed)
    return images.RawData(
        rng.integers(0, 256, (n_train, *spec.shape), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.int32),
        rng.integers(0, 256, (n_test, *spec.shape), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.int32),
        "test",
    )


def _write_idx_dir(directory: Path, raw: images.RawData, gz: bool):
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train_images": raw.train_images[..., 0],
        "train_labels": raw.train_labels.astype(np.uint8),
        "test_images": raw.test_images[..., 0],
        "test_labels": raw.test_labels.astype(np.uint8),
    }
    for key, stem in images.IDX_FILES.items():
        images.write_idx(directory / (stem + suffix), arrays[key])


def _assert_same(a: images.ImageData, b: images.ImageData):
    for field in (
        "train_images",
        "train_labels",
        "val_images",
        "val_labels",
        "test_images",
        "test_labels",
    ):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        np.testing.assert_array_equal(x, y, err_msg=field)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    arr = np.random.default_rng(1).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    images.write_idx(path, arr)
    out = images.read_idx(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_idx_rejects_garbage(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        images.read_idx(tmp_path / "bad")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mock_tfds_idx_npz_give_identical_arrays(tmp_path, name):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    with tfds.testing.mock_data(num_examples=30):
        from_tfds = images.load(name, source="tfds", tfds_data_dir=tmp_path / "tfds", num_val=10)
        raw = images.load_raw(name, source="tfds", tfds_data_dir=tmp_path / "tfds")
    assert from_tfds.origin.startswith("tfds:")
    assert from_tfds.train_images.shape == (20, 28, 28, 1) and from_tfds.val_images.shape == (
        10,
        28,
        28,
        1,
    )
    _write_idx_dir(tmp_path / "idx" / name, raw, gz=True)
    (tmp_path / "npz").mkdir()
    images.save_npz(tmp_path / "npz" / f"{name}.npz", raw)
    from_idx = images.load(name, source="idx", data_dir=tmp_path / "idx", num_val=10)
    from_npz = images.load(name, source="npz", data_dir=tmp_path / "npz", num_val=10)
    from_auto = images.load(name, source="auto", data_dir=tmp_path / "idx", num_val=10)
    assert from_idx.origin.startswith("idx:") and from_npz.origin.startswith("npz:")
    assert from_auto.origin == from_idx.origin
    _assert_same(from_tfds, from_idx)
    _assert_same(from_tfds, from_npz)
    _assert_same(from_tfds, from_auto)


def test_cifar10_mock_tfds_and_npz_agree(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    with tfds.testing.mock_data(num_examples=24):
        raw = images.load_raw("cifar10", source="tfds", tfds_data_dir=tmp_path / "tfds")
    assert raw.train_images.shape == (24, 32, 32, 3) and raw.train_images.dtype == np.uint8
    images.save_npz(tmp_path / "cifar10.npz", raw)
    a = images.split(raw, "cifar10", num_val=8)
    b = images.load("cifar10", source="npz", data_dir=tmp_path, num_val=8)
    _assert_same(a, b)
    with pytest.raises(ValueError, match="source=idx is invalid for 'cifar10'"):
        images.load("cifar10", source="idx", data_dir=tmp_path)


def test_splits_and_normalisation():
    raw = _raw("mnist", n_train=40, n_test=12)
    data = images.split(raw, "mnist", num_val=10)
    np.testing.assert_array_equal(data.train_labels, raw.train_labels[:30])
    np.testing.assert_array_equal(data.val_labels, raw.train_labels[30:])
    np.testing.assert_array_equal(data.test_labels, raw.test_labels)
    assert data.train_images.dtype == np.float32
    expected = (raw.train_images[30:].astype(np.float64) / 255.0 - 0.13066) / 0.30811
    np.testing.assert_allclose(data.val_images, expected, rtol=1e-6, atol=1e-6)
    # per-channel constants for CIFAR-10: pixel value 0 maps to -mean_c / std_c in channel c
    zeros = np.zeros((1, 32, 32, 3), np.uint8)
    out = images.normalize(zeros, "cifar10")
    spec = images.SPECS["cifar10"]
    np.testing.assert_allclose(out[0, 0, 0], -np.array(spec.mean) / np.array(spec.std), rtol=1e-6)
    raw_kept = images.split(raw, "mnist", normalize_images=False, num_val=10)
    assert raw_kept.train_images.dtype == np.uint8
    with pytest.raises(ValueError, match="num_val=40 is invalid"):
        images.split(raw, "mnist", num_val=40)


def test_default_split_sizes_are_the_papers():
    raw = _raw("mnist", n_train=60_000, n_test=10)
    data = images.split(raw, "mnist", normalize_images=False)
    assert len(data.train_images) == 50_000 and len(data.val_images) == 10_000
    np.testing.assert_array_equal(data.val_images, raw.train_images[50_000:])


def test_missing_data_fails_fast_with_the_ways_to_provide_it(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(images, "host_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(images.DataUnavailableError) as info:
        images.load("mnist", source="auto", data_dir=tmp_path / "none", tfds_data_dir=tmp_path / "tfds")
    assert time.perf_counter() - start < 30
    msg = str(info.value)
    for part in ("'mnist'", "source=tfds", "IDX files", "mnist.npz", "unreachable"):
        assert part in msg, part
    with pytest.raises(
        images.DataUnavailableError, match="fashion_mnist.*apt-get install dataset-fashion-mnist"
    ):
        images.load("fashion_mnist", source="idx", data_dir=tmp_path / "none")
    with pytest.raises(images.DataUnavailableError, match="no mnist.npz"):
        images.load("mnist", source="npz", data_dir=tmp_path / "none")


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="dataset='svhn' is unknown; allowed: mnist, fashion_mnist, cifar10"):
        images.load("svhn")
    with pytest.raises(ValueError, match="source='web' is unknown"):
        images.load("mnist", source="web")


def test_reachability_probe_on_local_sockets():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert images.host_reachable(("127.0.0.1", port), timeout=2.0)
    finally:
        server.close()
    start = time.perf_counter()
    assert not images.host_reachable(("127.0.0.1", port), timeout=2.0)  # closed now: refused
    assert time.perf_counter() - start < 2.5


@pytest.mark.data
@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists() or images.system_data_hidden(),
    reason="real Fashion-MNIST not on this machine (apt-get install dataset-fashion-mnist; "
    "PES_NO_SYSTEM_DATA=1 hides it)",
)
def test_real_fashion_mnist_idx_files():
    raw = images.load_idx("fashion_mnist", FASHION_DIR)
    assert raw.train_images.shape == (60_000, 28, 28, 1) and raw.test_images.shape == (
        10_000,
        28,
        28,
        1,
    )
    np.testing.assert_array_equal(np.bincount(raw.train_labels), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(raw.test_labels), np.full(10, 1000))
    assert abs(raw.train_images.mean() - 72.94) < 0.05  # the known 0.2860 * 255
    data = images.load("fashion_mnist", source="auto")  # default data_dir: finds the system copy
    assert data.origin == f"idx:{FASHION_DIR}"
    assert data.train_images.shape == (50_000, 28, 28, 1) and data.val_images.shape == (
        10_000,
        28,
        28,
        1,
    )
    assert abs(float(data.train_images.mean())) < 0.01 and abs(float(data.train_images.std()) - 1.0) < 0.01
