"""`SepconcOptunaSearch`: Ray Tune's `OptunaSearch` over a sweep's space, constraints checked
before launch (see `sepconc.sweep.search` for the sweep file's `searcher:`)."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from ray.tune.search.optuna import OptunaSearch

from sepconc.sweep.constraints import constraint_values, cost_violations, trial_cost
from sepconc.sweep.dedup import drop_inapplicable, trial_key
from sepconc.sweep.drawable import trial_problems
from sepconc.yamlio import dump_inline

if TYPE_CHECKING:
    from sepconc.sweep.spec import SweepSpec

log = logging.getLogger(__name__)

MAX_INFEASIBLE = 200  # suggestions refused in a row before the searcher gives up
MAX_ENUMERATED = 5000  # a discrete space up to this size is counted (when every trial was run)


def optuna_space(spec: SweepSpec) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`(distributions, decode)`: Optuna's distribution of each `search:` entry, and for
    categorical entries the map from Optuna's value to the option (a per-block list is
    offered as its YAML text, `[256, 512]`: Optuna's choices are scalars)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, decode = {}, {}
    for key, entry in spec.search.items():
        kind, args = next(iter(entry.items()))
        if kind in ("grid", "choice"):
            encoded = [dump_inline(a) if isinstance(a, (list, dict)) else a for a in args]
            decode[key] = dict(zip(encoded, args, strict=True))
            space[key] = CategoricalDistribution(encoded)
        elif kind == "randint":
            space[key] = IntDistribution(args[0], args[1])
        else:
            space[key] = FloatDistribution(float(args[0]), float(args[1]),
                                           log=kind == "loguniform")  # fmt: skip
    return space, decode


def _sampler(spec: SweepSpec, n_keys: int):
    import optuna
    from optuna.exceptions import ExperimentalWarning

    cfg = spec.searcher
    if cfg["type"] == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.get("seed"),
                                             population_size=cfg.get("startup_trials", 50))  # fmt: skip
    with warnings.catch_warnings():  # multivariate TPE is "experimental" in Optuna's words
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=cfg.get("seed"),
                                          n_startup_trials=cfg.get("startup_trials", 10),
                                          multivariate=n_keys > 1)  # fmt: skip


class SepconcOptunaSearch(OptunaSearch):
    """Ray Tune's `OptunaSearch` over a sweep's `search:` space, with its constraints
    checked before a trial is launched (module docstring) and per-block list options.

    Suggests `{"params": {key: value}}` (the trial config `sweep/trial.py` reads).
    `infeasible`: how many suggestions broke a constraint, `merged`: how many repeated an
    earlier trial's model and training settings (neither trained)."""

    def __init__(self, spec: SweepSpec, previous=()):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space, self._decode = optuna_space(spec)
        metrics, modes = spec.metrics, spec.modes
        several = len(metrics) > 1
        super().__init__(space=space, metric=metrics if several else metrics[0],
                         mode=modes if several else modes[0],
                         sampler=_sampler(spec, len(space)))  # fmt: skip
        self._spec = spec
        self.infeasible = 0  # suggestions that broke a constraint
        self.merged = 0  # suggestions identical to an earlier one (`_merged`)
        self._seen: dict[str, int] = {}  # trial_key -> Optuna trial number
        for params, result in previous:
            self._add_previous(params, result)

    def _encode(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: next((e for e, v in self._decode[k].items() if v == params[k]), params[k])
                if k in self._decode else params[k] for k in self._space}  # fmt: skip

    def _values(self, result: dict[str, Any]):
        values = [float(result[m]) for m in self._spec.metrics]
        return values if len(values) > 1 else values[0]

    def _constraints(self, cost: dict[str, int] | None) -> list[float]:
        """Optuna's constraint values; each bound broken (1.0) for a configuration that
        cannot be built (`cost` None: its trial would refuse it)."""
        if not self._spec.constraints:
            return []
        if cost is None:
            return [1.0] * sum(len(bounds) for bounds in self._spec.constraints.values())
        return constraint_values(self._spec.constraints, cost)

    def _add_previous(self, params: dict[str, Any], result: dict[str, Any]) -> None:
        """A finished trial (e.g. of the sweep being extended) as a completed Optuna trial."""
        import optuna

        try:
            values = self._values(result)
            several = isinstance(values, list)
            trial = optuna.trial.create_trial(
                values=values if several else None, value=None if several else values,
                params=self._encode(params), distributions=self._space,
                constraints={str(i): c for i, c in
                             enumerate(self._constraints(trial_cost(self._spec, params)))})  # fmt: skip
        except (KeyError, ValueError, TypeError) as exc:  # outside today's space, or no result
            log.warning("previous trial %s not given to the searcher: %s", params, exc)
            return
        self._ot_study.add_trial(trial)
        key = trial_key(self._spec, drop_inapplicable(self._spec, params)[0])
        self._seen.setdefault(key, self._ot_study.trials[-1].number)  # not run again

    def suggest(self, trial_id: str) -> dict | None:
        """The next feasible configuration (`{"params": ...}`); infeasible ones are told to
        Optuna as such without training (module docstring)."""
        if trial_id in self._ot_trials:
            return {
                "params": drop_inapplicable(self._spec, self._params(self._ot_trials[trial_id]))[0]
            }
        for _ in range(MAX_INFEASIBLE):
            refused = self.__dict__.setdefault("_refused", set())
            if len(self._seen) + len(refused) >= self._size():
                log.info("searcher: every configuration of the space was suggested; stopping")
                return self.FINISHED
            ot_trial = self._ot_study.ask(fixed_distributions=self._space)
            params = self._params(ot_trial)
            cost = trial_cost(self._spec, params)
            for i, value in enumerate(self._constraints(cost)):
                ot_trial.set_constraint(str(i), value)
            # a configuration its trial would refuse (cost None) is infeasible: never trained
            broken = (cost_violations(self._spec.constraints, cost) if cost
                      else trial_problems(self._spec, params)[:1])  # fmt: skip
            params = drop_inapplicable(self._spec, params)[0]
            if not broken and self._merged(ot_trial, params):
                continue
            if not broken:
                self._ot_trials[trial_id] = ot_trial
                return {"params": params}
            self.infeasible += 1
            refused.add(trial_key(self._spec, params))
            log.info("searcher: %s breaks %s; not trained", params, ", ".join(broken))
            self._ot_study.tell(ot_trial, self._worst(cost or {}))
        log.warning("searcher: %d suggestions in a row broke the constraints or repeated an "
                    "earlier trial; stopping", MAX_INFEASIBLE)  # fmt: skip
        return self.FINISHED

    def _size(self) -> float:
        """Distinct configurations of a discrete space (at most `MAX_ENUMERATED` combinations,
        counted after `drop_inapplicable`: `trial_key`s); inf when a float is swept."""
        import itertools
        import math

        from optuna.distributions import CategoricalDistribution, IntDistribution

        if getattr(self, "_distinct", None) is not None:
            return self._distinct
        options = [list(d.choices) if isinstance(d, CategoricalDistribution)
                   else range(d.low, d.high + 1) if isinstance(d, IntDistribution) else None
                   for d in self._space.values()]  # fmt: skip
        if any(o is None for o in options) or math.prod(map(len, options)) > MAX_ENUMERATED:
            self._distinct = math.inf
        else:
            keys = {trial_key(self._spec, drop_inapplicable(self._spec, self._params_of(
                dict(zip(self._space, combo, strict=True))))[0])
                for combo in itertools.product(*options)}  # fmt: skip
            self._distinct = len(keys)
        return self._distinct

    def _merged(self, ot_trial, params: dict[str, Any]) -> bool:
        """True when `params` builds the same model with the same training settings as an
        earlier suggestion: never trained twice; Optuna is told the earlier result (or, while
        that trial runs, that this one failed) and asked again."""
        from optuna.trial import TrialState

        key = trial_key(self._spec, params)
        seen = self.__dict__.setdefault("_seen", {})
        if key not in seen:
            seen[key] = ot_trial.number
            return False
        self.merged = getattr(self, "merged", 0) + 1
        earlier = self._ot_study.trials[seen[key]]
        if earlier.state == TrialState.COMPLETE:
            self._ot_study.tell(
                ot_trial, earlier.values if len(earlier.values) > 1 else earlier.value
            )
        else:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        log.info("searcher: %s is trial %d again; not trained twice", params, earlier.number)
        return True

    def _params(self, ot_trial) -> dict[str, Any]:
        return self._params_of(ot_trial.params)

    def _params_of(self, values: dict[str, Any]) -> dict[str, Any]:
        """Optuna's values as the trial's params (list options decoded from their text)."""
        return {k: self._decode[k][v] if k in self._decode else v for k, v in values.items()}

    def _worst(self, cost: dict[str, int]):
        """An infeasible configuration's objective values: its real cost, the worst
        possible value of each training metric."""
        worst = [float(cost[m]) if m in cost else (float("-inf") if mode == "max" else float("inf"))
                 for m, mode in zip(self._spec.metrics, self._spec.modes, strict=True)]  # fmt: skip
        return worst if len(worst) > 1 else worst[0]
