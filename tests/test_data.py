import pickle

import numpy as np
import pytest

import helpers as h
from helpers.data import BATCH_DIR, read_batch, write_cifar_batch
from helpers.safe_pickle import UnsafePickleError


def test_reads_standard_batches_as_hwc_uint8(synthetic_root):
    data = h.load_cifar10(synthetic_root, download=False)
    assert data.train_images.shape == (100, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (40, 32, 32, 3)
    assert data.train_labels.dtype == np.int64 and set(data.train_labels) == set(range(10))
    assert data.classes == h.CIFAR10_CLASSES
    assert str(synthetic_root) in data.source


def test_batch_rows_are_planar_rgb(tmp_path):
    """CIFAR rows hold 1024 red, then 1024 green, then 1024 blue values: the reader must not mix channels."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1] = (10, 20, 30)  # pixel at row 0, column 1
    write_cifar_batch(tmp_path / "b", image, [3])
    with open(tmp_path / "b", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][0]
    assert (row[1], row[1024 + 1], row[2048 + 1]) == (10, 20, 30)
    images, labels = read_batch(tmp_path / "b")
    assert np.array_equal(images, image) and labels.tolist() == [3]


def test_reads_python2_style_pickles_with_str_keys(tmp_path):
    """The offline copy's writer and the original use different key types; both must load."""
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(tmp_path / "b", "wb") as f:
        pickle.dump({"data": rows, "labels": [1, 2]}, f)
    images, labels = read_batch(tmp_path / "b")
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [1, 2]


def test_root_from_environment_variable(synthetic_root, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(synthetic_root))
    assert len(h.load_cifar10(download=False).test_labels) == 40


def test_missing_data_without_network_says_where_to_put_it(tmp_path, monkeypatch):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(h.DataError) as err:
        h.load_cifar10(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "cifar-10-batches-py" in message and "CIFAR10_ROOT" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one clear message, no chained trace


def test_truncated_batch_file_is_named(synthetic_root, tmp_path):
    folder = tmp_path / BATCH_DIR
    folder.mkdir()
    for f in (synthetic_root / BATCH_DIR).iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    victim = folder / "data_batch_3"
    victim.write_bytes(victim.read_bytes()[:5000])
    with pytest.raises(h.DataError, match="data_batch_3.*truncated or corrupt"):
        h.load_cifar10(tmp_path, download=False)


def test_wrong_shape_says_what_was_expected(tmp_path):
    with open(tmp_path / "b", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(h.DataError, match=r"expected 'data' as uint8 \[N, 3072\].*\[4, 1024\]"):
        read_batch(tmp_path / "b")


def test_batch_file_cannot_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "b", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": []}, f)
    with pytest.raises(UnsafePickleError, match="b.*refused to load.*builtins.print.*Nothing was executed"):
        read_batch(tmp_path / "b")


def test_incomplete_folder_lists_missing_files(synthetic_root, tmp_path):
    (tmp_path / BATCH_DIR).mkdir()
    (tmp_path / BATCH_DIR / "data_batch_1").write_bytes((synthetic_root / BATCH_DIR / "data_batch_1").read_bytes())
    with pytest.raises(h.DataError, match="missing data_batch_2.*test_batch"):
        h.load_cifar10(tmp_path, download=False)


def test_synthetic_fallback_goes_through_the_batch_reader_and_writes_nothing(tmp_path):
    data = h.load_cifar10(tmp_path, synthetic_if_missing=True)
    assert "SYNTHETIC" in data.source and str(tmp_path) in data.source
    assert data.train_images.shape == (1000, 32, 32, 3) and len(data.test_labels) == 200
    assert list(tmp_path.iterdir()) == [], "nothing is written into the data root"


def test_smoke_runs_use_synthetic_data_even_where_the_real_data_is(synthetic_root):
    """A smoke run checks the same thing on every machine: it never reads the dataset in the data root."""
    smoke = h.load_data(synthetic_root, smoke=True, n_train=50, n_test=20)
    assert smoke.source.startswith("SYNTHETIC") and len(smoke.train_labels) == 50 and len(smoke.test_labels) == 20
    real = h.load_data(synthetic_root, smoke=False)
    assert real.source.startswith("CIFAR-10 batch files") and len(real.train_labels) == 100


def test_train_val_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    images = np.arange(500)[:, None, None, None].repeat(32, 1).repeat(32, 2).repeat(3, 3).astype(np.uint16)
    split = h.train_val_split(images, labels, 100, seed=1)
    train_ids, val_ids = set(split.train_images[:, 0, 0, 0]), set(split.val_images[:, 0, 0, 0])
    assert not train_ids & val_ids and len(train_ids | val_ids) == 500
    assert np.bincount(split.val_labels).tolist() == [10] * 10
    again = h.train_val_split(images, labels, 0.2, seed=1)
    assert np.array_equal(again.val_labels, split.val_labels)
    with pytest.raises(ValueError):
        h.train_val_split(images, labels, 500)


def test_subset_is_class_balanced(synthetic_root):
    small = h.load_cifar10(synthetic_root, download=False).subset(n_train=30, n_test=None)
    assert np.bincount(small.train_labels, minlength=10).tolist() == [3] * 10
    assert len(small.test_labels) == 40


def test_real_copy_has_the_cifar10_shape_and_statistics(real_root):
    data = h.load_cifar10(real_root, download=False)
    assert data.train_images.shape == (50000, 32, 32, 3) and data.test_images.shape == (10000, 32, 32, 3)
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    mean = data.train_images.reshape(-1, 3).mean(0) / 255
    std = data.train_images.reshape(-1, 3).std(0) / 255
    assert np.allclose(mean, h.CIFAR10_MEAN, atol=0.005) and np.allclose(std, h.CIFAR10_STD, atol=0.01)


def test_source_says_when_the_images_were_decoded_from_jpeg_files(synthetic_root, tmp_path):
    assert "JPEG" not in h.load_cifar10(synthetic_root, download=False).source
    folder = tmp_path / BATCH_DIR
    folder.mkdir()
    for path in (synthetic_root / BATCH_DIR).iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f)
    batch[b"filenames"] = [name.replace(b".png", b".jpg") for name in batch[b"filenames"]]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    source = h.load_cifar10(tmp_path, download=False).source
    assert source.endswith("(decoded from JPEG files: a re-encoded copy such as the offline JPEG-75 one, "
                           "not the original pixels)")


def test_source_names_the_data_folder_without_the_machines_absolute_path(synthetic_root, monkeypatch):
    """A run record and a stored output say where the data was by $CIFAR10_ROOT (the GPU runner's /tmp folder, a
    user's disk), relative to the project, or by ~/: never by an absolute path of the machine that made them."""
    monkeypatch.setenv("CIFAR10_ROOT", str(synthetic_root))
    assert h.load_cifar10(download=False).source.startswith(f"CIFAR-10 batch files in $CIFAR10_ROOT/{BATCH_DIR}")
    assert h.shown_path(h.PROJECT_ROOT / "data" / BATCH_DIR) == f"data/{BATCH_DIR}"
