"""The `gpu` tier, whole models: every seed architecture (tiny widths) on CUDA against the
CPU float64 reference under each `--precision`, a training epoch from pinned batches,
every phase-scattering method, and DDP with two processes on CUDA.

Complements tests/test_gpu_kernels.py (fused vs reference kernels per family): here the
models are built as `train` builds them, with `precision` in the config (bf16: the
reference kernels, `kernels_for_precision`) and `sepconc.precision`'s autocast and TF32
flags. Stated tolerances (`MODEL_TOLERANCES`: relative L2 error of the loss, and of the
whole gradient, every parameter's concatenated): fp32 `1e-4`/`5e-3`, tf32 `2e-2`/`0.15`,
bf16 `6e-2`/`0.35`. Whole models with non-smooth non-linearities are ill-conditioned in
low precision; measured with CPU bf16 autocast (the same rounding): gradients 4e-3
(scatnet) to 0.13 (softshrink, n = 32) and 0.25 (absolute + mlp), losses <= 1e-3; float32
5.4e-4 at worst (softshrink). TF32 has two more mantissa bits than bf16. Phase scattering against the float64 Fourier oracle: `1e-5` (fourier,
dense), `1e-4` (conv, its 13x13 truncation); a training epoch on CUDA against the same on
CPU (float32): `1e-4` on its loss; DDP, 2 processes vs 1 on CUDA: test_trainer's BatchNorm
tolerance (`5e-3` relative on losses). DDP uses NCCL when every rank has its own GPU and
gloo over CUDA tensors when two ranks share one (NCCL refuses that: `backend_for`).

CPU tests here (not `gpu`): the backend rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sepconc.batches import ShardSampler, TensorBatches
from sepconc.config import Config
from sepconc.distributed import backend_for
from sepconc.loop import build_optimizer, train_epoch
from sepconc.model import build_model
from sepconc.precision import autocast, set_tf32, tf32_enabled
from sepconc.scattering import PhaseScattering2D
from sepconc.trainer import train

#: (loss, whole-gradient) relative L2 tolerance per precision (see the module docstring).
MODEL_TOLERANCES = {"fp32": (1e-4, 5e-3), "tf32": (2e-2, 0.15), "bf16": (6e-2, 0.35)}

#: The seed architectures at tiny widths: (flat config, image shape).
SEED_MODELS = {
    "analysis k=3 overlapping": (
        {"arch": "analysis", "frame_width": [24], "frame_kernel_size": [3]}, (1, 12, 12)),
    "analysis k=4 stride 4": (
        {"arch": "analysis", "frame_width": [32], "frame_kernel_size": [4], "frame_stride": [4]},
        (1, 16, 16)),
    "scatnet": ({"arch": "scatnet", "scattering_J": 2, "P_proj_size": [12]}, (2, 16, 16)),
    "scatnetblock": ({"arch": "scatnetblock", "n_blocks": 2, "P_proj_size": [6, 8]}, (3, 16, 16)),
    "scatnetblockanalysis softshrink n=32": (
        {"arch": "scatnetblockanalysis", "n_blocks": 2, "P_proj_size": [6, 8],
         "frame_width": [12, 16], "non_linearity": "softshrink"}, (3, 32, 32)),
    "scatnetblockanalysis absolute mlp": (
        {"arch": "scatnetblockanalysis", "n_blocks": 1, "P_proj_size": [6], "frame_width": [12],
         "non_linearity": "absolute", "classifier_type": "mlp", "nb_hidden_units": 16}, (1, 8, 8)),
}  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def _loss_and_grads(flat, shape, precision, device, dtype):
    config = Config.from_flat({**flat, "scat_angles": [2], "precision": precision}).model
    torch.manual_seed(0)
    net = build_model(config, shape, 3).to(device, dtype)
    if config.classifier_type == "mlp":
        net.eval()  # dropout masks differ between devices
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, *shape, generator=gen).to(device, dtype)
    labels = torch.tensor([0, 1, 2, 1, 0, 1, 2, 0], device=device)
    tf32 = tf32_enabled()
    set_tf32(precision == "tf32")
    try:
        with autocast(precision, device):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), labels)
        grads = torch.autograd.grad(loss, list(net.parameters()))
    finally:
        set_tf32(tf32)
    return loss.double().cpu(), [g.double().cpu() for g in grads]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", list(MODEL_TOLERANCES))
@pytest.mark.parametrize("model", list(SEED_MODELS))
def test_seed_architecture_on_cuda_matches_cpu_float64(model, precision):
    flat, shape = SEED_MODELS[model]
    loss_tol, grad_tol = MODEL_TOLERANCES[precision]
    want_loss, want_grads = _loss_and_grads(flat, shape, "fp32", "cpu", torch.float64)
    loss, grads = _loss_and_grads(flat, shape, precision, "cuda", torch.float32)
    assert torch.isfinite(loss)
    assert _rel(loss, want_loss) <= loss_tol
    assert _rel(_whole(grads), _whole(want_grads)) <= grad_tol


def _whole(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["fourier", "dense", "conv"])
def test_phase_scattering_methods_on_cuda(method):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    oracle = PhaseScattering2D(16, 4, method="fourier", kernels="reference").double()
    want = oracle(x.double()).contiguous()
    phase = PhaseScattering2D(16, 4, method=method, kernels="reference").cuda()
    got = phase(x.cuda()).double().cpu().contiguous()
    assert _rel(got, want) <= (1e-4 if method == "conv" else 1e-5)


@pytest.mark.gpu
def test_training_epoch_on_cuda_from_pinned_batches_matches_cpu():
    flat, shape = SEED_MODELS["scatnetblock"]
    config = Config.from_flat({**flat, "scat_angles": [2]}).model
    gen = torch.Generator().manual_seed(3)
    images, labels = (
        torch.randn(64, *shape, generator=gen),
        torch.randint(0, 3, (64,), generator=gen),
    )
    losses, tf32 = {}, tf32_enabled()
    set_tf32(False)  # PyTorch's default lets cuDNN convolutions use TF32
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = build_model(config, shape, 3).to(device)
        batches = TensorBatches(images, labels, ShardSampler(64, 1, 0, True, seed=1), 16,
                                pin_memory=device == "cuda")  # fmt: skip
        if device == "cuda":
            assert all(x.is_pinned() and y.is_pinned() for x, y in batches)
        optimizer = build_optimizer(net, 0.05, 0.9, 1e-4)
        out = train_epoch(net, net, optimizer, batches, 5e-4, 1, torch.device(device))
        losses[device] = out["loss"]
    set_tf32(tf32)
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.slow
def test_ddp_two_processes_on_cuda_match_one(tmp_path):
    base = {"dataset": "synthetic", "arch": "analysis", "frame_width": [32],
            "frame_kernel_size": [4], "frame_stride": [4], "epochs": 2, "batch_size": 100,
            "lr": 0.01, "seed": 3, "device": "cuda", "stats_every": 0, "tracking": False}  # fmt: skip
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        result = train(Config.from_flat({**base, "num_workers": workers, "out": str(out)}))
        assert result.epochs_done == 2
        rows[workers] = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    for a, b in zip(rows[1], rows[2]):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=5e-3, abs=1e-4), (a["epoch"], key)


def test_ddp_backend_is_nccl_only_with_a_gpu_per_rank(monkeypatch):
    assert backend_for("cpu", 2) == "gloo"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert backend_for("cuda", 1) == "nccl"
    assert backend_for("cuda", 2) == "gloo"  # NCCL refuses two ranks on one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert backend_for(torch.device("cuda", 1), 2) == "nccl"
