"""Model assembly (`sepconc.model`): shapes, parameter counts, config errors, cached input.

- Every architecture's blocks have the channel counts and sizes of docs/models.md, checked on
  real forward passes (synthetic 16x16, MNIST 28x28, CIFAR 32x32, small widths);
  blocks without a frame output unit vectors at every position.
- Parameter counts equal docs/models.md's formulas and its worked numbers (409,260; 104,074;
  11,275,466) for the seed's command lines.
- Per-block lists are padded as documented; impossible configurations are a one-line
  `UserError` that names the numbers.
Gradients: tests/test_model_gradients.py; the kernels: tests/test_kernels_*.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sepconc
from sepconc.config import Config, ModelConfig
from sepconc.errors import UserError
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


# ------------------------------------------------------------------ cached front-end input


def test_frontend_skipped_swaps_the_first_frontend_for_an_identity():
    """Inside `frontend_skipped()` the network takes the first front-end's output (as the
    cache stores it) and gives the same logits; the front-end is back on exit, also after
    an error; `skip=False` changes nothing."""
    torch.manual_seed(0)
    config = model(arch="scatnetblock", n_blocks=2, P_proj_size=[8, 16], scat_angles=[2])
    net = build_model(config, (1, 16, 16), 10).eval()
    x = torch.randn(3, 1, 16, 16)
    frontend = net.blocks[0].frontend
    cached = frontend(x).contiguous()
    want = net(x)
    with net.frontend_skipped() as skipped:
        assert skipped is net and isinstance(net.blocks[0].frontend, nn.Identity)
        torch.testing.assert_close(net(cached), want)
    assert net.blocks[0].frontend is frontend
    with net.frontend_skipped(False):
        assert net.blocks[0].frontend is frontend
    with pytest.raises(RuntimeError), net.frontend_skipped(True):
        raise RuntimeError("boom")
    assert net.blocks[0].frontend is frontend and net.blocks[1].frontend is not frontend
