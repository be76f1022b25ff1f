import gzip

import numpy as np
import pytest
import torch
from conftest import COLORS, make_image, write_cifar_archive, write_idx_set

from imgcls.data.dataset import ArrayDataset, FileDataset
from imgcls.data.materialize import infer_channels, materialize
from imgcls.data.sources import FASHION_CLASSES, load_source, read_idx, write_idx
from imgcls.errors import DataError


def test_idx_roundtrip_and_truncation(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), a)
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "bad").write_bytes(raw[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "bad")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "junk")


def test_embedded_sample_is_real_stratified_fashion_mnist():
    s = load_source("sample")
    assert s.classes == FASHION_CLASSES
    assert isinstance(s.train, ArrayDataset) and s.train.images.shape == (5000, 1, 28, 28)
    assert s.train.counts() == [500] * 10 and s.test.counts() == [100] * 10
    # real clothes, not noise: mean brightness of Fashion-MNIST is about 0.286
    assert 0.25 < s.train.images.float().mean().item() / 255 < 0.32


def test_idx_source_from_data_dir(tmp_path):
    write_idx_set(tmp_path)
    s = load_source("mnist", data_dir=tmp_path)
    assert len(s.train) == 40 and len(s.test) == 10
    assert torch.equal(s.train.images[:, 0, 0, 0].long(), s.train.labels * 20)
    with pytest.raises(DataError, match="no mnist IDX files"):
        load_source("mnist", data_dir=tmp_path / "nothing")


@pytest.mark.skipif(not __import__("os").path.exists("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    s = load_source("fashion-mnist")
    assert s.train.images.shape == (60000, 1, 28, 28) and len(s.test) == 10000


@pytest.mark.parametrize("archive", [True, False])
def test_cifar10_archive_and_folder(tmp_path, archive):
    write_cifar_archive(tmp_path, archive=archive)
    s = load_source("cifar10", data_dir=tmp_path)
    assert s.classes == [f"class{i}" for i in range(10)]
    assert s.train.images.shape == (50, 3, 32, 32) and len(s.test) == 20
    assert torch.equal(s.train.images[:, 1, 5, 5].long(), s.train.labels * 2)


def test_cifar100(tmp_path):
    write_cifar_archive(tmp_path, cifar100=True)
    s = load_source("cifar-100", data_dir=tmp_path)
    assert len(s.classes) == 100 and len(s.train) == 50
    assert torch.equal(s.test.images[:, 0, 0, 0].long(), s.test.labels * 2)


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar_archive(tmp_path, archive=False)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="refusing"):
        load_source("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_digits_has_fixed_test_split():
    a, b = load_source("digits"), load_source("digits")
    assert len(a.train) + len(a.test) == 1797 and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.max() == 255


def test_folder_scan_and_bad_files_are_skipped(color_folder):
    s = load_source(str(color_folder))
    assert s.classes == sorted(COLORS) and isinstance(s.train, FileDataset)
    assert len(s.train) == 36 + 3  # .txt ignored; bad images are found when decoding
    assert infer_channels(s.train) == 3
    arr, skipped = materialize(s.train, 16, 3)
    assert len(arr) == 36 and len(skipped) == 3
    assert any("empty.png" in m for m in skipped) and any("truncated.png" in m for m in skipped)
    assert any("noise.jpg" in m for m in skipped)
    # the known answer: each class's mean colour is its colour's dominant channel
    for c, name in enumerate(s.classes):
        mean = arr.images[arr.labels == c].float().mean((0, 2, 3))
        assert mean.argmax().item() == int(np.argmax(COLORS[name]))
    # the second call comes from the decoded cache, identical
    arr2, skipped2 = materialize(s.train, 16, 3)
    assert torch.equal(arr.images, arr2.images) and skipped2 == skipped


def test_folder_split_layout(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(3):
                make_image(tmp_path / split / c / f"{i}.png", (i * 40, 0, 0), mode="L")
    s = load_source(str(tmp_path))
    assert len(s.train) == 6 and len(s.test) == 6 and s.classes == ["a", "b"]
    assert infer_channels(s.train) == 1


def test_folder_errors(tmp_path):
    (tmp_path / "a").mkdir()
    make_image(tmp_path / "b" / "x.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"a: class folder has no image files"):
        load_source(str(tmp_path))
    with pytest.raises(DataError, match="no class sub-folders"):
        load_source(str(tmp_path / "b"))
    with pytest.raises(DataError, match="no such data set name or path"):
        load_source(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="no such data set name"):
        load_source("imagenet-42")


def test_csv_manifest(tmp_path):
    for i in range(4):
        make_image(tmp_path / "img" / f"{i}.png", (i * 50, 0, 0))
    (tmp_path / "m.csv").write_text("path,label,split\nimg/0.png,cat\nimg/1.png,dog\n"
                                    "img/2.png,cat,test\nimg/3.png,dog,test\n")
    s = load_source(str(tmp_path / "m.csv"))
    assert s.classes == ["cat", "dog"] and len(s.train) == 2 and len(s.test) == 2
    (tmp_path / "bad.csv").write_text("img/0.png,cat\nimg/nope.png,dog\n")
    with pytest.raises(DataError, match=r"line 2: .*nope\.png"):
        load_source(str(tmp_path / "bad.csv"))
    (tmp_path / "short.csv").write_text("img/0.png\n")
    with pytest.raises(DataError, match=r"short\.csv:1: expected 'path,label"):
        load_source(str(tmp_path / "short.csv"))
