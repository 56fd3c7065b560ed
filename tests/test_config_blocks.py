"""The seed's interface as the authors' parser: defaults, per-block padding, every problem.

Proves: `-b/--batch-size` defaults to 128 (the authors' parser); a per-block flag given
fewer values than the blocks is padded with the flag's DEFAULT (not repeated), stored
padded in the resolved config, shown by `--dry-run` and logged; a config with several
independent problems reports all of them, one line each, exit status 2.
"""

from __future__ import annotations

import logging

import pytest

from sepconc.cli import build_parser, main
from sepconc.config import Config, OptimConfig
from sepconc.errors import UserError


def test_batch_size_default_is_the_authors_128():
    assert OptimConfig().batch_size == 128 == Config.from_flat({}).optim.batch_size
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    help_text = next(a.help for a in train._actions if a.dest == "batch_size")
    assert "(default: 128)" in help_text


@pytest.mark.parametrize(
    ("flat", "name", "expected"),
    [
        ({"n_blocks": 4, "frame_width": 1024}, "frame_width", [1024, 2048, 2048, 2048]),
        ({"n_blocks": 4, "scat_angles": [4]}, "scat_angles", [4, 8, 8, 8]),
        ({"n_blocks": 3, "P_proj_size": [64, 128]}, "P_proj_size", [64, 128, 256]),
        ({"n_blocks": 2, "frame_stride": [2, 3]}, "frame_stride", [2, 3]),
        ({"n_blocks": 3}, "P_kernel_size", [1, 1, 1]),
        ({"arch": "analysis", "frame_width": 512}, "frame_width", [512]),  # 1 block (forced)
    ],
)
def test_short_per_block_lists_are_padded_with_the_default(flat, name, expected):
    config = Config.from_flat({"arch": "scatnetblockanalysis", **flat})
    assert getattr(config.model, name) == expected  # stored resolved
    assert config.model.block_values(name) == expected
    assert config.to_flat()[name] == expected  # what config.yaml and MLflow get


def test_padding_is_noted_only_when_it_changes_a_given_value():
    config = Config.from_flat({"arch": "scatnetblockanalysis", "n_blocks": 4,
                               "frame_width": 1024, "scat_angles": [8]})  # fmt: skip
    assert config.notes == [
        "frame_width: 1 value for 4 blocks, padded with the default 2048: [1024, 2048, 2048, 2048]"
    ]
    assert Config.from_flat(config.to_flat()).notes == []  # a resolved config is stable
    assert Config.from_flat(config.to_flat()) == config


def test_dry_run_prints_and_logs_the_padded_lists(capsys, caplog):
    argv = ["train", "--dry-run", "--n-blocks", "4", "--frame-width", "1024", "-a",
            "scatnetblockanalysis", "--dataset", "cifar10", "--P-proj-size", "64", "128", "256",
            "512"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sepconc.cli.train_cmd"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\nframe_width: 1024 2048 2048 2048\n" in out
    assert "\nP_proj_size: 64 128 256 512\n" in out
    assert "frame 1024 atoms" in out and out.count("frame 2048 atoms") == 3
    assert ("frame_width: 1 value for 4 blocks, padded with the default 2048: "
            "[1024, 2048, 2048, 2048]") in caplog.text  # fmt: skip


def test_seed_command_lines_keep_their_parameter_counts(capsys):
    """The paper's full-list commands do not change with the padding rule (counts measured
    before the change: `launch.py train --dry-run` on the seed README's CIFAR-10 commands)."""
    for argv, count in [
        ("--dataset cifar10 -a scatnetblock --n-blocks 4 --P-proj-size 64 128 256 512",
         5704906),
        ("--dataset cifar10 -a scatnetblockanalysis --n-blocks 4 --P-proj-size 64 128 256 512 "
         "--frame-width 1024 2048 4096 8192", 11275466),
        ("--dataset cifar10 -a analysis --frame-kernel-size 8 --frame-width 8192 "
         "--frame-stride 4", 1603600),
    ]:  # fmt: skip
        assert main(["train", "--dry-run", *argv.split()]) == 0
        assert f"parameters: {count}\n" in capsys.readouterr().out


def test_every_problem_of_a_config_is_reported(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0\nnon_linearity: off\nepochs: three\nframe_widht: 8\n")
    with pytest.raises(UserError) as info:
        Config.from_flat({"lr": 0, "non_linearity": False, "epochs": "three"}, where="c")
    assert str(info.value).splitlines() == [
        "c: non_linearity: got the boolean false: YAML reads unquoted off/no/false as "
        "booleans; quote it: non_linearity: 'off'",
        "c: epochs must be int, got 'three' (str)",
        "c: lr must be > 0, got 0.0",
    ]
    assert main(["train", "--config", str(path), "--dry-run"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"error: {path}: ") for line in lines)
    assert "unknown key 'frame_widht' (did you mean 'frame_width'?)" in lines[2]
