"""The seed's own PyTorch loop (section 4.2) against `imgcls train`, same model, same data,
same number of epochs, in one invocation. The result is appended to
benchmarks/seed_loop_results.jsonl.

The seed loop is written as the seed wrote it: a Dataset returning PIL images, per-image
ToTensor + Normalize, a DataLoader with 2 worker processes, the Conv32-BN-Pool-Conv64-BN-Pool-
FC128-FC network, Adam and StepLR. imgcls runs with its defaults (`imgcls train --data
fashion-mnist --model seed_torch_cnn --epochs N`).

    python benchmarks/seed_loop.py --epochs 10
    python benchmarks/seed_loop.py --epochs 3 --only seed   # the seed loop alone, printed:
                                                            # a whole command to time
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from _record import append_row
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import imgcls
from imgcls.data.sources import load_source

HERE = Path(__file__).parent


class SeedDataset(Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


class SeedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def seed_loop(epochs, batch_size=64):
    src = load_source("fashion-mnist")
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train = SeedDataset(src.train.images[:, 0].numpy(), src.train.labels.numpy(), tf)
    test = SeedDataset(src.test.images[:, 0].numpy(), src.test.labels.numpy(), tf)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=2)
    test_loader = DataLoader(test, batch_size=1000, num_workers=2)
    torch.manual_seed(0)
    model = SeedCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.1)
    rates = []
    for _ in range(epochs):
        model.train()
        t, n = time.perf_counter(), 0
        for x, y in train_loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            n += len(y)
        rates.append(n / (time.perf_counter() - t))
        sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return {"images_per_s": statistics.median(rates), "test_top1": correct / len(test)}


def imgcls_run(epochs):
    r = imgcls.train(data="fashion-mnist", model="seed_torch_cnn", epochs=epochs,
                     out="benchmarks/_work", progress=False, log=lambda _: None)
    rates = [rec["train_images_per_s"] for rec in r.history]
    return {"images_per_s": statistics.median(rates), "test_top1": r.test["top1"],
            "plan": r.plan.describe()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--only", choices=["seed"], help="run the seed loop alone, record nothing")
    args = p.parse_args()
    if args.only:
        return print(json.dumps(seed_loop(args.epochs)))
    seed = seed_loop(args.epochs)
    ours = imgcls_run(args.epochs)
    result = append_row(HERE / "seed_loop_results.jsonl", {
        "threads": torch.get_num_threads(), "epochs": args.epochs, "seed_loop": seed,
        "imgcls": ours, "speedup": ours["images_per_s"] / seed["images_per_s"]})
    print(json.dumps(result, indent=2))
    print(f"seed loop {seed['images_per_s']:,.0f} img/s, test {seed['test_top1']:.4f} | "
          f"imgcls {ours['images_per_s']:,.0f} img/s, test {ours['test_top1']:.4f} | "
          f"speed-up {result['speedup']:.2f}x")


if __name__ == "__main__":
    main()
