"""Datasets that need no file: scikit-learn's digits and a seeded Gaussian mixture.

Both are held in memory as float tensors, already transformed (deterministic), and are
identical on every run: their split / generation seeds are fixed constants, not the
run's `seed`, so runs with different seeds see the same data.

**digits** (quickstart). scikit-learn's bundled `load_digits()`: 1797 images 8x8, values
0..16, 10 classes. Each image is scaled to [0, 1], resized to 28x28 by bilinear
interpolation (`align_corners=False`, as MNIST's size, so MNIST commands such as a frame
kernel 14 / stride 7 or scattering J=3 run unchanged), then normalized with the train
split's scalar mean and std. Split: stratified 1437 train / 360 val by
`sklearn.model_selection.train_test_split(random_state=DIGITS_SPLIT_SEED)`.

**synthetic** (tests; the paper's model case: classes concentrated around separated
means). 10 classes of 1x16x16 images. Class mean `mu_k` is white Gaussian noise low-passed
by a Gaussian of std `SYNTHETIC_SMOOTHING` pixels (periodic, via FFT), centred and scaled
to a per-pixel RMS of 1 (so `||mu_k|| = 16`). A sample of class `k` is
`x = mu_k + SYNTHETIC_SIGMA * z`, `z ~ N(0, I)`: with `SYNTHETIC_SIGMA = 1` the noise is as
large as the signal per pixel (`E||x - mu_k|| ~ 16`), yet along the line between two means
(the closest two are ~15.9 apart) its std is only 1, so the classes are linearly separable with a wide
margin. 2000 train / 500 val, classes balanced (200 / 50 each) and shuffled. No extra
normalization (pixel mean ~0, variance ~2).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sepconc.data.types import DataBundle, TensorImageDataset

DIGITS_SPLIT_SEED = 0
DIGITS_VAL_SIZE = 360
DIGITS_SIZE = 28

SYNTHETIC_SEED = 20210
SYNTHETIC_CLASSES = 10
SYNTHETIC_SIZE = 16
SYNTHETIC_SMOOTHING = 1.5
SYNTHETIC_SIGMA = 1.0
SYNTHETIC_TRAIN, SYNTHETIC_VAL = 2000, 500


def digits_arrays() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """All 1797 digits as `(N, 1, 28, 28)` floats in [0, 1] (before normalization), labels
    `(N,)`, and the sorted train / val index arrays of the fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    y = torch.from_numpy(digits.target.astype(np.int64))
    idx = np.arange(len(y))
    train_idx, val_idx = train_test_split(
        idx, test_size=DIGITS_VAL_SIZE, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    return x, y, np.sort(train_idx), np.sort(val_idx)


def build_digits() -> DataBundle:
    """scikit-learn digits at 28x28, normalized by the train split, 1437 / 360."""
    x, y, train_idx, val_idx = digits_arrays()
    train_idx_t, val_idx_t = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    mean = float(x[train_idx_t].mean())
    std = float(x[train_idx_t].std())
    x = (x - mean) / std
    train = TensorImageDataset(x[train_idx_t].contiguous(), y[train_idx_t])
    val = TensorImageDataset(x[val_idx_t].contiguous(), y[val_idx_t])
    identity = {
        "name": "digits",
        "root": None,
        "sizes": {"train": len(train), "val": len(val)},
        "classes": [str(c) for c in range(10)],
        "split": f"stratified {len(train)}/{len(val)}, split seed {DIGITS_SPLIT_SEED}",
        "transform": f"/16, bilinear 8x8->28x28, normalize mean {mean:.6f} std {std:.6f}",
    }
    return DataBundle(train, val, 10, (1, DIGITS_SIZE, DIGITS_SIZE), False, identity)


def synthetic_class_means() -> torch.Tensor:
    """The 10 class means, `(10, 1, 16, 16)`: smooth, centred, per-pixel RMS 1."""
    gen = torch.Generator().manual_seed(SYNTHETIC_SEED)
    n, s = SYNTHETIC_CLASSES, SYNTHETIC_SIZE
    white = torch.randn(n, s, s, generator=gen, dtype=torch.float64)
    f = torch.fft.fftfreq(s, dtype=torch.float64)
    transfer = torch.exp(-2 * (np.pi * SYNTHETIC_SMOOTHING) ** 2 * (f[:, None] ** 2 + f**2))
    means = torch.fft.ifft2(torch.fft.fft2(white) * transfer).real
    means = means - means.mean(dim=(1, 2), keepdim=True)
    means = means / means.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    return means.unsqueeze(1).float()


def synthetic_split(n: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` samples `mu_y + sigma z` with balanced shuffled labels, from generator `split_seed`."""
    gen = torch.Generator().manual_seed(split_seed)
    labels = (torch.arange(n) % SYNTHETIC_CLASSES)[torch.randperm(n, generator=gen)]
    noise = torch.randn(n, 1, SYNTHETIC_SIZE, SYNTHETIC_SIZE, generator=gen)
    return synthetic_class_means()[labels] + SYNTHETIC_SIGMA * noise, labels


def build_synthetic() -> DataBundle:
    """The seeded Gaussian mixture: 2000 train / 500 val images `(1, 16, 16)`, 10 classes."""
    x_train, y_train = synthetic_split(SYNTHETIC_TRAIN, SYNTHETIC_SEED + 1)
    x_val, y_val = synthetic_split(SYNTHETIC_VAL, SYNTHETIC_SEED + 2)
    train = TensorImageDataset(x_train, y_train)
    val = TensorImageDataset(x_val, y_val)
    identity = {
        "name": "synthetic",
        "root": None,
        "sizes": {"train": len(train), "val": len(val)},
        "classes": [str(c) for c in range(SYNTHETIC_CLASSES)],
        "split": f"generated, data seed {SYNTHETIC_SEED} (+1 train, +2 val)",
        "generator": {
            "mean_smoothing_px": SYNTHETIC_SMOOTHING,
            "mean_rms": 1.0,
            "noise_sigma": SYNTHETIC_SIGMA,
        },
    }
    shape = (1, SYNTHETIC_SIZE, SYNTHETIC_SIZE)
    return DataBundle(train, val, SYNTHETIC_CLASSES, shape, False, identity)
