import numpy as np
import pytest
import torch

from imgcls.data.augment import Augment, erase, flip, preset, translate
from imgcls.data.dataset import ArrayDataset
from imgcls.data.loader import BatchLoader
from imgcls.data.splits import stratified_split
from imgcls.engine.schedules import progressive_scale


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_flips_about_half_exactly():
    x = torch.arange(4.0).repeat(1000, 1, 1, 1)  # (1000,1,1,4)
    y = flip(x, gen())
    flipped = (y[:, 0, 0, 0] == 3).sum().item()
    assert 400 < flipped < 600
    assert torch.all((y[:, 0, 0] == torch.arange(4.0)).all(1) | (y[:, 0, 0] == torch.arange(
        3.0, -1, -1)).all(1))


def test_translate_shifts_content_within_range():
    x = torch.zeros(500, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    y = translate(x, 2, gen())
    pos = y[:, 0].flatten(1).argmax(1)
    ry, rx = pos // 16, pos % 16
    assert ry.min() == 6 and ry.max() == 10 and rx.min() == 6 and rx.max() == 10
    assert torch.allclose(y.sum((1, 2, 3)), torch.ones(500))


def test_erase_probability_and_value():
    x = torch.ones(2000, 3, 16, 16)
    y = erase(x, 0.5, gen())
    hit = (y == 0).flatten(1).any(1).float().mean().item()
    assert 0.4 < hit < 0.6


def test_presets():
    assert not preset("standard", 28, flip_ok=False).flip
    assert preset("light", 28) == Augment(flip=True)
    assert preset("light", 28, flip_ok=False) == Augment(translate=2)
    with pytest.raises(ValueError):
        preset("extreme", 28)


def make_ds(n=100):
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 4, 4)
    return ArrayDataset(images.contiguous(), torch.arange(n) % 5, list("abcde"))


def test_progressive_resizing_reaches_the_full_size_at_three_quarters_of_the_run():
    scales = [progressive_scale(e, 8, 0.5) for e in range(8)]
    assert scales[0] == 0.5 and scales[6:] == [1.0, 1.0]
    assert all(a < b for a, b in zip(scales[:6], scales[1:7]))
    assert [progressive_scale(e, 8, 0.0) for e in range(8)] == [1.0] * 8  # off


def test_the_loader_resizes_its_batches_to_its_scale():
    n = 20
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 16, 16)
    loader = BatchLoader(ArrayDataset(images.contiguous(), torch.arange(n) % 5, list("abcde")),
                         8, mean=[0.0], std=[1.0], augment=Augment(flip=True))
    full, _ = next(iter(loader))
    loader.scale = 0.5
    half, _ = next(iter(loader))
    assert full.shape[-2:] == (16, 16) and half.shape[-2:] == (8, 8)
    # a flat image stays flat: resizing keeps every pixel's value
    assert torch.allclose(half.amin((1, 2, 3)), full.amin((1, 2, 3)), atol=1e-5)
    assert torch.allclose(half.amax((1, 2, 3)), full.amax((1, 2, 3)), atol=1e-5)
    loader.scale = 0.1
    assert next(iter(loader))[0].shape[-1] == 8  # never below 8 pixels


def test_loader_is_deterministic_and_resumable():
    ds = make_ds()
    kw = dict(mean=[0.5], std=[0.5], shuffle=True, seed=3,
              augment=Augment(flip=True, translate=1, erase=0.3))
    a, b = BatchLoader(ds, 16, **kw), BatchLoader(ds, 16, **kw)
    a.set_epoch(2)
    b.set_epoch(2)
    full = list(a)
    tail = list(b.iter_from(3))
    assert len(full) == 7 and len(tail) == 4
    for (x1, y1), (x2, y2) in zip(full[3:], tail):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    b.set_epoch(3)
    assert not torch.equal(next(iter(b))[1], full[0][1])  # another epoch, another order


def test_loader_normalises_and_covers_everything_once():
    ds = make_ds(50)
    loader = BatchLoader(ds, 8, mean=[0.0], std=[1.0])
    xs, ys = zip(*loader)
    x = torch.cat(xs)
    assert torch.allclose(x[:, 0, 0, 0] * 255, torch.arange(50.0), atol=1e-4)
    assert torch.equal(torch.cat(ys), ds.labels)


def test_sharding_splits_the_epoch_between_ranks():
    ds = make_ds(100)
    seen = []
    for rank in range(2):
        loader = BatchLoader(ds, 10, mean=[0.0], std=[1.0], shuffle=True, drop_last=True,
                             rank=rank, world_size=2, seed=1)
        seen.append(torch.cat([x[:, 0, 0, 0] for x, _ in loader]))
    assert len(seen[0]) == len(seen[1]) == 50
    allv = torch.cat(seen).mul(255).round().long().sort().values
    assert torch.equal(allv, torch.arange(100))


def test_stratified_split():
    labels = torch.tensor([0] * 90 + [1] * 10)
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert len(va) == 20 and (labels[va] == 1).sum() == 2
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 100
    tr2, va2 = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(va, va2)
