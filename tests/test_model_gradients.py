"""Gradients of the assembled model (`sepconc.model`), with both kernel settings.

- A block's input gradient (and its projection's) passes `gradcheck` in float64, with
  batch statistics (train) and running ones (eval), for `kernels` reference and fused.
- The classifier and the analysis network pass `gradcheck`.
- The non-finite gradient guard zeroes NaN/Inf gradients at the input of block 2+ and
  counts them.
"""

from __future__ import annotations

import pytest
import torch

from sepconc.config import Config
from sepconc.model import build_model


@pytest.fixture(params=("reference", "fused"))
def kernels(request) -> str:
    return request.param


def model(**flat):
    return Config.from_flat(flat).model


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize(
    "non_linearity,k,s",
    [("relu", 1, 1), ("softshrink", 1, 1), ("softshrink", 2, 1), ("relu", 2, 2)],
)
def test_block_gradcheck(non_linearity, k, s, mode, kernels):
    """Input and P gradients of a whole scatnetblockanalysis block, float64, with batch
    statistics (train) and with the running ones (eval)."""
    torch.manual_seed(0)
    config = model(
        kernels=kernels,
        arch="scatnetblockanalysis",
        n_blocks=1,
        scat_angles=[2],
        P_proj_size=[6],
        frame_width=[10],
        frame_kernel_size=[k],
        frame_stride=[s],
        non_linearity=non_linearity,
    )
    net = build_model(config, (2, 8, 8), 3).double().train(mode == "train")
    block = net.blocks[0]
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    w = block.projection.weight.detach().clone().requires_grad_(True)

    def fn(x, w):
        return torch.func.functional_call(block, {"projection.weight": w}, (x,))

    assert fn(x, w).shape == (2, 6, 4, 4)
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_classifier_and_analysis_gradcheck():
    torch.manual_seed(1)
    config = model(
        arch="analysis",
        frame_width=[12],
        frame_kernel_size=[2],
        frame_stride=[2],
        non_linearity="softshrink",
        avg_ker_size=2,
    )
    net = build_model(config, (2, 4, 4), 3).double().eval()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


class NaNGradient(torch.autograd.Function):
    """Identity forward; backward puts NaN and Inf in the first two entries of the gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        grad.view(-1)[0] = float("nan")
        grad.view(-1)[1] = float("inf")
        return grad


def test_nonfinite_gradients_at_block_inputs_are_zeroed_and_counted(kernels):
    torch.manual_seed(2)
    config = model(
        kernels=kernels, arch="scatnetblock", n_blocks=3, P_proj_size=[8, 16, 16], scat_angles=[2]
    )
    net = build_model(config, (1, 16, 16), 10)

    def inject(module, args):  # block 2 (and 3) receive a tensor whose gradient turns NaN
        return (NaNGradient.apply(args[0]),) + args[1:]

    net.blocks[1].register_forward_pre_hook(inject)
    net.blocks[2].register_forward_pre_hook(inject)
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    net(x).logsumexp(1).sum().backward()
    assert net.pop_nonfinite_count() == 4  # 2 entries at the input of each of blocks 2 and 3
    assert net.pop_nonfinite_count() == 0  # popped
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert torch.isfinite(x.grad).all()
    # without an injected fault nothing is counted, and the first block's input is never guarded
    net2 = build_model(config, (1, 16, 16), 10)
    net2(torch.randn(4, 1, 16, 16, requires_grad=True)).sum().backward()
    assert net2.pop_nonfinite_count() == 0
