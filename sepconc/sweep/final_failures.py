"""Trial failures that are final: a retry can only fail the same way, so none is made.

Tune retries a failed trial (`failure: {max_retries: N}`, Tune's `FailureConfig`) from its
last checkpoint, whatever failed. That is right for a fault (a killed worker, a lost node)
and wrong for a configuration error: a trial that refuses its config (`UserError`, raised
before training: a batch size its workers cannot share, a model that does not fit its
input, ...) refuses it again on every retry. Tune has no per-error retry policy, so
`BudgetScheduler` (the sweep's scheduler, always in place) ends such a trial itself when
Tune requeues it for a retry (`end_if_final`): the trial is marked failed at once with
its first error, as if `max_retries` were 0 for it; other failures keep their retries.
"""

from __future__ import annotations

import logging

from sepconc.errors import UserError

log = logging.getLogger(__name__)

FINAL = (UserError,)  # errors a retry repeats: the trial's own config refused


def is_final(exc: BaseException | None) -> bool:
    """Whether a trial's failure `exc` (as Tune got it: a `RayTaskError` wrapping the
    trial's exception, or that exception) is one a retry would only repeat (`FINAL`)."""
    cause = getattr(exc, "cause", None) if exc is not None else None
    return isinstance(exc, FINAL) or isinstance(cause, FINAL)


def last_failure(trial) -> BaseException | None:
    """The exception of `trial`'s latest failure, as Tune pickled it next to the trial
    (`Trial.pickled_error_file`); None when there is none or it cannot be read."""
    import cloudpickle

    path = getattr(trial, "pickled_error_file", None)
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return cloudpickle.load(handle)
    except Exception:  # unreadable or from another environment: not known to be final
        return None


def end_if_final(tune_controller, trial, exc: BaseException) -> None:
    """End `trial`, which Tune just requeued to retry after `exc`, as a failed trial
    without a retry: what Tune does for a failure with no retry left
    (`TuneController._process_trial_failure`, Ray 2.60): the scheduler and the search
    algorithm told (error), the trial stopped with status ERROR, the callbacks told (the
    MLflow run marked failed with its reason). `tune_controller`: the controller, or the
    wrapper Tune hands to schedulers. The trial's failure count stays 1."""
    tc = getattr(tune_controller, "_tune_controller", tune_controller)
    reason = str(getattr(exc, "cause", exc)).strip().splitlines()
    log.warning("trial %s failed with a configuration error, not retried: %s",
                trial.trial_id, reason[-1] if reason else type(exc).__name__)  # fmt: skip
    trial.max_failures = 0  # none left for it, should Tune look again (resume --retry)
    tc._scheduler_alg.on_trial_error(tc, trial)
    tc._search_alg.on_trial_complete(trial.trial_id, error=True)
    tc._schedule_trial_stop(trial, exception=exc)
    tc._callbacks.on_trial_error(iteration=tc._iteration, trials=tc._trials, trial=trial)
