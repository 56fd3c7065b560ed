"""`validate`: expand a sweep's space and build every distinct architecture, without data or Ray.

Every problem of the file is collected (across keys and trials) and reported at once,
one line each; `EXTRA_CHECKS` is where other checks of a parsed sweep add theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sepconc.data import dataset_spec
from sepconc.errors import UserError
from sepconc.model import expected_parameter_count
from sepconc.sweep.space import architecture_variants, trial_count, trial_flat_config
from sepconc.sweep.spec import SweepSpec

# Further checks of a parsed sweep (e.g. its resources against the cluster): each takes the
# spec and returns its problems, one line each; `validate_sweep` reports them with the rest.
EXTRA_CHECKS: list[Callable[[SweepSpec], list[str]]] = []


@dataclass
class Variant:
    params: str
    parameters: int


def validate_sweep(spec: SweepSpec, build: bool = True) -> list[Variant]:
    """Every distinct architecture's parameter count.

    Raises `UserError` listing every impossible trial (naming it with the values it
    uses) and every problem of `EXTRA_CHECKS`, one line each. With `build`, each
    architecture is also instantiated (on CPU) and its real parameter count compared
    with the formula.
    """
    variants, seen, built, problems = [], {}, set(), []
    for variant in architecture_variants(spec):
        problems += variant.problems
        config = variant.config
        if config is None:
            continue
        try:
            d = config.data
            shape, classes = dataset_spec(d.dataset, d.nb_classes, d.compact_head)
            key = repr((config.model, shape, classes))
            # The non-linearity has no parameters: one build serves all of its variants.
            layout = repr(
                (replace(config.model, non_linearity="", zero_bias=False), shape, classes)
            )
            if key not in seen:
                seen[key] = expected_parameter_count(config.model, shape, classes)
            if build and layout not in built:
                _check_built(config, shape, classes, seen[key])
                built.add(layout)
        except UserError as exc:
            problems += [f"trial {variant.label}: {line}" for line in str(exc).splitlines()]
            continue
        variants.append(Variant(variant.label, seen[key]))
    for check in EXTRA_CHECKS:
        problems += check(spec)
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)))
    return variants


def _check_built(config, shape, classes, expected: int) -> None:
    from sepconc.model import SepConcNet

    net = SepConcNet(config.model, shape, classes)
    built = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if built != expected:  # a bug, not a user error: say so loudly
        raise AssertionError(f"built {built} parameters, formula says {expected}")


def summary_lines(spec: SweepSpec, variants: list[Variant]) -> list[str]:
    """What `validate` prints: trials, resources, seeds, padded lists, then each variant."""
    from sepconc.config import Config

    res = spec.resources
    lines = [
        f"sweep {spec.name}: {trial_count(spec)} trials, {len(variants)} distinct configurations",
        f"per trial: {res['workers_per_trial']} DDP worker(s) x {res['cpus_per_worker']:g} CPU"
        f" + {res['gpus_per_worker']:g} GPU; scheduler {spec.scheduler['type']}"
        + (f" (grace {spec.scheduler['grace_period']}, rf {spec.scheduler['reduction_factor']}, "
           f"max_t {spec.scheduler['max_t']})" if spec.scheduler["type"] == "asha" else ""),
    ]  # fmt: skip
    if "seed" in spec.search:
        pass  # shown with each variant
    elif "seed" in spec.base:
        lines.append(f"seed: {spec.base['seed']} in every trial")
    else:
        lines.append("seed: drawn per trial (samples > 1), logged with it")
    for note in Config.from_flat(trial_flat_config(spec, {})).notes:
        lines.append(f"base {note}")
    for v in variants:
        lines.append(f"  {v.params}: parameters {v.parameters:,}")
    return lines
