"""A model's cost, exact before any training: trainable parameters and forward FLOPs per image.

Both come from the model plan (`sepconc.model.plan_model`), without building anything,
so a sweep knows them for every configuration before it launches a trial (`validate`,
the sweep file's `constraints:`, the objectives `params` and `flops`).

`flops` counts the learned layers' multiply-adds, 2 FLOPs each (as
`torch.utils.flop_counter.FlopCounterMode` counts matrix products and convolutions):
each projection `P` (`2 k_P^2 (C K) P n'^2`), each tight frame's analysis and synthesis
(`4 width C k^2` per patch position) and the classifier's linear layers. The fixed
scattering front-ends (FFTs or fixed convolutions, no parameters) and element-wise work
(normalizations, non-linearities, pooling) are not counted.
"""

from __future__ import annotations

from sepconc.config import Config, ModelConfig
from sepconc.data import dataset_spec
from sepconc.model import BlockPlan, expected_parameter_count, plan_model

COST_KEYS = ("params", "flops")  # result keys / MLflow metrics logged before the first epoch


def model_cost(config: Config) -> dict[str, int]:
    """`{"params": trainable parameters, "flops": forward FLOPs per image}` of `config`'s
    model on its dataset. Raises `UserError` for an impossible model (as `plan_model`)."""
    d = config.data
    shape, classes = dataset_spec(d.dataset, d.nb_classes, d.compact_head)
    return {"params": expected_parameter_count(config.model, shape, classes),
            "flops": forward_flops(config.model, shape, classes)}  # fmt: skip


def forward_flops(model: ModelConfig, image_shape: tuple[int, int, int], classes: int) -> int:
    """Forward FLOPs of one image `(C, n, n)` through the learned layers (module docstring)."""
    plans = plan_model(model, image_shape)
    last = plans[-1]
    return sum(block_flops(p) for p in plans) + classifier_flops(
        model, last.out_channels, last.out_size, classes
    )


def block_flops(plan: BlockPlan) -> int:
    """One block's projection (same-size output) and frame (analysis + synthesis) FLOPs."""
    flops = 0
    if plan.proj_size is not None:
        flops += (
            2
            * plan.proj_kernel**2
            * plan.frontend_channels
            * plan.proj_size
            * plan.frontend_size**2
        )
    if plan.frame_width is not None:
        side = (plan.frontend_size - plan.frame_kernel) // plan.frame_stride + 1
        flops += 4 * plan.frame_width * plan.out_channels * plan.frame_kernel**2 * side**2
    return flops


def classifier_flops(model: ModelConfig, channels: int, size: int, classes: int) -> int:
    """The classifier's linear layers (`fc`, or `mlp` with `nb_l_mlp` hidden layers)."""
    pooled = size - model.avg_ker_size + 1
    features = channels * pooled * pooled
    if model.classifier_type == "fc":
        return 2 * features * classes
    h = model.nb_hidden_units
    return 2 * (features * h + (model.nb_l_mlp - 1) * h * h + h * classes)
