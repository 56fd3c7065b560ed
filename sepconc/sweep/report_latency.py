"""Report latency, for benchmarks: how long an epoch's report takes to reach the driver.

Rank 0 stamps each report with `sepconc_epoch_end` (`time.time()` when the epoch, its
checkpoint and its `metrics.jsonl` row were done; `sepconc.sweep.trial.RayReporter`).
With `SEPCONC_REPORT_LOG=FILE` in the driver's environment, `report_latency_callbacks()`
adds a Tune callback that appends one JSON line per result the driver receives:
`{"trial", "epoch", "latency_s"}` (driver clock minus the stamp; one machine, one clock).
The stamp is not a documented metric: MLflow never sees it.
"""

from __future__ import annotations

import json
import os
import time

from ray.tune import Callback

REPORT_LOG_ENV = "SEPCONC_REPORT_LOG"


class ReportLatency(Callback):
    """Appends `{"trial", "epoch", "latency_s"}` per received result to `path`."""

    def __init__(self, path: str):
        self.path = path

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stamp = result.get("sepconc_epoch_end")
        if stamp is None:
            return
        row = {"trial": trial.trial_id, "epoch": result.get("epoch"),
               "latency_s": time.time() - float(stamp)}  # fmt: skip
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def report_latency_callbacks() -> list:
    """`[ReportLatency(file)]` when `SEPCONC_REPORT_LOG` names a file, else []."""
    path = os.environ.get(REPORT_LOG_ENV)
    return [ReportLatency(path)] if path else []
