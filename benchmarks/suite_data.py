"""Writes the data-set suite on which imgcls's training defaults are judged.

    python benchmarks/suite_data.py                    # all sets under ~/.cache/imgcls/suite/
    python benchmarks/suite_data.py --root DIR --only icons
    python benchmarks/suite_data.py --apt              # apt-get install missing packages first

Every set is a flat ``ROOT/<name>/<class>/<file>`` folder (no train/test sub-folders) with
its held-out set beside it in ``ROOT/<name>-test/``. Everything is built from real data that
Debian packages put on the machine, with fixed seeds, so a rebuild gives the same files. A
set whose two folders exist is skipped; a set is written into ``ROOT/.building-<name>/``
and renamed into place when complete. A summary table of all sets under ROOT is printed at
the end (every file is decoded for it, so unreadable files are counted).

Debian packages used (bookworm), installed with ``apt-get install -y --no-install-recommends``:
  dataset-fashion-mnist        fmnist50
  (none)                       digits-mixed: ``load_digits``'s data ships inside the
                               scikit-learn Python package (imgcls's venv has it)
  oxygen-icon-theme            icons
  paper-icon-theme             icons
  mate-icon-theme              icons
  gnome-backgrounds            large
  plasma-workspace-wallpapers  large
  mate-backgrounds             large
  lomiri-wallpapers            large (pulls in lomiri-wallpapers-16.04 and -20.04)
  ukui-wallpapers              large
  adwaita-icon-theme           lineart

The sets:

``fmnist50`` (10 classes x 50): images drawn at random (seed 0) per class from
Fashion-MNIST's training IDX files, 28x28 grayscale PNG, class folders named t-shirt_top,
trouser, ... ankle_boot. ``fmnist50-test``: 100 per class from the t10k files, same layout.

``digits-mixed`` (10 classes, 0..9): scikit-learn's 1,797 8x8 digits (0..16 scaled to
0..255), each upscaled with PIL bicubic to a random square size of 20-48 px and saved as PNG
or JPEG at random, in a random mode: L, RGB, P (adaptive palette) or LA (opaque alpha) for
PNG, L or RGB for JPEG (which cannot hold P or LA). 20% per class (stratified,
``train_test_split(random_state=0)``) go to ``digits-mixed-test``. The training folder also
holds 5 unreadable files with ordinary numbered names in classes 1, 3, 5, 7, 9: a zero-byte
``.png``, a truncated JPEG (the first 100 bytes of a real one), a text file named ``.jpg``,
an HTML error page named ``.png``, and a PNG with a valid signature and IHDR (correct CRCs)
whose IDAT is random bytes (it opens, and fails only when decoded).

``icons`` (6 classes: actions, apps, devices, mimetypes, places, status): real icons of three
themes, Oxygen (glossy; sizes 64/128/256), Paper (flat; 64/96/512 from its 32x32@2x, 48x48@2x
and 512x512 folders) and MATE (Tango style; 256). An icon is (theme, category, name); names
that are symlinks to, or byte-identical copies of, another name of the same theme and
category (compared at the largest size) count once. Per icon one size between 64 and 512 px
(actual pixels) is drawn at random and that PNG copied byte for byte (modes RGBA, P, LA as
the themes ship them; the same name in two categories is kept). Counts are the natural ones
(pooled: actions 151, apps 575, devices 116, mimetypes 278, places 120, status 178), except
that the smallest class is subsampled at random to a fifth of the largest if it is bigger
(so largest/smallest >= 5: devices 116 -> 115), and all classes would be subsampled in
proportion if the total passed 1,500 (it is 1,417). 20% per class go to ``icons-test``.

``lineart`` (3 classes: actions, devices, status): Adwaita's symbolic icons, black line art
on a transparent background (RGBA, opaque pixels black or nearly), one size between 16 and 96 px
drawn at random per icon (seed 0), one file per icon name: actions 152, devices 64, status
203. 20% per class go to ``lineart-test``. Composited over black, every image is black: the
set on which the handling of transparency matters most.

``large`` (5 classes, one per wallpaper package: gnome, plasma, mate, lomiri, ukui): the
packages ship only 107 distinct wallpapers of at least 1,000 px (gnome 14 abstract patterns
in light and dark, plasma 33 mostly illustrations, mate 28 photos and abstracts, lomiri 20
photos, ukui 12 illustrations and photos; of a picture shipped at several resolutions only
the largest is used), so each of the 360 images (72 per class, the class's wallpapers
sharing them equally, 2-6 each) is derived from one wallpaper: a random crop (aspect 1:1,
4:3, 3:2, 16:9, 3:4 or 2:3; 35-100% of the largest such box), a horizontal flip half the
time, a rotation of -12..12 degrees half the time (cropped to the largest box without
corners), brightness, contrast and saturation jitter of 0.75-1.25, resized (Lanczos) to a
long side of 1,000-2,500 px and saved as JPEG of quality 70-95 (grayscale where the
wallpaper is). 20% per class go to ``large-test`` at random, so test images are other crops
of the same wallpapers: the set exercises decoding, resizing and memory, and its accuracy
measures recognising the wallpapers, not the package's style.
Building it takes about 2 minutes of one core; the other sets take seconds.
"""

import argparse
import gzip
import hashlib
import io
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

SETS = ("fmnist50", "digits-mixed", "icons", "large", "lineart")
DEFAULT_ROOT = Path("~/.cache/imgcls/suite").expanduser()

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle_boot")

ICON_THEMES = {  # theme -> (folder, size folders that may hold 64..512 px icons)
    "oxygen": (Path("/usr/share/icons/oxygen/base"), ("64x64", "128x128", "256x256")),
    "paper": (Path("/usr/share/icons/Paper"), ("32x32@2x", "48x48@2x", "512x512")),
    "mate": (Path("/usr/share/icons/mate"), ("256x256",)),
}
ICON_CATEGORIES = ("actions", "apps", "devices", "mimetypes", "places", "status")
ICON_TOTAL = 1500  # at most, natural proportions kept
ICON_RATIO = 5  # at least this largest/smallest class ratio

LARGE_CLASSES = {  # class -> Debian packages whose wallpapers it is made of
    "gnome": ("gnome-backgrounds",),
    "plasma": ("plasma-workspace-wallpapers",),
    "mate": ("mate-backgrounds",),
    "lomiri": ("lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"),
    "ukui": ("ukui-wallpapers",),
}
LARGE_PER_CLASS = 72

LINEART_DIR = Path("/usr/share/icons/Adwaita")
LINEART_CLASSES = ("actions", "devices", "status")

PACKAGES = {
    "lineart": ("adwaita-icon-theme",),
    "fmnist50": ("dataset-fashion-mnist",),
    "digits-mixed": (),
    "icons": ("oxygen-icon-theme", "paper-icon-theme", "mate-icon-theme"),
    "large": ("gnome-backgrounds", "plasma-workspace-wallpapers", "mate-backgrounds",
              "lomiri-wallpapers", "ukui-wallpapers"),
}


# ---------------------------------------------------------------- helpers

def dpkg_files(package: str) -> list[Path]:
    """The files that an installed Debian package put on the machine ([] if not installed)."""
    r = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    return [Path(line) for line in r.stdout.splitlines() if line.startswith("/")] \
        if r.returncode == 0 else []


def installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages(name: str, apt: bool) -> None:
    if name == "fmnist50" and (FMNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        return  # the files are what counts, however they came
    missing = [p for p in PACKAGES[name] if not installed(p)]
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not apt:
        sys.exit(f"{name}: needs the Debian package(s) {' '.join(missing)}: run "
                 f"`{' '.join(cmd)}` (as root) or pass --apt")
    print(f"{name}: {' '.join(cmd)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(cmd, check=True, env=env)


def split_per_class(items: dict[str, list], frac: float, seed: int) -> tuple[dict, dict]:
    """``frac`` of each class (at least one) held out at random; order within a class kept."""
    rng = random.Random(seed)
    train, test = {}, {}
    for cls in sorted(items):
        xs = list(items[cls])
        n_test = max(1, round(len(xs) * frac))
        held = set(rng.sample(range(len(xs)), n_test))
        train[cls] = [x for i, x in enumerate(xs) if i not in held]
        test[cls] = [x for i, x in enumerate(xs) if i in held]
    return train, test


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# ---------------------------------------------------------------- fmnist50

def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_fmnist_split(out: Path, prefix: str, per_class: int, seed: int) -> None:
    images = read_idx(FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    for c, name in enumerate(FMNIST_CLASSES):
        (out / name).mkdir(parents=True)
        for i in sorted(rng.choice(np.flatnonzero(labels == c), per_class, replace=False)):
            Image.fromarray(images[i], "L").save(out / name / f"{prefix}_{i:05d}.png")


def build_fmnist50(tmp: Path) -> None:
    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"fmnist50: {FMNIST_DIR} is missing: apt-get install -y dataset-fashion-mnist")
    write_fmnist_split(tmp / "fmnist50", "train", 50, seed=0)
    write_fmnist_split(tmp / "fmnist50-test", "t10k", 100, seed=0)


# ---------------------------------------------------------------- digits-mixed

def digit_image(pixels: np.ndarray, rng: random.Random) -> tuple[Image.Image, str]:
    """One digit as a PIL image in a random size and mode, and the format to save it in."""
    img = Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8), "L")
    side = rng.randint(20, 48)
    img = img.resize((side, side), Image.Resampling.BICUBIC)
    fmt = rng.choice(("PNG", "JPEG"))
    mode = rng.choice(("L", "RGB", "P", "LA") if fmt == "PNG" else ("L", "RGB"))
    if mode == "RGB":
        img = img.convert("RGB")
    elif mode == "P":
        img = img.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    elif mode == "LA":
        img = img.convert("LA")
    return img, fmt


def corrupt_files(jpeg_bytes: bytes, seed: int) -> list[tuple[str, bytes]]:
    """(extension, content) of the five unreadable files."""
    rng = random.Random(seed)
    ihdr = struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0)  # 32x32, 8-bit grayscale
    garbage = bytes(rng.getrandbits(8) for _ in range(600))
    bad_png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", garbage) \
        + png_chunk(b"IEND", b"")
    html = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body><h1>Not "
            b"Found</h1><p>The requested URL was not found on this server.</p></body></html>\n")
    text = b"download interrupted: see the log for details\nretry later\n"
    return [(".png", b""), (".jpg", jpeg_bytes[:100]), (".jpg", text), (".png", html),
            (".png", bad_png)]


def build_digits_mixed(tmp: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=digits.target,
                                           random_state=0)
    rng = random.Random(0)
    # draw sizes/modes in index order so that a file's look does not depend on the split
    made = {int(i): digit_image(digits.images[i], rng) for i in idx}
    a_jpeg = None
    for folder, chosen in (("digits-mixed", train_idx), ("digits-mixed-test", test_idx)):
        for c in range(10):
            (tmp / folder / str(c)).mkdir(parents=True)
        for i in sorted(int(i) for i in chosen):
            img, fmt = made[i]
            ext = ".png" if fmt == "PNG" else ".jpg"
            path = tmp / folder / str(digits.target[i]) / f"{i:04d}{ext}"
            img.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            if fmt == "JPEG" and a_jpeg is None:
                a_jpeg = path.read_bytes()
    for k, (ext, content) in enumerate(corrupt_files(a_jpeg, seed=0)):
        (tmp / "digits-mixed" / str(2 * k + 1) / f"{len(idx) + k:04d}{ext}").write_bytes(content)


# ---------------------------------------------------------------- icons

def icon_candidates() -> dict[str, list[tuple[str, list[Path]]]]:
    """category -> icons, each (theme, its PNG files of 64..512 px sorted by size)."""
    out: dict[str, list[tuple[str, list[Path]]]] = defaultdict(list)
    for theme, (base, size_dirs) in sorted(ICON_THEMES.items()):
        if not base.is_dir():
            sys.exit(f"icons: {base} is missing: apt-get install -y {theme}-icon-theme")
        for cat in ICON_CATEGORIES:
            files: dict[str, list[tuple[int, Path]]] = defaultdict(list)
            for sd in size_dirs:
                for f in sorted((base / sd / cat).glob("*.png")):
                    with Image.open(f) as im:
                        side = max(im.size)
                    if 64 <= side <= 512:
                        files[f.name].append((side, f))
            # one icon per content: a symlink or a copy of another name counts once
            seen: dict[str, str] = {}
            for name in sorted(files):
                largest = max(files[name])[1]
                digest = hashlib.md5(largest.read_bytes()).hexdigest()
                if digest in seen:
                    continue
                seen[digest] = name
                out[cat].append((theme, [f for _, f in sorted(files[name])]))
    return out


def build_icons(tmp: Path) -> None:
    cands = icon_candidates()
    rng = random.Random(0)
    keep = {cat: len(cands[cat]) for cat in ICON_CATEGORIES}
    smallest = min(keep, key=keep.get)
    keep[smallest] = min(keep[smallest], max(keep.values()) // ICON_RATIO)
    total = sum(keep.values())
    if total > ICON_TOTAL:
        keep = {cat: round(n * ICON_TOTAL / total) for cat, n in keep.items()}
    chosen: dict[str, list[tuple[str, Path]]] = {}
    for cat in ICON_CATEGORIES:
        icons = cands[cat]
        picked = sorted(rng.sample(range(len(icons)), keep[cat]))
        chosen[cat] = [(icons[i][0], rng.choice(icons[i][1])) for i in picked]
    train, test = split_per_class(chosen, 0.2, seed=0)
    for folder, sets in (("icons", train), ("icons-test", test)):
        for cat, files in sets.items():
            (tmp / folder / cat).mkdir(parents=True)
            for theme, f in files:
                shutil.copyfile(f, tmp / folder / cat / f"{theme}_{f.stem}.png")


# ---------------------------------------------------------------- large

def wallpapers(packages: tuple[str, ...]) -> list[Path]:
    """One file per distinct picture of >= 1,000 px that the packages ship: of a picture at
    several resolutions (plasma's contents/images/WxH.*, mate's NAME_WxH.jpg) the largest."""
    best: dict[tuple[str, str], tuple[int, Path]] = {}
    for pkg in packages:
        for f in dpkg_files(pkg):
            if f.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp") or f.is_symlink() \
                    or not f.is_file():
                continue
            try:
                with Image.open(f) as im:
                    w, h = im.size
            except OSError:
                continue
            if max(w, h) < 1000:
                continue
            key = (str(f.parent), re.sub(r"[_-]?\d+x\d+$", "", f.stem))
            if key not in best or w * h > best[key][0]:
                best[key] = (w * h, f)
    return sorted(f for _, f in best.values())


def inscribed_scale(w: int, h: int, degrees: float) -> float:
    """Scale of the largest w:h box, centred, inside a w x h image rotated by ``degrees``."""
    t = abs(np.radians(degrees))
    return 1.0 / (np.cos(t) + max(w, h) / min(w, h) * np.sin(t))


def derive_large(src: Image.Image, rng: random.Random) -> Image.Image:
    sw, sh = src.size
    aspect = rng.choice((1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3))
    bw, bh = (sw, sw / aspect) if sw / sh <= aspect else (sh * aspect, sh)  # largest box
    s = rng.uniform(0.35, 1.0) ** 0.5  # area fraction 35-100%
    cw, ch = max(1, int(bw * s)), max(1, int(bh * s))
    x0, y0 = rng.randint(0, sw - cw), rng.randint(0, sh - ch)
    img = src.crop((x0, y0, x0 + cw, y0 + ch))
    long_side = rng.randint(1000, 2500)
    tw, th = (long_side, round(long_side * ch / cw)) if cw >= ch else \
        (round(long_side * cw / ch), long_side)
    angle = rng.uniform(-12, 12) if rng.random() < 0.5 else 0.0
    k = inscribed_scale(tw, th, angle) if angle else 1.0
    img = img.resize((round(tw / k), round(th / k)), Image.Resampling.LANCZOS)
    if angle:
        img = img.rotate(angle, Image.Resampling.BICUBIC)
        left, top = (img.width - tw) // 2, (img.height - th) // 2
        img = img.crop((left, top, left + tw, top + th))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.75, 1.25))
    return img


def build_large(tmp: Path) -> None:
    rng = random.Random(0)
    made: dict[str, list[tuple[str, bytes]]] = {}
    for cls, packages in LARGE_CLASSES.items():
        srcs = wallpapers(packages)
        if not srcs:
            sys.exit(f"large: no wallpapers of {', '.join(packages)}: apt-get install -y "
                     f"{' '.join(packages)}")
        quota = [LARGE_PER_CLASS // len(srcs) + (j < LARGE_PER_CLASS % len(srcs))
                 for j in range(len(srcs))]
        made[cls] = []
        for src_path, n in zip(srcs, quota):
            if n == 0:
                continue
            with Image.open(src_path) as im:
                src = im.convert("L" if im.mode in ("L", "LA") else "RGB")
            for _ in range(n):
                buf = io.BytesIO()
                derive_large(src, rng).save(buf, "JPEG", quality=rng.randint(70, 95))
                made[cls].append((f"{src_path.parent.name}-{src_path.stem}", buf.getvalue()))
            print(f"  large/{cls}: {n} from {src_path}", flush=True)
    train, test = split_per_class(made, 0.2, seed=0)
    for folder, sets in (("large", train), ("large-test", test)):
        for cls, items in sets.items():
            (tmp / folder / cls).mkdir(parents=True)
            counts: Counter = Counter()
            for stem, data in items:
                counts[stem] += 1
                stem_ok = re.sub(r"[^A-Za-z0-9._-]", "_", stem)
                (tmp / folder / cls / f"{stem_ok}-{counts[stem]:02d}.jpg").write_bytes(data)


# ---------------------------------------------------------------- line art

def build_lineart(tmp: Path) -> None:
    icons: dict[str, list[Path]] = {}
    rng = random.Random(0)
    for cat in LINEART_CLASSES:
        sizes = defaultdict(list)  # icon name -> its PNG at every size
        for f in sorted(LINEART_DIR.glob(f"*x*/{cat}/*-symbolic.symbolic.png")):
            sizes[f.name].append(f)
        icons[cat] = [rng.choice(files) for _, files in sorted(sizes.items())]
    train, test = split_per_class(icons, 0.2, seed=0)
    for folder, sets in (("lineart", train), ("lineart-test", test)):
        for cat, files in sets.items():
            (tmp / folder / cat).mkdir(parents=True)
            for f in files:
                shutil.copyfile(f, tmp / folder / cat / f"{f.parent.parent.name}_{f.name}")


BUILDERS = {"fmnist50": build_fmnist50, "digits-mixed": build_digits_mixed,
            "icons": build_icons, "large": build_large, "lineart": build_lineart}


# ---------------------------------------------------------------- driver

def build(root: Path, name: str, apt: bool) -> None:
    folders = (root / name, root / f"{name}-test")
    if all(f.is_dir() for f in folders):
        print(f"{name}: exists, skipped")
        return
    if any(f.exists() for f in folders):
        sys.exit(f"{name}: only one of {folders[0]} and {folders[1]} exists: remove it")
    ensure_packages(name, apt)
    tmp = root / f".building-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    print(f"{name}: building", flush=True)
    BUILDERS[name](tmp)
    for f in folders:
        (tmp / f.name).rename(f)
    tmp.rmdir()


def describe(folder: Path) -> dict:
    per_class: Counter = Counter()
    sides, modes, formats, bad = [], Counter(), Counter(), 0
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        per_class[cls.name] = 0
        for f in sorted(p for p in cls.iterdir() if p.is_file()):
            try:
                with Image.open(f) as im:
                    im.load()
                    sides.append(max(im.size))
                    modes[im.mode] += 1
                    formats[im.format] += 1
            except (OSError, SyntaxError, ValueError):
                bad += 1
                continue
            per_class[cls.name] += 1
    counts = per_class.values()
    return {"name": folder.name, "images": sum(counts), "bad": bad, "classes": len(per_class),
            "sides": (min(sides), statistics.median(sides), max(sides)) if sides else (0, 0, 0),
            "modes": " ".join(f"{m}:{n}" for m, n in modes.most_common()),
            "formats": " ".join(f"{m}:{n}" for m, n in formats.most_common()),
            "largest": max(counts, default=0), "smallest": min(counts, default=0)}


def summary(root: Path, names: list[str]) -> None:
    rows = [describe(root / n) for base in names for n in (base, f"{base}-test")
            if (root / n).is_dir()]
    head = ("set", "images", "unreadable", "classes", "long side min/med/max", "largest/smallest",
            "formats", "modes")
    table = [head] + [(r["name"], str(r["images"]), str(r["bad"]), str(r["classes"]),
                       "{}/{:g}/{}".format(*r["sides"]), f"{r['largest']}/{r['smallest']}",
                       r["formats"], r["modes"]) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    print(f"\nsuite under {root}")
    for k, t in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                    help=f"where the sets go (default {DEFAULT_ROOT})")
    ap.add_argument("--only", choices=SETS, action="append",
                    help="build (and summarise) only this set; may be repeated")
    ap.add_argument("--apt", action="store_true",
                    help="apt-get install the Debian packages a set needs if missing")
    args = ap.parse_args()
    names = args.only or list(SETS)
    root = args.root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        build(root, name, args.apt)
    summary(root, names)


if __name__ == "__main__":
    main()
