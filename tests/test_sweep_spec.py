"""Sweep files without Ray: schema errors, search-space expansion, `--set`, `validate`.

Proves: every mistake a user can make in a sweep file is refused before anything starts,
with one line naming the key, the value and the fix (a close match suggested for a
mistyped key or kind); the trial count is the product of the grids times `samples`;
per-block lists are one grid option each; the Ray Tune space has the right domain types
and bounds (randint's high is inclusive); `--set` overrides typed values in sections;
every file in `sweeps/` validates; an impossible trial (a projection wider than its
input) makes `validate` exit non-zero naming the trial and both numbers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sepconc.errors import UserError
from sepconc.sweep.space import (
    architecture_variants,
    plan_trials,
    planned_trials,
    trial_count,
    tune_param_space,
)
from sepconc.sweep.spec import load_sweep, parse_sweep
from tests.helpers import ROOT, launch

BASE = {"dataset": "synthetic", "arch": "analysis", "frame_width": [16],
        "frame_kernel_size": [4], "frame_stride": [4], "epochs": 4, "batch_size": 100}  # fmt: skip


def sweep(**changes) -> dict:
    raw = {"name": "t", "base": dict(BASE), "search": {"lr": {"grid": [0.1, 0.01]}}}
    raw.update(changes)
    return raw


# The sweep-file mistakes (schema, search kinds, values a trial can draw, names, missing or
# unreadable files) are cases of the one bad-input catalogue: tests/test_bad_input.py.


def test_defaults_filled_in():
    spec = parse_sweep(sweep(scheduler={"type": "asha"}))
    assert spec.scheduler == {"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2}
    assert spec.resources == {"workers_per_trial": 1, "gpus_per_worker": 0, "cpus_per_worker": 1}
    assert spec.failure == {"max_retries": 1} and spec.checkpoint == {"every": 1, "keep": 2}
    assert spec.metric == "val_acc1" and spec.mode == "max"
    assert parse_sweep(sweep(metric="val_loss")).mode == "min"  # a loss is minimized
    assert parse_sweep(sweep()).scheduler == {"type": "fifo"}


def test_seed_is_recorded_and_repeats_differ():
    # one sample: seed 0 in base, so it is logged with the trial and `best --out` keeps it
    assert parse_sweep(sweep()).base["seed"] == 0
    assert all("seed" not in p for p in planned_trials(parse_sweep(sweep())))
    # repeats of a grid point draw a seed each (else they would be the same run)
    repeated = parse_sweep(sweep(samples=3))
    assert "seed" not in repeated.base
    seeds = [p["seed"] for p in planned_trials(repeated)]
    assert len(seeds) == 6 and len(set(seeds)) == 6 and all(isinstance(s, int) for s in seeds)
    fixed = parse_sweep(sweep(samples=3, base={**BASE, "seed": 7}))
    assert fixed.base["seed"] == 7 and all("seed" not in p for p in planned_trials(fixed))
    # a searched seed repeated by samples: the same trial twice, run once
    searched = parse_sweep(sweep(samples=2, search={"seed": {"grid": [1, 2]}}))
    assert planned_trials(searched) == [{"seed": 1}, {"seed": 2}]
    assert plan_trials(searched).merged == 2 and trial_count(searched) == 2


def test_trial_count_and_variants_with_per_block_lists():
    base = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 2,
            "scat_angles": [2], "epochs": 4, "batch_size": 100}  # fmt: skip
    raw = sweep(base=base, samples=2, search={
        "frame_width": {"grid": [[16, 32], [32, 64], [8, 8]]},
        "non_linearity": {"grid": ["relu", "softshrink"]},
        "P_proj_size": {"choice": [[4, 8], [8, 16]]},
        "lr": {"loguniform": [0.001, 0.1]},
    })  # fmt: skip
    spec = parse_sweep(raw)
    # grids multiply, choice and continuous draws do not; samples repeat the whole grid
    assert trial_count(spec) == 3 * 2 * 2
    variants = list(architecture_variants(spec))
    assert len(variants) == 3 * 2 * 2  # every grid x choice combination, lr at its middle
    assert all(v.config is not None and not v.problems for v in variants)
    widths = {tuple(v.config.model.frame_width) for v in variants}
    assert widths == {(16, 32), (32, 64), (8, 8)}
    projections = {tuple(v.config.model.P_proj_size) for v in variants}
    assert projections == {(4, 8), (8, 16)}
    assert {round(v.config.optim.lr, 12) for v in variants} == {0.01}  # sqrt(0.001 * 0.1)
    first = variants[0]
    assert first.params == {"frame_width": [16, 32], "non_linearity": "relu",
                            "P_proj_size": [4, 8], "lr": pytest.approx(0.01)}  # fmt: skip
    # the label shows the values trials use and the drawn parameter as its range
    assert first.label == ("frame_width=[16, 32] non_linearity=relu P_proj_size=[4, 8] "
                           "lr ~ loguniform[0.001, 0.1]")  # fmt: skip
    assert first.config.model.n_blocks == 2 and first.config.optim.epochs == 4  # base kept
    assert trial_count(parse_sweep(sweep(search={}))) == 1
    randint = parse_sweep(sweep(search={"epochs": {"randint": [2, 4]}}))
    assert trial_count(randint) == 1
    # both ends and the middle
    assert [v.config.optim.epochs for v in architecture_variants(randint)] == [2, 3, 4]
    assert [v.label for v in architecture_variants(randint)][0] == "epochs=2 (of randint[2, 4])"


def test_planned_trials_draws():
    from ray import tune

    raw = sweep(samples=40, search={
        "frame_width": {"grid": [[8], [16]]},
        "non_linearity": {"choice": ["relu", "absolute"]},
        "lr": {"loguniform": [0.001, 0.1]},
        "momentum": {"uniform": [0.5, 0.9]},
        "learning_rate_adjust_frequency": {"randint": [2, 3]},
    })  # fmt: skip
    spec = parse_sweep(raw)
    trials = planned_trials(spec)
    assert len(trials) == 80 and [t["frame_width"] for t in trials[:2]] == [[8], [16]]
    assert {t["non_linearity"] for t in trials} == {"relu", "absolute"}
    assert all(0.001 <= t["lr"] <= 0.1 and 0.5 <= t["momentum"] <= 0.9 for t in trials)
    assert {t["learning_rate_adjust_frequency"] for t in trials} == {2, 3}  # high inclusive
    # the same file plans the same trials; another searcher seed draws others
    assert planned_trials(parse_sweep(raw)) == trials
    other = planned_trials(parse_sweep({**raw, "searcher": {"type": "random", "seed": 1}}))
    assert other != trials
    assert tune_param_space(spec) == {"params": tune.grid_search(trials)}


def test_set_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep()))
    spec = load_sweep(path, ["base.epochs=2", "samples=3", "scheduler.type=asha",
                             "scheduler.max_t=2", "base.frame_width=[8]",
                             "search.lr={grid: [0.5]}"], name="renamed")  # fmt: skip
    assert spec.name == "renamed" and spec.samples == 3 and spec.epochs == 2
    assert spec.base["frame_width"] == [8] and spec.scheduler["max_t"] == 2
    assert spec.search["lr"] == {"grid": [0.5]} and trial_count(spec) == 3
    # A bad --set is a case of the bad-input catalogue (tests/test_bad_input.py).


def run_validate(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return launch("validate", path, *extra, timeout=120)


SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_every_sweep_file_validates(path, capsys, monkeypatch):
    """The `validate` command on each file (shapes and parameter counts by formula; building
    the paper's ImageNet models on CPU takes ~30 s each, so only quickstart is built below),
    on a machine as large as the paper's (resources are checked against the machine)."""
    from sepconc.cli import main

    big = {"CPU": 64.0, "GPU": 8.0, "memory": 512 * 1024**3, "nodes": 1, "node_cpu": 64.0,
           "node_gpu": 8.0}  # fmt: skip
    monkeypatch.setattr("sepconc.sweep.resources.local_totals", lambda: big)

    assert main(["validate", str(path), "--no-build"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    spec = load_sweep(path)
    trials = (f"up to {trial_count(spec)} trial(s)" if spec.searcher["type"] in ("tpe", "nsga2")
              else f"{trial_count(spec)} distinct trials")  # fmt: skip
    assert f"sweep {spec.name}: {trials}" in out
    assert spec.name == path.stem  # the runs folder is named like the file
    assert "parameters " in out


def test_validate_builds_the_quickstart_models():
    proc = run_validate(ROOT / "sweeps" / "quickstart.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count(": parameters ") == 8


def test_validate_refuses_a_projection_larger_than_its_input(tmp_path):
    raw = sweep(base={"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1,
                      "scat_angles": [8], "frame_width": [16], "epochs": 2, "batch_size": 100},
                search={"P_proj_size": {"grid": [16, 64]}})  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = run_validate(path)
    assert proc.returncode != 0
    # phase scattering of 1 channel with 8 angles: 1 * (1 + 4 * 8) = 33 channels
    line = proc.stderr.strip().splitlines()[-1]
    assert "trial P_proj_size=64" in line, proc.stderr
    assert "P_proj_size 64 is larger than its input's 33 channels; use at most 33" in line
    assert "Traceback" not in proc.stderr
    ok = run_validate(path, "--set", "search.P_proj_size={grid: [16, 33]}")
    assert ok.returncode == 0, ok.stderr
    assert "P_proj_size=33: parameters" in ok.stdout


# ------------------------------------------------------------------ numbers as users write them


def test_scientific_notation_is_a_float_everywhere_in_a_sweep_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: sci\n"
        "base: {dataset: synthetic, arch: analysis, frame_width: 16, frame_kernel_size: 4,\n"
        "       frame_stride: 4, epochs: 4, batch_size: 100, lr: 1e-3, pars_beta: 5E-4}\n"
        "search:\n"
        "  lr: {loguniform: [1e-4, 1e-2]}\n"
        "  weight_decay: {grid: [0, 1e-5, .5e-4]}\n"
        "  momentum: {uniform: [.5, +.9]}\n"
    )
    spec = load_sweep(path, ["base.lr=5e-3", "search.pars_beta={grid: [1E+2, 2e-4]}"])
    assert spec.base["lr"] == 0.005 and spec.base["pars_beta"] == 5e-4
    assert spec.search["lr"] == {"loguniform": [1e-4, 1e-2]}
    assert spec.search["weight_decay"] == {"grid": [0, 1e-5, 0.5e-4]}
    assert spec.search["momentum"] == {"uniform": [0.5, 0.9]}
    assert spec.search["pars_beta"] == {"grid": [100.0, 2e-4]}
    assert all(isinstance(v, float) for v in spec.search["lr"]["loguniform"])
    message = refused_lines(load_yaml_file(path), "search.pars_beta={grid: [-1e5]}")
    assert message == ["s.yaml: search.pars_beta=-100000.0: pars_beta must be >= 0, got -100000.0"]


def load_yaml_file(path: Path) -> dict:
    from sepconc.yamlio import load_yaml

    return load_yaml(path.read_text())


def refused_lines(raw: dict, *overrides: str) -> list[str]:
    """Every problem `parse_sweep` reports for `raw` (after `--set` overrides), one per line."""
    from sepconc.sweep.spec import _apply_override

    for item in overrides:
        _apply_override(raw, item)
    with pytest.raises(UserError) as info:
        parse_sweep(raw, where="s.yaml")
    return str(info.value).splitlines()


def test_randint_is_checked_at_every_value_it_can_draw():
    """randint [98, 102]: low 98, middle 100 and high 102 split over 2 workers, 99 and 101
    do not: refused in one line naming 99 (before: accepted, the trials drawing 99 failed in
    Ray). Over 1 worker every value works: accepted."""
    search = {"batch_size": {"randint": [98, 102]}}
    with pytest.raises(UserError) as err:
        parse_sweep(sweep(search=search, resources={"workers_per_trial": 2}), where="s.yaml")
    assert str(err.value) == (
        "s.yaml: search.batch_size.randint [98, 102] can draw 99 (batch_size 99 is not "
        "divisible by resources.workers_per_trial 2); draw only values that work, e.g. "
        "{choice: [98, 100, 102]} (3 of the range)"
    )
    raw = sweep(search=search, resources={"workers_per_trial": 1})
    assert parse_sweep(raw, where="s.yaml").search == search


def test_every_planned_trial_is_checked_before_launch():
    """Each key alone works (every stride divides 16 - 16 = 0; kernels 16 and 10 tile with
    the base stride 1..6 ends/middle), but the planned trial kernel 10 x stride 4 (16 - 10 = 6
    is not a multiple of 4) would fail in its trial: `validate_sweep` refuses it in one
    line, with how many planned trials would fail."""
    from sepconc.sweep.validate import validate_sweep

    base = {**BASE, "frame_kernel_size": [16], "frame_stride": [4]}
    raw = sweep(base=base, samples=4, search={"frame_kernel_size": {"grid": [16, 10]},
                                              "frame_stride": {"randint": [1, 6]}})  # fmt: skip
    spec = parse_sweep(raw, where="s.yaml")
    with pytest.raises(UserError) as err:
        validate_sweep(spec, build=False)
    (line,) = str(err.value).splitlines()
    assert line.startswith("planned trial frame_kernel_size=10 frame_stride=4 "), line
    assert "does not tile the 16x16 input" in line and "of the planned trials would fail" in line


def test_all_problems_of_a_file_are_reported_at_once(tmp_path, capsys):
    from sepconc.cli import main

    raw = sweep(search={"learning_rate_adjust_frequency": {"uniform": [1, 3]},
                        "batch_size": {"grid": [100, 33]}},
                resources={"workers_per_trial": 2}, samples=0)  # fmt: skip
    raw["base"]["non_linearity"] = False  # `non_linearity: off` unquoted
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", str(path), "--no-build"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith(f"error: {path}: ") for line in lines)
    assert "samples must be >= 1, got 0" in lines[0]
    assert "non_linearity: got the boolean false: YAML reads unquoted off/no/false as booleans; "\
           "quote it: non_linearity: 'off'" in lines[1]  # fmt: skip
    assert "learning_rate_adjust_frequency is an integer" in lines[2]
    assert "search.batch_size=33: batch_size 33 is not divisible" in lines[3]


def test_impossible_trials_are_all_listed_with_the_values_they_use(capsys):
    from sepconc.sweep.validate import validate_sweep

    base = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 2,
            "scat_angles": [8], "frame_width": [16], "epochs": 2, "batch_size": 100}  # fmt: skip
    spec = parse_sweep(sweep(base=base, search={"P_proj_size": {"grid": [16, 64, 128]},
                                                "lr": {"loguniform": [0.003, 0.03]}}))  # fmt: skip
    with pytest.raises(UserError) as info:
        validate_sweep(spec, build=False)
    lines = str(info.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("trial P_proj_size=[64, 256] lr ~ loguniform[0.003, 0.03]: ")
    assert "P_proj_size 64 is larger than its input's 33 channels" in lines[0]
    assert lines[1].startswith("trial P_proj_size=[128, 256] lr ~ loguniform[0.003, 0.03]: ")


def test_validate_shows_ranges_and_padded_lists(tmp_path, capsys):
    from sepconc.cli import main

    base = {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 2,
            "scat_angles": [2], "P_proj_size": [8], "epochs": 2, "batch_size": 100}  # fmt: skip
    raw = sweep(base=base, search={"lr": {"loguniform": [0.003, 0.03]},
                                   "frame_width": {"grid": [16, [16, 32]]}})  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", str(path), "--no-build"]) == 0
    out = capsys.readouterr().out
    assert "lr ~ loguniform[0.003, 0.03] frame_width=[16, 2048]: parameters" in out
    assert "lr ~ loguniform[0.003, 0.03] frame_width=[16, 32]: parameters" in out
    assert "lr=0.003" not in out and "seed: 0 in every trial" in out
    assert "base P_proj_size: 1 value for 2 blocks, padded with the default 256: [8, 256]" in out


def test_sweep_refuses_before_ray_starts(tmp_path, monkeypatch, capsys):
    """`sweep` on a file any trial would refuse: exit 2 and nothing written, without the
    driver (and so Ray) ever being called."""
    from sepconc.cli import main
    from sepconc.sweep import driver

    def started(*args, **kwargs):
        raise AssertionError("the sweep reached the driver")

    monkeypatch.setattr(driver, "launch", started)
    monkeypatch.setattr(driver, "start_ray", started)
    monkeypatch.chdir(tmp_path)
    raw = sweep(search={"learning_rate_adjust_frequency": {"uniform": [1, 3]}}, samples=2)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", "s.yaml", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "use randint: [1, 3] or grid" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_randint_is_checked_again_with_the_workers_resources_auto_fits():
    """`resources: auto` fits workers_per_trial after the file is read (1 while parsing):
    `validate_sweep` (validate, and the sweep's preflight once fitted) checks the range
    again with the fitted workers."""
    from sepconc.sweep.validate import validate_sweep

    raw = sweep(resources="auto", search={"batch_size": {"randint": [32, 64]}})
    spec = parse_sweep(raw, where="s.yaml")
    spec.resources = {**spec.resources, "workers_per_trial": 2}  # as fit_resources may
    with pytest.raises(UserError) as err:
        validate_sweep(spec, build=False)
    assert str(err.value).startswith(
        "resources: auto (2 workers): search.batch_size.randint [32, 64] can draw 33 "
    ), str(err.value)
