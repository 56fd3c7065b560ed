"""Per-epoch scientific read-outs of a model: frame/projection diagnostics and class statistics.

Run on rank 0 on the bare (unwrapped) module; they read weights and a fixed
probe subset of the validation set and never touch gradients or optimizer.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from sepconc.data.types import labels_of, plain_images_of
from sepconc.metrics import frame_diagnostics, projection_diagnostics
from sepconc.metrics.separation import paired_deltas, separation_statistics
from sepconc.model import SepConcNet

PROBE_SEED = 1234  # fixed, not the run's seed: every run of a sweep probes the same images


def weight_diagnostics(net: SepConcNet) -> dict[str, float]:
    """`block{i}/frame/...` and `block{i}/P/...` diagnostics of every frame and projection."""
    out: dict[str, float] = {}
    for i, block in enumerate(net.blocks, 1):
        if block.projection is not None:
            for key, value in projection_diagnostics(block.projection.weight.detach()).items():
                out[f"block{i}/P/{key}"] = value
        if block.frame is not None:
            diag = frame_diagnostics(block.frame.weight.detach(), block.frame.atom_norm)
            for key, value in diag.items():
                out[f"block{i}/frame/{key}"] = value
    return out


def probe_set(dataset: Dataset, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of `dataset` as `(images (N, C, H, W), labels (N,))`."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    index = torch.randperm(len(dataset), generator=gen)[: min(size, len(dataset))]
    images = plain_images_of(dataset)
    if images is not None:
        return images[index].float(), labels_of(dataset)[index]
    items = [dataset[int(i)] for i in index]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


@torch.no_grad()
def block_statistics(
    net: SepConcNet, images: torch.Tensor, labels: torch.Tensor, classes: int, batch: int = 256
) -> dict[str, float]:
    """Separation statistics of the input and every block's output, ``{layer}/{measure}``.

    Measures and their ``_se`` standard errors: `sepconc.metrics.separation` (the same fixed
    number of principal directions and the same half-sample seed for every layer). Every
    block also gets ``delta_{fisher_k16, ncm_acc, within_rel}`` (+ ``_se``): its change from
    the layer before, with the paired standard error of that change.
    """
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    outputs: dict[str, list[torch.Tensor]] = {"input": []}
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(device)
        outputs["input"].append(x.flatten(1))
        for i, feats in enumerate(net.features(x), 1):
            outputs.setdefault(f"block{i}", []).append(feats.flatten(1))
    net.train(was_training)
    out: dict[str, float] = {}
    previous = None
    for name, chunks in outputs.items():
        halves: list[dict[str, float]] = []
        stats = separation_statistics(torch.cat(chunks), labels, classes, half_values=halves)
        if previous is not None:  # change from the layer before, with its paired SE
            stats.update(paired_deltas(previous, (stats, halves)))
        out.update({f"{name}/{key}": value for key, value in stats.items()})
        previous = (stats, halves)
    return out
