"""The bad-input catalogue's sweep-file schema cases: every key, kind and value a sweep file
can get wrong, each checked as `validate s.yaml --no-build` (run by tests/test_bad_input.py
with the cases of tests/bad_input_cases.py)."""

from __future__ import annotations

import re

from tests.bad_input_cases import SYN, Case, sweep_text


def sweep_case(expect: str, **changes) -> Case:
    """`validate s.yaml --no-build` on GOOD_SWEEP with `changes` (see `sweep_text`): the one
    error line names the file, then contains `expect` (literal text)."""
    return Case("validate s.yaml --no-build", r"^error: s\.yaml: .*" + re.escape(expect),
                {"s.yaml": sweep_text(**changes)})  # fmt: skip


TWO_WORKERS = {"workers_per_trial": 2}
PAYLOAD = "!!python/object/apply:os.system [touch pwned]"  # would create ./pwned
ASHA = {"type": "asha"}

# Sweep-file schema: every key, kind and value a sweep file can get wrong.
SWEEP_CASES: dict[str, Case] = {
    "search_unknown_parameter": sweep_case(
        "unknown parameter 'search.frame_widht' (did you mean 'frame_width'?)",
        search={"frame_widht": {"grid": [8]}}),
    "search_unknown_kind": sweep_case(
        "search.lr: unknown kind 'gird' (did you mean 'grid'?)", search={"lr": {"gird": [0.1]}}),
    "search_grid_not_a_list": sweep_case(
        "search.lr.grid needs a non-empty list, got 0.1", search={"lr": {"grid": 0.1}}),
    "search_entry_not_a_mapping": sweep_case(
        "search.lr must be one of {grid|choice|uniform", search={"lr": [0.1, 0.01]}),
    "search_uniform_reversed": sweep_case(
        "search.lr.uniform needs [low, high] with low < high, got [0.1, 0.01]",
        search={"lr": {"uniform": [0.1, 0.01]}}),
    "search_uniform_empty": sweep_case(
        "low < high, got [0.1, 0.1]", search={"lr": {"uniform": [0.1, 0.1]}}),
    "search_loguniform_zero": sweep_case(
        "search.lr.loguniform needs low > 0, got 0", search={"lr": {"loguniform": [0, 0.1]}}),
    "search_randint_three_values": sweep_case(
        "search.epochs.randint needs [low, high]", search={"epochs": {"randint": [1, 2, 3]}}),
    "search_randint_not_integers": sweep_case(
        "search.epochs.randint needs integer ends", search={"epochs": {"randint": [1.5, 3]}}),
    "search_per_block_list_too_long": sweep_case(
        "frame_width has 2 values but scatnetblockanalysis builds 1 block",
        search={"frame_width": {"grid": [[8, 16]]}}),
    "search_uniform_for_an_integer": sweep_case(
        "search.learning_rate_adjust_frequency.uniform [1, 3]: learning_rate_adjust_frequency "
        "is an integer and uniform draws floats (e.g. 1.74); use randint: [1, 3] or grid",
        search={"learning_rate_adjust_frequency": {"uniform": [1, 3]}}),
    "search_loguniform_for_an_integer": sweep_case(
        "search.frame_width.loguniform [8, 64]: frame_width is an integer",
        search={"frame_width": {"loguniform": [8, 64]}}),
    "search_uniform_for_a_str": sweep_case(
        "search.non_linearity.uniform [0, 1]: non_linearity is a str; use grid or choice",
        search={"non_linearity": {"uniform": [0, 1]}}),
    "search_grid_batch_not_divisible": sweep_case(
        "search.batch_size=33: batch_size 33 is not divisible by resources.workers_per_trial 2",
        search={"batch_size": {"grid": [100, 50, 33]}}, resources=TWO_WORKERS),
    "search_randint_batch_not_divisible": sweep_case(  # low (and middle) odd, high even
        "search.batch_size=97: batch_size 97 is not divisible by resources.workers_per_trial 2",
        search={"batch_size": {"randint": [97, 98]}}, resources=TWO_WORKERS),
    # field case 03 variant: ends and middle (32, 48, 64) divide, 33 drawn in a trial did not
    "search_randint_batch_inner_value_not_divisible": sweep_case(
        "search.batch_size.randint [32, 64] can draw 33 (batch_size 33 is not divisible by "
        "resources.workers_per_trial 2); draw only values that work, e.g. {choice: [32, 34, "
        "36, ..., 64]} (17 of the range)",
        search={"batch_size": {"randint": [32, 64]}}, resources=TWO_WORKERS, samples=8),
    "sweep_randint_batch_inner_value_not_divisible": Case(  # refused before Ray starts
        "sweep s.yaml", r"^error: s\.yaml: search\.batch_size\.randint \[32, 64\] can draw 33 ",
        {"s.yaml": sweep_text(search={"batch_size": {"randint": [32, 64]}},
                              resources=TWO_WORKERS, samples=8)}),
    "search_randint_kernel_not_tiling": sweep_case(  # 4, 8 (middle), 12 tile 16x16 by 4; 5 not
        "search.frame_kernel_size.randint [4, 12] can draw 5 (block 1 (analysis): "
        "frame_kernel_size 5 with frame_stride 4 does not tile the 16x16 input",
        base_arch="analysis", base_n_blocks=None, base_P_proj_size=None, base_frame_width=8,
        base_frame_stride=4, base_frame_kernel_size=4,
        search={"frame_kernel_size": {"randint": [4, 12]}}),
    "search_uniform_negative_lr": sweep_case(
        "search.lr=-0.1: lr must be > 0, got -0.1", search={"lr": {"uniform": [-0.1, 0.3]}}),
    "search_uniform_dropout_one": sweep_case(
        "search.dropout_p_mlp=1.0: dropout_p_mlp must be in [0, 1), got 1.0",
        search={"dropout_p_mlp": {"uniform": [0.5, 1.0]}}),
    "samples_zero": sweep_case("samples must be >= 1, got 0", samples=0),
    "scheduler_grace_not_int": sweep_case(
        "scheduler.grace_period must be int, got 1.5", scheduler={**ASHA, "grace_period": 1.5}),
    "scheduler_unknown_type": sweep_case(
        "scheduler.type must be one of fifo, asha, hyperband, median, pbt, got 'bohb'",
        scheduler={"type": "bohb"}),
    "scheduler_type_suggests": sweep_case(
        "got 'ahsa' (did you mean 'asha'?)", scheduler={"type": "ahsa"}),
    "scheduler_grace_above_max_t": sweep_case(
        "scheduler.grace_period must be in [1, max_t=2], got 5",
        scheduler={**ASHA, "grace_period": 5, "max_t": 2}),
    "scheduler_reduction_factor_one": sweep_case(
        "scheduler.reduction_factor must be > 1, got 1", scheduler={**ASHA, "reduction_factor": 1}),
    "scheduler_max_t_above_epochs": sweep_case(
        "scheduler.max_t 10 exceeds base.epochs 2; trials never reach it, lower max_t",
        scheduler={**ASHA, "max_t": 10}),
    "resources_bool": sweep_case(
        "resources.workers_per_trial must be int, got True", resources={"workers_per_trial": True}),
    "resources_unknown_key": sweep_case("unknown key 'resources.gpus'", resources={"gpus": 1}),
    "batch_not_divisible_by_workers": sweep_case(
        "base: batch_size 100 is not divisible by resources.workers_per_trial 3; choose a "
        "multiple of 3", resources={"workers_per_trial": 3}),
    "name_with_slash": sweep_case("sweep name 'a/b' is not allowed", name="a/b"),
    "name_hidden": sweep_case("sweep name '.hidden' is not allowed", name=".hidden"),
    "name_missing": sweep_case("missing 'name'", name=None),
    "unknown_metric": sweep_case("metric 'val_acc' is not one of", metric="val_acc"),
    "unknown_mode": sweep_case("mode must be 'min' or 'max', got 'maximize'", mode="maximize"),
    "base_unknown_key": sweep_case("base: unknown key 'epoch' (did you mean 'epochs'?)",
                                   base_epoch=3),
    "base_wrong_type": sweep_case("epochs must be int, got 'ten'", base_epochs="ten"),
    "base_not_a_mapping": sweep_case("base must be a mapping, got list", base=[1, 2]),
    "storage_not_str": sweep_case("storage must be str, got 3", storage=3),
    "set_without_value": Case("validate s.yaml --no-build --set base.epochs",
                              r"--set 'base\.epochs': expected key=value, e\.g\. --set base\.epochs=3",
                              {"s.yaml": sweep_text()}),
    "set_wrong_type": Case("validate s.yaml --no-build --set base.epochs=x",
                           r"epochs must be int, got 'x'", {"s.yaml": sweep_text()}),
    "set_max_t_above_epochs": Case(
        "validate s.yaml --no-build --set scheduler.type=asha --set scheduler.max_t=9",
        r"scheduler\.max_t 9 exceeds base\.epochs 2", {"s.yaml": sweep_text()}),
    "set_into_a_value": Case("validate s.yaml --no-build --set name.x=1",
                             r"--set 'name\.x=1': name is not a section", {"s.yaml": sweep_text()}),
    "set_value_not_yaml": Case("validate s.yaml --no-build --set samples=[1",
                               r"--set 'samples=\[1': the value is not valid YAML; quote it",
                               {"s.yaml": sweep_text()}),
    "yaml_payload_in_sweep_file": Case(  # the safe loader: the command is never run
        "validate s.yaml", r"s\.yaml: YAML syntax error at line 2",
        {"s.yaml": f"name: s\ndescription: {PAYLOAD}\nbase: {{}}\n"}),
    "yaml_payload_in_config_file": Case(
        f"{SYN} --config c.yaml", r"c\.yaml: YAML syntax error at line 2",
        {"c.yaml": f"epochs: 2\nout: {PAYLOAD}\n"}),
    "sweep_file_not_a_mapping": Case(
        "validate s.yaml", r"s\.yaml: a sweep file is a mapping \(name:, base:, search:",
        {"s.yaml": "- a\n- b\n"}),
}  # fmt: skip

# Issue 13.1-13.3 (search): `searcher:`, list `metric:`/`mode:`, `constraints:`.
SWEEP_CASES.update({
    "searcher_unknown_type": sweep_case(
        "searcher.type must be one of random, grid, tpe, nsga2, got 'tpee' (did you mean 'tpe'?)",
        searcher={"type": "tpee"}),
    "searcher_unknown_key": sweep_case(
        "unknown key 'searcher.sede' (did you mean 'seed'?)", searcher={"type": "tpe", "sede": 1}),
    "searcher_seed_negative": sweep_case(
        "searcher.seed must be an integer >= 0, got -1", searcher={"type": "tpe", "seed": -1}),
    "searcher_startup_on_random": sweep_case(
        "searcher.startup_trials applies to tpe and nsga2, not random",
        searcher={"type": "random", "startup_trials": 3}),
    "searcher_grid_with_drawn_entry": sweep_case(
        "searcher grid needs grid: entries only; search.lr is {'loguniform': [0.001, 0.1]}",
        searcher={"type": "grid"}, search={"lr": {"loguniform": [0.001, 0.1]}}),
    "metric_list_single_mode": sweep_case(
        "metric ['val_acc1', 'params'] needs mode with one entry per objective, got mode 'max'",
        metric=["val_acc1", "params"], mode="max"),
    "metric_list_mode_lengths_differ": sweep_case(
        "needs mode with one entry per objective, got mode ['max']",
        metric=["val_acc1", "params"], mode=["max"]),
    "metric_list_unknown_objective": sweep_case(
        "metric 'param' is not one of val_acc1, val_acc5, val_loss, train_loss, train_acc1, "
        "params, flops (did you mean 'params'?)", metric=["val_acc1", "param"], mode=["max", "min"]),
    "metric_list_bad_mode": sweep_case(
        "mode must be 'min' or 'max', got 'least'", metric=["val_acc1", "flops"],
        mode=["max", "least"]),
    "constraint_unknown_key": sweep_case(
        "unknown constraint 'parameters'; constrain one of params, flops",
        constraints={"parameters": {"max": 5e6}}),
    "constraint_unknown_bound": sweep_case(
        "constraints.params: unknown bound 'maximum'; use min or max",
        constraints={"params": {"maximum": 5e6}}),
    "constraint_bound_not_number": sweep_case(
        "constraints.flops.max must be a number >= 0 (e.g. 5e6), got '2G'",
        constraints={"flops": {"max": "2G"}}),
    "constraint_min_above_max": sweep_case(
        "constraints.params: min 10 > max 5; no model can satisfy it",
        constraints={"params": {"min": 10, "max": 5}}),
    "constraint_refuses_everything": Case(
        "validate s.yaml --no-build",
        r"^error: every configuration breaks the constraints .*params 5,538 > max 100",
        {"s.yaml": sweep_text(constraints={"params": {"max": 100}})}),
})  # fmt: skip

# sched (issue 13.4 schedulers, 13.5 budget): each misuse of scheduler: and budget: is one line.
PBT = {"type": "pbt", "mutations": {"lr": {"loguniform": [0.001, 0.1]}}}
PBT_SPACE = {"lr": {"grid": [0.1, 0.01]}}
SWEEP_CASES.update({
    "pbt_without_mutations": sweep_case(
        "scheduler: pbt needs mutations: with at least one perturbable key, e.g. mutations: "
        "{lr: {loguniform: [0.001, 0.1]}}; perturbable: lr, pars_beta",
        scheduler={"type": "pbt"}, search=PBT_SPACE),
    "pbt_mutates_a_structural_key": sweep_case(
        "scheduler.mutations.frame_width: pbt can only change lr, pars_beta while a trial trains",
        scheduler={"type": "pbt", "mutations": {"frame_width": [8, 16]}}, search=PBT_SPACE),
    "pbt_mutation_bad_range": sweep_case(
        "scheduler.mutations.lr: loguniform needs low > 0, got 0",
        scheduler={"type": "pbt", "mutations": {"lr": {"loguniform": [0, 0.1]}}}, search=PBT_SPACE),
    "pbt_one_trial": sweep_case(
        "scheduler pbt needs at least 2 trials to clone from, the sweep has 1; raise samples:",
        scheduler=PBT, search={}),
    "pbt_never_perturbs": sweep_case(
        "scheduler: burn_in_period 1 + perturbation_interval 1 must be below base.epochs 2",
        scheduler={**PBT, "burn_in_period": 1}, search=PBT_SPACE),
    "pbt_multi_worker": sweep_case(
        "scheduler: pbt needs resources.workers_per_trial: 1", scheduler=PBT, search=PBT_SPACE,
        resources=TWO_WORKERS),
    "scheduler_option_of_another_type": sweep_case(
        "unknown key 'scheduler.grace_period': an option of asha, median, not hyperband",
        scheduler={"type": "hyperband", "grace_period": 1, "reduction_factor": 2}),
    "hyperband_reduction_above_max_t": sweep_case(
        "scheduler.reduction_factor 3 exceeds max_t 2: hyperband would make one bracket",
        scheduler={"type": "hyperband"}),
    "median_grace_not_below_epochs": sweep_case(
        "scheduler.grace_period 2 is not below base.epochs 2: the median rule would never stop",
        scheduler={"type": "median", "grace_period": 2}),
    "median_min_samples_zero": sweep_case(
        "scheduler.min_samples_required must be >= 1, got 0",
        scheduler={"type": "median", "min_samples_required": 0}),
    "budget_time_without_unit": sweep_case(
        "budget.time '2' is not a duration; give a number with a unit s, m, h or d",
        budget={"time": "2"}),
    "budget_time_bad_unit": sweep_case(
        "budget.time '2 hours' is not a duration", budget={"time": "2 hours"}),
    "budget_gpu_hours_with_unit": sweep_case(
        "budget.gpu_hours must be a number of GPU-hours > 0 (e.g. 10 or 0.5, no unit), got '10h'",
        budget={"gpu_hours": "10h"}),
    "budget_trials_zero": sweep_case(
        "budget.trials must be a whole number of trials >= 1, got 0", budget={"trials": 0}),
    "budget_unknown_key": sweep_case(
        "unknown key 'budget.hours' (did you mean 'gpu_hours'?)", budget={"hours": 3}),
})  # fmt: skip

# issue 13.7 (extend): per-block rules (sepconc/sweep/rules.py)
SWEEP_CASES.update({
    "search_rule_non_integer_width": sweep_case(
        "search.frame_width: scale 0.5 x of 15 gives the width 7.5, not a whole number",
        search={"frame_width": {"scale": [0.5, 1], "of": [15]}}),
    "search_rule_not_per_block": sweep_case(
        "search.lr: a rule ({scale, of} or {start, factor}) gives per-block lists; lr is "
        "not a per-block option", search={"lr": {"start": [1], "factor": 2}}),
    "search_rule_under_grid_names_grid": sweep_case(
        "search.frame_width.grid.start needs whole numbers > 0 (a number or a list), got [8.5]",
        search={"frame_width": {"grid": {"start": [8.5], "factor": 2}}}),
    # issue 13.6 (extend): --extend needs the sweep to exist
    "extend_without_a_sweep": Case(
        "sweep s.yaml --extend", r"^error: --extend: no sweep named 's' in runs/sweeps to extend; "
        r"run `sweep FILE` without --extend to start it$", {"s.yaml": sweep_text()}),
})  # fmt: skip
