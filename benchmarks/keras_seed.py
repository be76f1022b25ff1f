"""The seed's Keras code (section 4.1) on Fashion-MNIST; run in a separate environment that
has tensorflow-cpu (see benchmarks/README.md). Prints one JSON line, which peers.py records.

    python benchmarks/keras_seed.py --epochs 3 --data-dir /usr/share/datasets/fashion-mnist
"""

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np


def read_idx(path):
    raw = gzip.decompress(Path(path).read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], dtype=">u4")
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()
    import tensorflow as tf
    from tensorflow import keras

    d = Path(args.data_dir)
    x_train = read_idx(d / "train-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y_train = read_idx(d / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(d / "t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y_test = read_idx(d / "t10k-labels-idx1-ubyte.gz")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Conv2D(64, (3, 3), activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            rates.append(len(x_train) / (time.perf_counter() - self.t))

    rates = []
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0,
              callbacks=[Timer()])
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"images_per_s": float(np.median(rates)), "test_top1": float(acc),
                      "tensorflow": tf.__version__, "threads": "tf default"}))


if __name__ == "__main__":
    main()
