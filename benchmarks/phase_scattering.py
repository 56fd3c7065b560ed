"""Phase scattering speed: Fourier (reference) vs convolution vs auto, CIFAR-10 block sizes.

For each block input ``(batch, C, n, n)``, ``(C, n)`` in (3, 32), (64, 16), (128, 8),
(256, 4) (L = 8, float32, CPU): forward and forward+backward wall time of the
``"fourier"``, ``"conv"`` and ``"auto"`` paths of ``PhaseScattering2D`` (``"auto"`` is
``"dense"`` for n <= 16, ``"conv"`` above), each one's speed-up over Fourier per size
and summed over the four sizes, and the max relative L2 error to the Fourier output.
Times are the minimum over ``--reps`` runs after one warm-up (the machine is shared;
the minimum is the least noisy statistic). Target: the fast path's forward+backward
>= 3x faster than Fourier summed over the four sizes, at <= 1e-4 error.

    python -m benchmarks.phase_scattering [--batch 128] [--threads 2] [--reps 5]  (repo root)
"""

from __future__ import annotations

import argparse
import time

import torch

from sepconc.scattering import PhaseScattering2D

SIZES = ((3, 32), (64, 16), (128, 8), (256, 4))
METHODS = ("fourier", "conv", "auto")


def _time(module: torch.nn.Module, x: torch.Tensor, reps: int) -> tuple[float, float]:
    """Minimum seconds of (forward, forward+backward) with autograd on, after a warm-up."""
    fwd, both = [], []
    for i in range(reps + 1):
        x.grad = None
        t0 = time.perf_counter()
        y = module(x)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            both.append(t2 - t0)
    return min(fwd), min(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--L", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, threads {args.threads}, L {args.L}, min of {args.reps}, float32")
    print("times in ms as forward / forward+backward; speed-up = Fourier time / path time")
    head = f"{'C x n':>9}  {'fourier':>13}  {'conv':>13} {'speed-up':>11} {'err':>8}"
    print(head + f"  {'auto':>13} {'speed-up':>11} {'err':>8}")
    tot = {m: [0.0, 0.0] for m in METHODS}
    worst = {m: 0.0 for m in METHODS}
    for C, n in SIZES:
        x = torch.randn(args.batch, C, n, n, requires_grad=True)
        mods = {m: PhaseScattering2D(n, args.L, method=m) for m in METHODS}
        with torch.no_grad():
            ref = mods["fourier"](x)
            err = {m: ((mods[m](x) - ref).norm() / ref.norm()).item() for m in METHODS}
        line = f"{C:>4} x {n:<2} "
        for m in METHODS:
            f, b = _time(mods[m], x, args.reps)
            tot[m][0] += f
            tot[m][1] += b
            worst[m] = max(worst[m], err[m])
            if m == "fourier":
                f0, b0 = f, b
                line += f" {f * 1e3:>6.1f}/{b * 1e3:>6.1f}"
            else:
                line += f"  {f * 1e3:>6.1f}/{b * 1e3:>6.1f} {f0 / f:>5.1f}/{b0 / b:>5.1f} {err[m]:>8.1e}"
        print(line + f"   (auto = {mods['auto'].resolved_method})")
    line = f"{'sum':>9} "
    for m in METHODS:
        f, b = tot[m]
        if m == "fourier":
            line += f" {f * 1e3:>6.1f}/{b * 1e3:>6.1f}"
        else:
            ff, fb = tot["fourier"]
            line += (
                f"  {f * 1e3:>6.1f}/{b * 1e3:>6.1f} {ff / f:>5.1f}/{fb / b:>5.1f} {worst[m]:>8.1e}"
            )
    print(line)
    for m in ("conv", "auto"):
        ratio = tot["fourier"][1] / tot[m][1]
        ok = ratio >= 3.0 and worst[m] <= 1e-4
        print(
            f"target ({m} forward+backward >= 3x Fourier summed, error <= 1e-4): "
            f"{'met' if ok else 'NOT met'} ({ratio:.2f}x, {worst[m]:.1e})"
        )


if __name__ == "__main__":
    main()
