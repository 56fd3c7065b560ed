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
import re
from pathlib import Path

from sepconc.errors import UserError

log = logging.getLogger(__name__)

FINAL = (UserError,)  # errors a retry repeats: the trial's own config refused


def is_final(exc: BaseException | None) -> bool:
    """Whether a trial's failure `exc` (as Tune got it: a `RayTaskError` wrapping the
    trial's exception, or that exception) is one a retry would only repeat (`FINAL`)."""
    cause = getattr(exc, "cause", None) if exc is not None else None
    return isinstance(exc, FINAL) or isinstance(cause, FINAL)


#: The exception line of a traceback naming a sepconc exception: `module.Class: message`.
EXCEPTION_LINE = re.compile(r"^(sepconc(?:\.\w+)+)\.(\w+): (.*)$", re.MULTILINE)


class RefusedConfig(UserError):
    """A trial's failure read back from Tune's text record: its config was refused."""


def last_failure(trial) -> BaseException | None:
    """`trial`'s latest failure when it is a final one (`FINAL`), else None, read from
    Tune's text record of it (`Trial.error_file`: `Failure # N ...` then the traceback,
    whose last exception line names the class, `sepconc.errors.UserError: ...`). The class
    is looked up in the named sepconc module (imported, never unpickled: Tune's pickled
    copy of the exception is not read), and a final one comes back as `RefusedConfig`
    with the message."""
    import importlib

    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return None
    found = list(EXCEPTION_LINE.finditer(text.rsplit("Failure # ", 1)[-1]))
    if not found:
        return None
    module, name, message = found[-1].groups()
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    if isinstance(cls, type) and issubclass(cls, FINAL):
        return RefusedConfig(message)
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
