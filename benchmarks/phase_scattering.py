"""Phase scattering, Fourier (reference) vs convolution (fast path), CIFAR-10 block sizes.

For each block input ``(batch, C, n, n)``, ``(C, n)`` in (3, 32), (64, 16), (128, 8),
(256, 4) (L = 8, float32, CPU): median forward and forward+backward wall time of
both paths, their ratio, the sums over the four sizes, and the max relative L2
error of the conv output to the Fourier output. Target: conv forward+backward
>= 3x faster than Fourier summed over the four sizes, at <= 1e-4 error.

    python benchmarks/phase_scattering.py [--batch 128] [--threads 2] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sepconc.scattering import PhaseScattering2D

SIZES = ((3, 32), (64, 16), (128, 8), (256, 4))


def _time(module: torch.nn.Module, x: torch.Tensor, reps: int) -> tuple[float, float]:
    """Median seconds of (forward, forward+backward) with autograd on."""
    fwd, both = [], []
    for i in range(reps + 1):
        x.grad = None
        t0 = time.perf_counter()
        y = module(x)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        t2 = time.perf_counter()
        if i:  # the first run warms up
            fwd.append(t1 - t0)
            both.append(t2 - t0)
    return statistics.median(fwd), statistics.median(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--L", type=int, default=8)
    parser.add_argument("--kernel-size", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    extra = {} if args.kernel_size is None else {"kernel_size": args.kernel_size}
    print(f"batch {args.batch}, threads {args.threads}, L {args.L}, reps {args.reps}, float32")
    head = f"{'C x n':>10} {'fourier fwd':>12} {'conv fwd':>10} {'ratio':>6}"
    print(head + f" {'fourier f+b':>12} {'conv f+b':>10} {'ratio':>6} {'rel err':>9}")
    tot = [0.0, 0.0, 0.0, 0.0]
    worst = 0.0
    for C, n in SIZES:
        x = torch.randn(args.batch, C, n, n, requires_grad=True)
        four = PhaseScattering2D(n, args.L, method="fourier")
        conv = PhaseScattering2D(n, args.L, method="conv", **extra)
        with torch.no_grad():
            ref, out = four(x), conv(x)
            err = ((out - ref).norm() / ref.norm()).item()
        worst = max(worst, err)
        f_fwd, f_both = _time(four, x, args.reps)
        c_fwd, c_both = _time(conv, x, args.reps)
        for i, v in enumerate((f_fwd, c_fwd, f_both, c_both)):
            tot[i] += v
        print(
            f"{C:>4} x {n:<3} {f_fwd * 1e3:>9.1f} ms {c_fwd * 1e3:>7.1f} ms {f_fwd / c_fwd:>5.2f}x"
            f" {f_both * 1e3:>9.1f} ms {c_both * 1e3:>7.1f} ms {f_both / c_both:>5.2f}x {err:>9.2e}"
        )
    print(
        f"{'sum':>10} {tot[0] * 1e3:>9.1f} ms {tot[1] * 1e3:>7.1f} ms {tot[0] / tot[1]:>5.2f}x"
        f" {tot[2] * 1e3:>9.1f} ms {tot[3] * 1e3:>7.1f} ms {tot[2] / tot[3]:>5.2f}x {worst:>9.2e}"
    )
    ok = tot[2] / tot[3] >= 3.0 and worst <= 1e-4
    print(f"target (conv f+b >= 3x Fourier summed, error <= 1e-4): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
