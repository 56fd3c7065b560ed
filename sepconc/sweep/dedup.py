"""What makes two trials the same: the model they build and the settings they train with.

`model_signature` describes the network a config builds from its plan
(`sepconc.model.plan_model`): each block's front-end, projection and frame as they
exist in that architecture (a frame's options only where there is a frame, `P_*` only
where there is a projection, `scattering_J` only for the scattering tree, ...), then the
classifier. A swept model option that leaves the signature unchanged does not apply to
that trial (`drop_inapplicable`), and two trials whose resolved configs are equal after
that are one trial (`trial_key`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepconc.config import FIELD_SECTION, Config
from sepconc.data import dataset_spec
from sepconc.errors import UserError
from sepconc.model import plan_model

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec


def model_signature(config: Config) -> tuple:
    """The network `config` builds, as a comparable tuple (module docstring); raises
    `UserError` for an impossible model."""
    m, d = config.model, config.data
    shape, classes = dataset_spec(d.dataset, d.nb_classes, d.compact_head)
    blocks = []
    for p in plan_model(m, shape):
        block: tuple = (p.frontend, p.in_channels, p.in_size)
        if p.frontend == "tree":
            block += ("S", m.scattering_J, p.angles, m.backend)
        elif p.frontend == "phase":
            block += ("S", p.angles, m.phase_method)
        if p.proj_size is not None:
            block += ("P", p.proj_size, p.proj_kernel)
        if p.frame_width is not None:
            threshold = m.zero_bias if m.non_linearity == "relu" else None
            block += ("A", p.frame_width, p.frame_kernel, p.frame_stride, m.non_linearity,
                      threshold)  # fmt: skip
        blocks.append(block)
    head = (m.classifier_type, m.avg_ker_size)
    if m.classifier_type == "mlp":
        head += (m.nb_hidden_units, m.dropout_p_mlp, m.nb_l_mlp)
    return tuple(blocks), head, m.kernels, classes


def drop_inapplicable(spec: SweepSpec, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`(params, dropped keys)`: `params` without the swept model options that do not apply
    to the network this trial builds: no other value of the option (the base's, the search
    entry's other options) changes its `model_signature`."""
    from sepconc.sweep.trial_config import sampler_values, trial_flat_config

    def signature(values: dict[str, Any]) -> tuple | None:
        try:
            return model_signature(Config.from_flat(trial_flat_config(spec, values)))
        except UserError:
            return None

    own = signature(params)
    if own is None:
        return params, []  # an impossible trial: `validate` names it
    kept, dropped = dict(params), []
    for key, value in params.items():
        if FIELD_SECTION.get(key) != "model" or key == "arch" or key not in spec.search:
            continue
        kind, args = next(iter(spec.search[key].items()))
        probes = [{k: v for k, v in kept.items() if k != key}]  # the base's value
        probes += [{**kept, key: o} for o in sampler_values(kind, args) if o != value]
        found = [signature(p) for p in probes]
        if all(f == own for f in found if f is not None) and any(f is not None for f in found):
            kept, dropped = probes[0], [*dropped, key]
    return kept, dropped


def trial_key(spec: SweepSpec, params: dict[str, Any]) -> str:
    """Equal for trials that build the same model and train it the same way (their resolved
    configs are equal); the params' text for a config that cannot be resolved."""
    from sepconc.sweep.trial_config import trial_flat_config

    try:
        flat = Config.from_flat(trial_flat_config(spec, params)).to_flat()
    except UserError:
        flat = params
    return repr(sorted(flat.items()))
