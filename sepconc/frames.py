"""Pure tight-frame math: the Parseval update, atom norms and thresholds.

Functions of tensors only (no module, optimizer or device logic), so they are
testable on their own and shared by the layers, the trainer and the diagnostics.
"""

from __future__ import annotations

import math

import torch


def flatten_atoms(weight: torch.Tensor) -> torch.Tensor:
    """A convolution weight `(out, in, k, k)` as the matrix `W: (out, in*k*k)` (a view)."""
    return weight.reshape(weight.shape[0], -1)


def parseval_step(weight: torch.Tensor, beta: float) -> torch.Tensor:
    """One tight-frame (Parseval) step, in place: `W <- (1 + beta) W - beta W W^T W`.

    `weight: (out, in, ...)` is reshaped to `W: (out, d)`. The cubic term is
    computed through the smaller Gram matrix (`(W W^T) W` when out <= d, else
    `W (W^T W)`), so its cost is `O(out * d * min(out, d))`. The step is the
    gradient descent step on `||W^T W - I||^2 / 4` and drives every singular
    value of `W` towards 1 (Section 3 of the paper; docs/models.md "Training recipe").
    Returns `weight`.
    """
    with torch.no_grad():
        w = flatten_atoms(weight)
        if w.shape[0] <= w.shape[1]:
            cubic = (w @ w.T) @ w
        else:
            cubic = w @ (w.T @ w)
        w.mul_(1 + beta).sub_(cubic, alpha=beta)
    return weight


def target_atom_norm(width: int, dim: int) -> float:
    """Mean atom norm of a unit-bound tight frame of `width` atoms in dimension `dim`.

    A tight frame with `F^T F = I` has `sum_m ||f_m||^2 = dim`, so atoms of equal
    norm have `sqrt(dim / width)` when `width > dim`; an orthonormal family (width
    <= dim) has unit atoms.
    """
    return math.sqrt(dim / width) if width > dim else 1.0


def relu_threshold(width: int, zero_bias: bool = False) -> float:
    """ReLU bias `lambda = 1/sqrt(width)` (0 with `zero_bias`): separates class means."""
    return 0.0 if zero_bias else 1.0 / math.sqrt(width)


def softshrink_threshold(width: int) -> float:
    """Soft-threshold `lambda = 1.5/sqrt(width)`: concentrates each class."""
    return 1.5 / math.sqrt(width)


def reset_atom_norms(weight: torch.Tensor, norm: float) -> None:
    """Rescale every atom (row of the flattened weight) to the given norm, in place."""
    with torch.no_grad():
        w = flatten_atoms(weight)
        w.mul_(norm / w.norm(dim=1, keepdim=True).clamp_min(1e-12))
