"""`validate`: expand a sweep's space and build every distinct architecture, without data or Ray."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sepconc.data import dataset_spec
from sepconc.errors import UserError
from sepconc.model import expected_parameter_count
from sepconc.sweep.space import architecture_variants, describe, trial_count
from sepconc.sweep.spec import SweepSpec


@dataclass
class Variant:
    params: str
    parameters: int


def validate_sweep(spec: SweepSpec, build: bool = True) -> list[Variant]:
    """Every distinct architecture's parameter count; `UserError` naming the trial if impossible.

    With `build`, each architecture is also instantiated (on CPU) and its real
    parameter count compared with the formula.
    """
    variants, seen, built = [], {}, set()
    for params, config in architecture_variants(spec):
        d = config.data
        shape, classes = dataset_spec(d.dataset, d.nb_classes, d.compact_head)
        key = repr((config.model, shape, classes))
        # The non-linearity has no parameters: one build serves all of its variants.
        layout = repr((replace(config.model, non_linearity="", zero_bias=False), shape, classes))
        label = describe(params)
        try:
            if key not in seen:
                seen[key] = expected_parameter_count(config.model, shape, classes)
            if build and layout not in built:
                _check_built(config, shape, classes, seen[key])
                built.add(layout)
        except UserError as exc:
            raise UserError(f"trial {label}: {exc}") from None
        variants.append(Variant(label, seen[key]))
    return variants


def _check_built(config, shape, classes, expected: int) -> None:
    from sepconc.model import SepConcNet

    net = SepConcNet(config.model, shape, classes)
    built = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if built != expected:  # a bug, not a user error: say so loudly
        raise AssertionError(f"built {built} parameters, formula says {expected}")


def summary_lines(spec: SweepSpec, variants: list[Variant]) -> list[str]:
    res = spec.resources
    lines = [
        f"sweep {spec.name}: {trial_count(spec)} trials, {len(variants)} distinct configurations",
        f"per trial: {res['workers_per_trial']} DDP worker(s) x {res['cpus_per_worker']:g} CPU"
        f" + {res['gpus_per_worker']:g} GPU; scheduler {spec.scheduler['type']}"
        + (f" (grace {spec.scheduler['grace_period']}, rf {spec.scheduler['reduction_factor']}, "
           f"max_t {spec.scheduler['max_t']})" if spec.scheduler["type"] == "asha" else ""),
    ]  # fmt: skip
    for v in variants:
        lines.append(f"  {v.params}: parameters {v.parameters:,}")
    return lines
