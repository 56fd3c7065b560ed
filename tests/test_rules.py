"""Per-block rules (`sepconc.sweep.rules`), without Ray.

Proves: `{scale, of}` expands at parse time into one per-block list per factor (a grid, or
the options of a choice); `{start, factor}` stays one sampled mark per start and becomes, in
each trial's config, one value per block that trial builds (its own `n_blocks`, 1 for
analysis); a rule on a key that is not per-block, a rule with wrong keys and a rule giving a
non-whole width are refused in one line (the CLI case is in the bad-input catalogue).
"""

from __future__ import annotations

import pytest

from sepconc.errors import UserError
from sepconc.sweep.rules import expand_rule, resolve_per_block
from sepconc.sweep.space import architecture_variants, trial_count, trial_flat_config
from sepconc.sweep.spec import parse_sweep
from sepconc.sweep.trial import trial_flat

BASE = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 2,
        "epochs": 1, "batch_size": 100, "P_proj_size": 8, "frame_width": 16,
        "workers": 0, "stats_every": 0}  # fmt: skip


def sweep(search: dict, **base) -> dict:
    return {"name": "t", "base": {**BASE, **base}, "search": search}


def test_scale_of_expands_to_per_block_lists():
    assert expand_rule("frame_width", {"scale": [0.5, 1, 2], "of": [16, 32]}, "w") == [
        [8, 16], [16, 32], [32, 64]]  # fmt: skip
    spec = parse_sweep(sweep({"frame_width": {"scale": [0.5, 1], "of": [16, 32]}}))
    assert spec.search["frame_width"] == {"grid": [[8, 16], [16, 32]]}
    assert trial_count(spec) == 2
    chosen = parse_sweep(sweep({"frame_width": {"choice": {"scale": [1, 2], "of": [16, 32]}}}))
    assert chosen.search["frame_width"] == {"choice": [[16, 32], [32, 64]]}


def test_start_factor_resolves_per_trial_n_blocks():
    spec = parse_sweep(sweep({"frame_width": {"start": [8, 16], "factor": 2},
                              "n_blocks": {"grid": [1, 3]}}))  # fmt: skip
    assert spec.search["frame_width"] == {"grid": ["8*2^block", "16*2^block"]}
    assert trial_flat_config(spec, {"frame_width": "16*2^block", "n_blocks": 3})[
        "frame_width"] == [16, 32, 64]  # fmt: skip
    assert trial_flat_config(spec, {"frame_width": "8*2^block", "n_blocks": 1})[
        "frame_width"] == [8]  # fmt: skip
    widths = {v.label for v in architecture_variants(spec)}
    assert "frame_width=[16, 32, 64] n_blocks=3" in widths
    # analysis builds one block whatever n_blocks says
    one = resolve_per_block({"arch": "analysis", "n_blocks": 4, "frame_width": "8*1.5^block"})
    assert one["frame_width"] == [8]
    # the trial process builds the same config (sweep/trial.py)
    fixed = {"base": spec.base, "workers": 1, "gpus_per_worker": 0, "checkpoint_every": 1,
             "checkpoint_keep": 1, "trials_dir": None}  # fmt: skip
    flat = trial_flat({"params": {"frame_width": "8*2^block", "n_blocks": 3}}, fixed, "t1")
    assert flat["frame_width"] == [8, 16, 32]


@pytest.mark.parametrize("search, expect", [
    ({"lr": {"scale": [1, 2], "of": [0.1]}}, "search.lr: a rule ({scale, of} or {start, "
                                            "factor}) gives per-block lists; lr is not"),
    ({"frame_width": {"scale": [0.5], "of": [15, 16]}},
     "search.frame_width: scale 0.5 x of 15 gives the width 7.5, not a whole number"),
    ({"frame_width": {"grid": {"scale": [1], "off": [16]}}}, "a rule is {scale: [...], of:"),
    ({"frame_width": {"start": [8.5], "factor": 2}}, "start needs whole numbers > 0"),
    ({"frame_width": {"start": [5], "factor": 1.5}, "n_blocks": {"grid": [2]}},
     "frame_width {start: 5, factor: 1.5} at block 2 of 2 gives the width 7.5"),
])  # fmt: skip
def test_bad_rules_are_refused_in_one_line(search, expect):
    with pytest.raises(UserError) as info:
        parse_sweep(sweep(search))
    assert expect in str(info.value) and "\n" not in str(info.value), str(info.value)
