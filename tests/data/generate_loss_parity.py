"""Write `loss_parity.json`: the per-epoch losses of a fixed, tiny, seeded training run.

`tests/test_trainer.py::test_loss_parity` reruns the same configuration and compares
(rtol 1e-5), so a refactor of the model, the loop, the Parseval step or the data order
that changes the numbers is caught. The run covers every learned piece: phase
scattering (2 blocks, L = 2), standardization, projections, soft-thresholding frames,
BatchNorm + fc classifier, SGD with momentum and weight decay, Parseval steps, and a
learning-rate decay at epoch 3.

Floating-point sums depend on the thread count (1 vs 2 threads moved the epoch-2
validation loss by ~1e-5 relative), so the run is pinned to one thread here and in the
test. Regenerate only when a change of the numbers is intended, and say why in the
commit:

    python tests/data/generate_loss_parity.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "loss_parity.json"
THREADS = 1
KEYS = ("train_loss", "val_loss", "train_acc1", "val_acc1")

#: Relative tolerance between the losses of `--kernels reference` and `--kernels fused` on
#: this run (tests/test_kernels_parity.py). The two compute the same maths in a different
#: order, so they differ by float32 rounding, amplified over the epochs: measured 1.0e-6
#: at most (epoch 2 val_loss; torch 2.14.1, CPU, one thread). 1e-4 leaves 100x for another
#: CPU's GEMM rounding and is still 100x below what a real change of the maths moves.
KERNELS_LOSS_RTOL = 1e-4

#: The run, as flat config values (seed flag names). `out` is added by `run`.
CONFIG = {
    "dataset": "synthetic",
    "arch": "scatnetblockanalysis",
    "n_blocks": 2,
    "scat_angles": [2, 2],  # both blocks (a short list is padded with the default 8)
    "P_proj_size": [8, 16],
    "frame_width": [16, 32],
    "non_linearity": "softshrink",
    "phase_method": "auto",
    "epochs": 3,
    "batch_size": 100,
    "lr": 0.01,
    "learning_rate_adjust_frequency": 2,
    "seed": 7,
    "device": "cpu",
    "stats_every": 0,
    "checkpoint_keep": 1,
    "tracking": False,
}


def run(out: str | Path, kernels: str | None = None) -> dict[str, list[float]]:
    """Train `CONFIG` (with `kernels` when given) into `out` on `THREADS` threads; the
    per-epoch values of `KEYS`."""
    from sepconc.config import Config
    from sepconc.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    extra = {} if kernels is None else {"kernels": kernels}
    try:
        train(Config.from_flat({**CONFIG, **extra, "out": str(out)}))
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {key: [row[key] for row in rows] for key in KEYS}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        values = run(Path(tmp) / "run")
    reference = {"config": CONFIG, "threads": THREADS, "torch": torch.__version__, **values}
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {REFERENCE}: train_loss {values['train_loss']}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))  # the repository root, for `import sepconc`
    main()
