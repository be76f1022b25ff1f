"""Rebuild the embedded sample data set (src/imgcls/data/sample/) from real Fashion-MNIST.

A stratified subset: 500 training images per class from the official training set and 100
test images per class from the official test set, chosen with a fixed seed, written in the
original IDX format (gzip) so that the same reader serves both.

    python tools/make_sample.py [/usr/share/datasets/fashion-mnist]
"""

import sys
from pathlib import Path

import numpy as np

from imgcls.data.sources import read_idx, write_idx

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
DST = Path(__file__).resolve().parents[1] / "src/imgcls/data/sample"


def pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(idx))


rng = np.random.default_rng(20170825)  # Fashion-MNIST's release date, for the record
for split, prefix, per_class in (("train", "train", 500), ("test", "t10k", 100)):
    images = read_idx(SRC / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(SRC / f"{prefix}-labels-idx1-ubyte.gz")
    keep = pick(labels, per_class, rng)
    write_idx(DST / f"{split}-images-idx3-ubyte.gz", images[keep])
    write_idx(DST / f"{split}-labels-idx1-ubyte.gz", labels[keep])
    print(split, images[keep].shape)
