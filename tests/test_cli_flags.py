"""`launch.py train`'s flags are generated from the config dataclasses (`sepconc.cli.flags`).

- Every flag of the seed's `main.py` usage (the authors' README, copied below as a literal)
  is accepted, with the seed's dest (the flat config name; `--dir` is `out`, a documented
  rename) and the seed's per-block `nargs`.
- The generated flag set equals a frozen list: adding, renaming or dropping a flag is a
  deliberate change of this test.
- Each flag's default, type, choices and help come from the field (one source).
"""

from __future__ import annotations

import argparse

import pytest

from sepconc.cli import build_parser
from sepconc.cli.flags import field_docs, flag_names
from sepconc.config import FIELD_SECTION, KERNELS, NO_FLAG, Config

# The seed README's usage of main.py: (flags, dest, takes a list).
SEED_FLAGS = [
    (("--data",), "data", False),
    (("--dataset",), "dataset", False),
    (("-a", "--arch"), "arch", False),
    (("-j", "--workers"), "workers", False),
    (("--epochs",), "epochs", False),
    (("--start-epoch",), "start_epoch", False),
    (("-b", "--batch-size"), "batch_size", False),
    (("--lr", "--learning-rate"), "lr", False),
    (("--momentum",), "momentum", False),
    (("--wd", "--weight-decay"), "weight_decay", False),
    (("-p", "--print-freq"), "print_freq", False),
    (("--resume",), "resume", False),
    (("-e", "--evaluate"), "evaluate", False),
    (("--seed",), "seed", False),
    (("--learning-rate-adjust-frequency",), "learning_rate_adjust_frequency", False),
    (("--dir",), "dir", False),
    (("--pars-beta",), "pars_beta", False),
    (("--n-blocks",), "n_blocks", False),
    (("--scat-angles",), "scat_angles", True),
    (("--backend",), "backend", False),
    (("--scattering-J",), "scattering_J", False),
    (("--P-proj-size",), "P_proj_size", True),
    (("--P-kernel-size",), "P_kernel_size", True),
    (("--non-linearity",), "non_linearity", False),
    (("--zero-bias",), "zero_bias", False),
    (("--frame-width",), "frame_width", True),
    (("--frame-kernel-size",), "frame_kernel_size", True),
    (("--frame-stride",), "frame_stride", True),
    (("--classifier-type",), "classifier_type", False),
    (("--avg-ker-size",), "avg_ker_size", False),
    (("--nb-hidden-units",), "nb_hidden_units", False),
    (("--dropout-p-mlp",), "dropout_p_mlp", False),
    (("--nb-l-mlp",), "nb_l_mlp", False),
    (("--nb-classes",), "nb_classes", False),
    (("--class-indices",), "class_indices", False),
]
RENAMED = {"dir": "out"}  # the seed's dest -> sepconc's flat config name

# Every flag `train` accepts (the seed's, sepconc's own, and the command's --config/--dry-run).
FROZEN = sorted([
    "-h", "--help", "--data", "--dataset", "-a", "--arch", "-j", "--workers", "--epochs",
    "--start-epoch", "-b", "--batch-size", "--lr", "--learning-rate", "--momentum", "--wd",
    "--weight-decay", "-p", "--print-freq", "--resume", "-e", "--evaluate", "--seed",
    "--learning-rate-adjust-frequency", "--out", "--dir", "--pars-beta", "--n-blocks",
    "--scat-angles", "--backend", "--scattering-J", "--P-proj-size", "--P-kernel-size",
    "--non-linearity", "--zero-bias", "--frame-width", "--frame-kernel-size", "--frame-stride",
    "--classifier-type", "--avg-ker-size", "--nb-hidden-units", "--dropout-p-mlp", "--nb-l-mlp",
    "--nb-classes", "--class-indices", "--compact-head", "--num-workers", "--device",
    "--download", "--phase-method", "--kernels", "--precision", "--stats-every", "--checkpoint-keep",
    "--no-cache", "--tracking-uri", "--experiment", "--no-tracking", "--config", "--dry-run",
])  # fmt: skip


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def actions() -> dict[str, argparse.Action]:
    return {flag: a for a in train_parser()._actions for flag in a.option_strings}


def test_generated_flag_set_is_frozen():
    assert sorted(actions()) == FROZEN


@pytest.mark.parametrize("flags,dest,is_list", SEED_FLAGS, ids=[f[0][-1] for f in SEED_FLAGS])
def test_every_seed_flag_is_accepted_with_its_dest(flags, dest, is_list):
    found = actions()
    for flag in flags:
        action = found[flag]
        assert action.dest == RENAMED.get(dest, dest)
        assert set(flags) <= set(action.option_strings)
        assert (action.nargs == "+") == is_list


def test_the_seed_command_lines_parse_to_the_seed_dests():
    line = ("--dataset cifar10 -a scatnetblockanalysis -j 10 --n-blocks 4 --P-proj-size 64 128 "
            "256 512 --non-linearity relu --frame-width 1024 2048 4096 8192 --epochs 300 "
            "--batch-size 128 --lr 0.01 --learning-rate-adjust-frequency 70 --dir out/x "
            "--wd 1e-4 -p 5 -e --resume r.pt --scattering-J 3 --zero-bias")  # fmt: skip
    args = build_parser().parse_args(["train", *line.split()])
    assert (args.arch, args.workers, args.P_proj_size, args.frame_width, args.out) == (
        "scatnetblockanalysis",
        10,
        [64, 128, 256, 512],
        [1024, 2048, 4096, 8192],
        "out/x",
    )
    assert (args.lr, args.weight_decay, args.print_freq, args.evaluate, args.zero_bias) == (
        0.01, 1e-4, 5, True, True)  # fmt: skip
    assert (args.scattering_J, args.learning_rate_adjust_frequency) == (3, 70)
    assert "momentum" not in vars(args)  # flags not given leave the config (file) values


def test_each_flag_comes_from_its_field():
    found, defaults, docs = actions(), Config().to_flat(), field_docs()
    flagged = [name for name in FIELD_SECTION if name not in NO_FLAG]
    assert {a.dest for a in found.values()} >= set(flagged)
    for name in flagged:
        action = found[flag_names(name)[0]]
        doc = docs[name].replace("%", "%%")
        if isinstance(action, argparse._StoreFalseAction):  # `--no-X` says what it switches off
            doc = f"switch off (on by default): {doc[0].lower()}{doc[1:]}"
        assert action.dest == name and action.help.startswith(doc)
        if defaults[name] not in (None, True, False) and "(default" not in docs[name]:
            shown = defaults[name][0] if isinstance(defaults[name], list) else defaults[name]
            assert f"(default: {shown})" in action.help, name
    assert found["--kernels"].choices == KERNELS and found["--backend"].choices is None
    assert found["--no-cache"].dest == "cache" and found["--no-tracking"].const is False
    assert set(docs) == set(FIELD_SECTION)  # every field has a docstring (its help)


def test_kernels_flag_reaches_the_config():
    from sepconc.cli.train_cmd import config_from_args

    args = build_parser().parse_args(["train", "--kernels", "reference", "--no-cache"])
    config = config_from_args(args)
    assert (config.model.kernels, config.run.cache) == ("reference", False)
