"""`validate`: expand a sweep's space and build every distinct architecture, without data or Ray.

Every problem of the file is collected (across keys and trials) and reported at once,
one line each; `EXTRA_CHECKS` is where other checks of a parsed sweep add theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sepconc.cost import model_cost
from sepconc.data import dataset_spec
from sepconc.errors import UserError
from sepconc.sweep.constraints import cost_violations
from sepconc.sweep.dedup import drop_inapplicable, trial_key
from sepconc.sweep.drawable import planned_problems, randint_problems
from sepconc.sweep.space import (
    architecture_variants,
    describe,
    plan_trials,
    trial_count,
    trial_flat_config,
)
from sepconc.sweep.spec import SweepSpec

# Further checks of a parsed sweep (e.g. its resources against the cluster): each takes the
# spec and returns its problems, one line each; `validate_sweep` reports them with the rest.
EXTRA_CHECKS: list[Callable[[SweepSpec], list[str]]] = []


@dataclass
class Variant:
    params: str
    parameters: int
    flops: int = 0
    refused: list[str] = field(default_factory=list)  # broken `constraints:` bounds
    same_as: str | None = None  # an earlier variant with the same resolved config: merged


def validate_sweep(spec: SweepSpec, build: bool = True) -> list[Variant]:
    """Every distinct architecture's parameter count, forward FLOPs per image and broken
    `constraints:` bounds.

    Raises `UserError` listing every impossible trial (naming it with the values it
    uses) and every problem of `EXTRA_CHECKS`, one line each. With `build`, each
    architecture is also instantiated (on CPU) and its real parameter count compared
    with the formula. When every configuration breaks the constraints, that is a problem.
    """
    variants, seen, built, problems, first = [], {}, set(), [], {}
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
                seen[key] = model_cost(config)
            if build and layout not in built:
                _check_built(config, shape, classes, seen[key]["params"])
                built.add(layout)
        except UserError as exc:
            problems += [f"trial {variant.label}: {line}" for line in str(exc).splitlines()]
            continue
        cost = seen[key]
        # merged as `plan_trials` merges: options that do not apply dropped, then same config
        same = first.setdefault(trial_key(spec, drop_inapplicable(spec, variant.params)[0]),
                                variant.label)  # fmt: skip
        variants.append(Variant(variant.label, cost["params"], cost["flops"],
                                cost_violations(spec.constraints, cost),
                                same if same != variant.label else None))  # fmt: skip
    if not problems and spec.auto_resources:  # workers fitted after the file was read
        problems += randint_problems(spec, f"resources: auto ({spec.workers} workers)")
    if not problems:  # each trial random/grid draws before launch, as it will run
        problems += planned_problems(spec)
    for check in EXTRA_CHECKS:
        problems += check(spec)
    if variants and all(v.refused for v in variants):
        problems.append(f"every configuration breaks the constraints (e.g. {variants[0].params}: "
                        f"{', '.join(variants[0].refused)}); loosen a bound or change the "
                        f"search space")  # fmt: skip
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
    from sepconc.sweep.search import MODEL_BASED

    res = spec.resources
    count = trial_count(spec)
    trials = (f"up to {count} trial(s) (searcher {spec.searcher['type']})"
              if spec.searcher["type"] in MODEL_BASED else f"{count} distinct trials")  # fmt: skip
    lines = [
        f"sweep {spec.name}: {trials}; {len(variants)} configuration(s) checked (each discrete "
        f"option, drawn values at their range's middle; listed below, identical ones marked)",
        f"per trial: {res['workers_per_trial']} DDP worker(s) x {res['cpus_per_worker']:g} CPU"
        f" + {res['gpus_per_worker']:g} GPU",
    ]  # fmt: skip
    if "seed" in spec.search:
        pass  # shown with each variant
    elif "seed" in spec.base:
        lines.append(f"seed: {spec.base['seed']} in every trial")
    else:
        lines.append("seed: drawn per trial (samples > 1), logged with it")
    for note in Config.from_flat(trial_flat_config(spec, {})).notes:
        lines.append(f"base {note}")
    lines += search_lines(spec)
    for v in variants:
        if v.same_as:
            lines.append(f"  {v.params}: the same trial as {v.same_as} (merged)")
            continue
        refused = f"  REFUSED by constraints: {', '.join(v.refused)}" if v.refused else ""
        lines.append(f"  {v.params}: parameters {v.parameters:,}, flops {v.flops:,}{refused}")
    return lines


def search_lines(spec: SweepSpec) -> list[str]:
    """`validate`'s lines on the searcher, the objectives, the constraints and what
    `plan_trials` took out before launch (counted)."""
    from sepconc.sweep.search import MODEL_BASED

    cfg = spec.searcher
    objectives = ", ".join(
        f"{m} ({mode})" for m, mode in zip(spec.metrics, spec.modes, strict=True)
    )
    lines = [f"objectives: {objectives}" + (f"; Pareto front in `best`, the scheduler uses "
                                            f"{spec.metrics[0]}" if len(spec.metrics) > 1 else "")]  # fmt: skip
    if spec.constraints:
        bounds = [f"{k} {'>=' if b == 'min' else '<='} {v:g}"
                  for k, kb in spec.constraints.items() for b, v in kb.items()]  # fmt: skip
        lines.append(f"constraints: {', '.join(bounds)} (params, flops per image: exact from the "
                     f"model plan; a configuration outside is never trained)")  # fmt: skip
    if cfg["type"] in MODEL_BASED:
        extra = "".join(f", {k} {cfg[k]}" for k in ("seed", "startup_trials") if k in cfg)
        told = ("; configurations breaking the constraints are told to it as infeasible, never "
                "trained" if spec.constraints else "")  # fmt: skip
        lines.append(f"searcher: {cfg['type']}{extra}: up to {spec.samples} trials (samples is "
                     f"the budget){told}")  # fmt: skip
        return lines
    plan = plan_trials(spec)
    seed = f" (seed {cfg['seed']})" if "seed" in cfg else ""
    lines.append(f"searcher: {cfg['type']}{seed}: {plan.drawn} configurations (grid x samples), "
                 f"{plan.merged} merged as identical, {len(plan.refused)} refused by constraints "
                 f"-> {len(plan.trials)} distinct trials")  # fmt: skip
    for key, count in plan.dropped.items():
        lines.append(f"  search.{key}: not applicable to the model of {count} trial(s), dropped "
                     f"from them")  # fmt: skip
    for params, broken in plan.refused:
        lines.append(f"  refused: {describe(params)}: {', '.join(broken)}")
    return lines
