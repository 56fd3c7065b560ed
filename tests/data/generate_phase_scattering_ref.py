"""Regenerate ``phase_scattering_ref.npz``: a stored output of the Fourier phase scattering.

A fixed seeded input ``x`` (2, 3, 16, 16) float64 and ``PhaseScattering2D(16, L,
method="fourier")`` in float64 for L = 4 and L = 8; the test compares every method
against it. Run from the repository root: ``python tests/data/generate_phase_scattering_ref.py``.
Regenerate only when the definition is meant to change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sepconc.scattering import PhaseScattering2D

OUT = Path(__file__).with_name("phase_scattering_ref.npz")


def main() -> None:
    x = np.random.default_rng(20210101).standard_normal((2, 3, 16, 16))
    arrays = {"x": x}
    for L in (4, 8):
        module = PhaseScattering2D(16, L, method="fourier").double()
        with torch.no_grad():
            arrays[f"out_L{L}"] = module(torch.from_numpy(x)).numpy()
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
