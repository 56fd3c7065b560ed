"""Model assembly (`sepconc.model`): shapes, parameter counts, config errors, gradients.

- Every architecture's blocks have the channel counts and sizes of docs/models.md, checked on
  real forward passes (synthetic 16x16, MNIST 28x28, CIFAR 32x32, small widths);
  blocks without a frame output unit vectors at every position.
- Parameter counts equal docs/models.md's formulas and its worked numbers (409,260; 104,074;
  11,275,466) for the seed's command lines.
- Per-block lists are padded as documented; impossible configurations are a one-line
  `UserError` that names the numbers.
- A block's input gradient (and its projection's) passes `gradcheck` in float64.
- The non-finite gradient guard zeroes NaN/Inf gradients at the input of block 2+ and counts them.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sepconc
from sepconc.config import Config, ModelConfig
from sepconc.errors import UserError
from sepconc.kernels import common
from sepconc.kernels.choose import KernelChoice
from sepconc.kernels.projection import StandardizedProjection, standardize_project
from sepconc.layers.projection import Projection
from sepconc.model import build_model, expected_parameter_count, plan_model, tree_channels

#: The two implementations every model test runs (kymatio's backend pattern).
KERNEL_SETTINGS = ("reference", "fused")


@pytest.fixture(params=KERNEL_SETTINGS)
def kernels(request) -> str:
    return request.param


def trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def model(**flat) -> ModelConfig:
    """A validated ModelConfig from seed-style flat names."""
    return Config.from_flat(flat).model


@pytest.fixture
def fast_init(monkeypatch):
    """Skip the QR of orthogonal init (seconds for 8192-atom frames): counts don't depend on it."""
    monkeypatch.setattr(nn.init, "orthogonal_", lambda t, *a, **k: t.data.normal_())


# ------------------------------------------------------------------ shapes, real forward passes

SHAPE_CASES = [
    # (flat model options, image shape, expected [(channels, size) after each block])
    ({"arch": "analysis", "frame_width": [32]}, (1, 16, 16), [(1, 16)]),
    (
        {"arch": "analysis", "frame_width": [64], "frame_kernel_size": [14], "frame_stride": [7]},
        (1, 28, 28),
        [(1, 28)],
    ),
    (
        {"arch": "analysis", "frame_width": [96], "frame_kernel_size": [8], "frame_stride": [4]},
        (3, 32, 32),
        [(3, 32)],
    ),
    (
        {"arch": "scatnet", "scattering_J": 2, "P_proj_size": [16], "scat_angles": [4]},
        (1, 16, 16),
        [(16, 4)],
    ),
    ({"arch": "scatnet", "scattering_J": 3, "P_proj_size": [24]}, (1, 28, 28), [(24, 3)]),
    (
        {"arch": "scatnet", "scattering_J": 3, "P_proj_size": [32], "scat_angles": [4]},
        (3, 32, 32),
        [(32, 4)],
    ),
    # third block padded with the defaults: L = 8 (16 * 33 = 528 channels), P = 256
    (
        {"arch": "scatnetblock", "n_blocks": 3, "P_proj_size": [8, 16], "scat_angles": [2, 2]},
        (1, 16, 16),
        [(8, 8), (16, 4), (256, 2)],
    ),
    (
        {"arch": "scatnetblock", "n_blocks": 2, "P_proj_size": [16, 32]},
        (1, 28, 28),
        [(16, 14), (32, 7)],
    ),
    (
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 4,
            "P_proj_size": [4, 8, 16, 32],
            "frame_width": [8, 16, 32, 64],
            "scat_angles": [2],
        },
        (3, 32, 32),
        [(4, 16), (8, 8), (16, 4), (32, 2)],
    ),
    (
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 2,
            "P_proj_size": [8, 16],
            "frame_width": [32],
            "frame_kernel_size": [2, 1],
            "frame_stride": [2, 1],
            "non_linearity": "softshrink",
            "scat_angles": [2, 4],
        },
        (1, 16, 16),
        [(8, 8), (16, 4)],
    ),
]


@pytest.mark.parametrize("flat,shape,expected", SHAPE_CASES)
def test_block_shapes_on_real_forward_passes(flat, shape, expected, kernels):
    torch.manual_seed(0)
    config = model(**flat, kernels=kernels)
    plans = plan_model(config, shape)
    assert [(p.out_channels, p.out_size) for p in plans] == expected
    net = build_model(config, shape, 10)
    x = torch.randn(3, *shape)
    feats = net.features(x)
    assert [tuple(f.shape) for f in feats] == [(3, c, n, n) for c, n in expected]
    for plan, feat, block in zip(plans, feats, net.blocks):
        K = {
            "identity": 1,
            "tree": tree_channels(config.scattering_J, plan.angles),
            "phase": 1 + 4 * plan.angles,
        }[plan.frontend]
        assert plan.frontend_channels == plan.in_channels * K
        if block.frame is None:  # normalization is the last step: unit vectors everywhere
            norms = feat.norm(dim=1)
            torch.testing.assert_close(norms, torch.ones_like(norms))
    assert net(x).shape == (3, 10)
    assert torch.isfinite(net(x)).all()


def test_third_block_uses_padded_projection_default():
    """n_blocks 3 with two P sizes: the third block gets the default 256 (needs 16*9 >= 256)."""
    config = model(arch="scatnetblock", n_blocks=3, P_proj_size=[8, 16], scat_angles=[2, 2, 2])
    with pytest.raises(UserError, match=r"block 3 .*P_proj_size 256 .*144 channels"):
        plan_model(config, (1, 16, 16))


# ------------------------------------------------------------------ per-block lists


def test_per_block_padding():
    m = model(
        arch="scatnetblockanalysis",
        n_blocks=4,
        P_proj_size=[64, 128],
        frame_width=[512],
        scat_angles=[8, 4, 2],
    )
    assert m.block_values("P_proj_size") == [64, 128, 256, 256]  # padded with the default 256
    assert m.block_values("frame_width") == [512, 2048, 2048, 2048]  # one value: padded too
    assert m.block_values("scat_angles") == [8, 4, 2, 8]
    assert m.block_values("frame_kernel_size") == [1, 1, 1, 1]
    single = model(arch="scatnet", P_proj_size=[128])
    assert single.blocks == 1 and single.block_values("P_proj_size") == [128]
    assert model(arch="analysis", n_blocks=4).blocks == 1  # forced


def test_per_block_list_longer_than_blocks_is_refused():
    with pytest.raises(UserError, match=r"P_proj_size has 3 values .* 2 block"):
        Config.from_flat({"arch": "scatnetblock", "n_blocks": 2, "P_proj_size": [8, 16, 32]})
    with pytest.raises(UserError, match=r"frame_width has 2 values .*analysis builds 1 block"):
        Config.from_flat({"arch": "analysis", "frame_width": [64, 128]})


# ------------------------------------------------------------------ impossible configs


@pytest.mark.parametrize(
    "flat,shape,pattern",
    [
        (
            {"arch": "scatnet", "scattering_J": 2, "P_proj_size": [300]},
            (1, 16, 16),
            r"P_proj_size 300 is larger than its input's 81 channels; use at most 81",
        ),
        (
            {"arch": "scatnetblock", "n_blocks": 1, "P_proj_size": [100]},
            (1, 28, 28),
            r"P_proj_size 100 .* 33 channels",
        ),
        (
            {"arch": "analysis", "frame_kernel_size": [5], "frame_stride": [2]},
            (1, 16, 16),
            r"frame_kernel_size 5 with frame_stride 2 does not tile the 16x16",
        ),
        (
            {"arch": "analysis", "frame_kernel_size": [20], "frame_stride": [1]},
            (1, 16, 16),
            r"frame_kernel_size 20",
        ),
        (
            {"arch": "scatnetblock", "n_blocks": 5, "P_proj_size": [4] * 5, "scat_angles": [1] * 5},
            (1, 16, 16),
            r"block 5 .*1x1, too small .*lower n_blocks",
        ),
        (
            {"arch": "scatnet", "scattering_J": 5, "P_proj_size": [8]},
            (1, 16, 16),
            r"scattering_J=5 needs inputs of at least 32 pixels, got 16",
        ),
        (
            {"arch": "scatnetblock", "n_blocks": 1, "P_proj_size": [8], "P_kernel_size": [2]},
            (1, 16, 16),
            r"P_kernel_size 2 must be odd",
        ),
        ({"arch": "analysis", "avg_ker_size": 20}, (1, 16, 16), r"avg_ker_size 20 .*16x16"),
    ],
)
def test_impossible_configs_are_user_errors(flat, shape, pattern):
    with pytest.raises(UserError, match=pattern) as excinfo:
        plan_model(model(**flat), shape)
    assert "\n" not in str(excinfo.value)


# ------------------------------------------------------------------ parameter counts

SEED_MODELS = [
    # (dataset shape, classes, flat, docs/models.md worked number or None)
    (
        (1, 28, 28),
        {
            "arch": "analysis",
            "frame_kernel_size": [14],
            "frame_width": [2048],
            "frame_stride": [7],
            "non_linearity": "relu",
        },
        409_260,
    ),
    (
        (1, 28, 28),
        {
            "arch": "analysis",
            "frame_kernel_size": [14],
            "frame_width": [2048],
            "frame_stride": [7],
            "non_linearity": "softshrink",
        },
        409_260,
    ),
    ((1, 28, 28), {"arch": "scatnet", "scattering_J": 3, "P_proj_size": [128]}, None),
    (
        (3, 32, 32),
        {
            "arch": "analysis",
            "frame_kernel_size": [8],
            "frame_width": [8192],
            "frame_stride": [4],
            "non_linearity": "absolute",
        },
        None,
    ),
    ((3, 32, 32), {"arch": "scatnet", "scattering_J": 3, "P_proj_size": [128]}, 104_074),
    (
        (3, 32, 32),
        {"arch": "scatnetblock", "n_blocks": 4, "P_proj_size": [64, 128, 256, 512]},
        None,
    ),
    (
        (3, 32, 32),
        {
            "arch": "scatnetblockanalysis",
            "n_blocks": 4,
            "P_proj_size": [64, 128, 256, 512],
            "frame_width": [1024, 2048, 4096, 8192],
            "non_linearity": "softshrink",
        },
        11_275_466,
    ),
]


@pytest.mark.parametrize("shape,flat,worked", SEED_MODELS)
def test_parameter_counts_of_the_seed_models(shape, flat, worked, fast_init):
    config = model(**flat)
    net = build_model(config, shape, 10)
    count = trainable(net)
    assert count == expected_parameter_count(config, shape, 10)
    if worked is not None:
        assert count == worked
    # the standardization BatchNorm has no parameters; only P and frames are "tight"
    for block in net.blocks:
        if block.standardize is not None:
            assert not list(block.standardize.parameters())
    tight = sum(p.numel() for _, p in net.tight_parameters())
    classifier = trainable(net.classifier)
    assert tight + classifier == count


def test_worked_example_breakdown(fast_init):
    """docs/models.md's CIFAR-10 scatnetblockanalysis example, term by term."""
    config = model(
        arch="scatnetblockanalysis",
        n_blocks=4,
        P_proj_size=[64, 128, 256, 512],
        frame_width=[1024, 2048, 4096, 8192],
    )
    plans = plan_model(config, (3, 32, 32))
    assert [(p.in_channels, p.frontend_channels, p.out_channels) for p in plans] == [
        (3, 99, 64),
        (64, 2112, 128),
        (128, 4224, 256),
        (256, 8448, 512),
    ]
    assert [p.in_size for p in plans] + [plans[-1].out_size] == [32, 16, 8, 4, 2]
    net = build_model(config, (3, 32, 32), 10)
    by_name = dict(net.tight_parameters())
    P = sum(by_name[f"block{i}/P"].numel() for i in range(1, 5))
    frames = sum(by_name[f"block{i}/frame"].numel() for i in range(1, 5))
    assert (P, frames, trainable(net.classifier)) == (5_683_392, 5_570_560, 21_514)


def test_mlp_classifier_parameter_count():
    flat = {
        "arch": "analysis",
        "frame_width": [32],
        "classifier_type": "mlp",
        "nb_hidden_units": 20,
        "nb_l_mlp": 3,
        "avg_ker_size": 3,
    }
    config = model(**flat)
    net = build_model(config, (1, 16, 16), 10)
    features = 1 * 14 * 14  # avg pool 3, stride 1: 16 -> 14
    linear = (features * 20 + 20) + 2 * (20 * 20 + 20) + (20 * 10 + 10)
    assert trainable(net.classifier) == 2 * 1 + linear
    assert (
        trainable(net) == 32 * 1 + 2 + linear == expected_parameter_count(config, (1, 16, 16), 10)
    )
    linears = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4  # Linear(in, H), 2 x Linear(H, H), Linear(H, classes)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_build_model_from_a_full_config():
    config = Config.from_flat(
        {
            "dataset": "digits",
            "arch": "analysis",
            "frame_width": [64],
            "frame_kernel_size": [14],
            "frame_stride": [7],
        }
    )
    net = sepconc.build_model(config)
    assert net.plans[0].in_channels == 1 and net.plans[0].in_size == 28
    assert net.classifier.head.out_features == 10
    assert trainable(net) == 64 * 196 + 2 + 784 * 10 + 10
    with pytest.raises(ValueError):
        build_model(config.model)  # a bare ModelConfig needs the shape and class count


# ------------------------------------------------------------------ gradients


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


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_standardize_project_equals_batchnorm_then_projection(layout, momentum):
    """The fused standardization + 1x1 projection gives BatchNorm2d(affine=False) then
    `Projection`'s values, input and weight gradients, running statistics and batch count,
    in training (three steps) and eval mode; float64. One channel has mean 10^3 x its
    spread (the exact-variance fallback) and one is constant."""
    torch.manual_seed(0)
    ref_norm = nn.BatchNorm2d(7, affine=False, momentum=momentum).double()
    norm = nn.BatchNorm2d(7, affine=False, momentum=momentum).double()
    proj = Projection(7, 5).double()
    for step in range(3):
        x = torch.randn(4, 7, 3, 3, dtype=torch.float64) + step
        x[:, 2] = 1e3 + 1e-3 * x[:, 2]
        x[:, 4] = 2.0
        if layout == "channel-major":
            x = _channel_major(x)
        x.requires_grad_(True)
        want = proj(ref_norm(x))
        got = standardize_project(x, norm, proj)
        assert got.shape == want.shape
        _assert_same_step(got, want, (x, proj.weight), values_tol=1e-9)
    _assert_same_running_statistics(norm, ref_norm)
    norm.eval(), ref_norm.eval()
    torch.testing.assert_close(standardize_project(x, norm, proj), proj(ref_norm(x)))


def _channel_major(x: torch.Tensor) -> torch.Tensor:
    """`x`'s values, stored as `(C, B, n, n)`."""
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def _assert_same_step(got, want, inputs, values_tol: float) -> None:
    """`got` is channel-major and equals `want`, and so do their gradients at `inputs`."""
    assert got.transpose(0, 1).is_contiguous()
    torch.testing.assert_close(got, want, rtol=values_tol, atol=values_tol)
    grad = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, inputs, grad),
                    torch.autograd.grad(want, inputs, grad)):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


def _assert_same_running_statistics(norm: nn.BatchNorm2d, ref_norm: nn.BatchNorm2d) -> None:
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(norm, name), getattr(ref_norm, name))


def test_standardized_projection_gradcheck():
    cols = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)
    p = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    fn = lambda c, w: StandardizedProjection.apply(c, w, 1e-5, None, None, 0.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (cols, p), eps=1e-6, atol=1e-6)


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


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
def test_fused_phase_standardize_project_equals_the_plain_modules(layout, monkeypatch):
    """The fused dense phase scattering + standardization + projection, computed in
    several channel blocks (the last one shorter), gives the plain modules' values
    (Fourier phase scattering, BatchNorm2d, Projection), input and weight gradients and
    running statistics, float64. An all-zero input channel checks the ReLUs' zero
    gradient at 0, where the fused backward reads its masks from the rectified rows."""
    from sepconc.kernels.phase_projection import (
        DensePhaseStandardizedProjection,
        phase_standardize_project,
        phase_standardize_project_reference,
    )
    from sepconc.scattering import PhaseScattering2D

    monkeypatch.setattr(common, "CHANNEL_BLOCK_ELEMENTS", 2 * 9 * 3 * 16)  # 2 channels
    assert len(common.channel_blocks(5, 9 * 3 * 16)) == 3
    torch.manual_seed(0)
    dense = PhaseScattering2D(8, 2, method="dense").double()
    fourier = PhaseScattering2D(8, 2, method="fourier").double()
    norm, ref_norm, ref2_norm = (nn.BatchNorm2d(45, affine=False).double() for _ in range(3))
    proj = Projection(45, 6).double()
    for step in range(2):
        x = torch.randn(3, 5, 8, 8, dtype=torch.float64) + step
        x[:, 3] = 0
        if layout == "channel-major":
            x = _channel_major(x)
        x.requires_grad_(True)
        got = phase_standardize_project(x, dense.dense, norm, proj)
        want = proj(ref_norm(fourier(x)))
        _assert_same_step(got, want, (x, proj.weight), values_tol=1e-8)
        reference = phase_standardize_project_reference(x, dense.dense, ref2_norm, proj)
        assert reference.is_contiguous()
        torch.testing.assert_close(reference, want, rtol=1e-8, atol=1e-8)
    _assert_same_running_statistics(norm, ref_norm)
    _assert_same_running_statistics(ref2_norm, ref_norm)
    cm = torch.randn(3, 5, 8, 8, dtype=torch.float64, requires_grad=True)  # no kink at 0
    p = proj.weight.detach().reshape(6, 45).requires_grad_(True)
    fn = lambda a, w: DensePhaseStandardizedProjection.apply(  # noqa: E731
        a, dense.dense, w, 1e-5, None, None, 0.0
    )
    assert torch.autograd.gradcheck(fn, (cm, p), eps=1e-6, atol=1e-6)


def test_a_network_trains_the_same_with_fused_and_reference_kernels():
    """A whole scatnetblockanalysis step (loss, every gradient, running statistics) is the
    same with `kernels="fused"` (its dense-phase blocks fused with the standardization and
    projection) and `kernels="reference"` (stock modules), float64."""
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1])
    results = []
    for kernels in KERNEL_SETTINGS:
        config = model(arch="scatnetblockanalysis", n_blocks=2, scat_angles=[2],
                       P_proj_size=[6, 8], frame_width=[12, 16], kernels=kernels)  # fmt: skip
        torch.manual_seed(0)
        net = build_model(config, (2, 8, 8), 3).double()
        choice = net.blocks[0].kernels(x.device)
        assert isinstance(choice, KernelChoice)
        assert choice.fuses_frontend(4 * 18 * 16, True) == (kernels == "fused")
        loss = nn.functional.cross_entropy(net(x), labels)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        results.append((loss, grads, [b.standardize.running_var.clone() for b in net.blocks]))
    (loss_a, grads_a, var_a), (loss_b, grads_b, var_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_a + tuple(var_a), grads_b + tuple(var_b)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
