"""The bad-input catalogue's cases (run and checked by tests/test_bad_input.py).

`CASES[name]` is a `Case`: a `launch.py` command line (after `launch.py`; `{tmp}` is the
working folder), the regular expression its one error line must match (the problem, the
value, the fix), the files to write first and the name of a data writer in `SETUPS`.
`PROCESS` names the cases that also run as the real `launch.py` subprocess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.fakedata import write_cifar10, write_imagefolder

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"\x00" * 4088  # macOS `._name`


# A sweep file that validates: one phase-scattering block on 1x16x16 synthetic images
# (33 channels after the front end), 2 trials, no file read.
GOOD_SWEEP = {
    "name": "s",
    "base": {"dataset": "synthetic", "arch": "scatnetblockanalysis", "n_blocks": 1,
             "epochs": 2, "batch_size": 100, "P_proj_size": 8, "frame_width": 16,
             "workers": 0, "stats_every": 0},
    "search": {"lr": {"grid": [0.01, 0.1]}},
    "scheduler": {"type": "fifo"},
    "resources": {"workers_per_trial": 1},
}  # fmt: skip
SYN = "train --dataset synthetic -j 0 -a analysis --frame-width 16"  # needs no data file


def sweep_text(**changes) -> str:
    """GOOD_SWEEP with top-level or `base.key` changes (value None deletes), as YAML."""
    import copy

    import yaml

    raw = copy.deepcopy(GOOD_SWEEP)
    for key, value in changes.items():
        target, name = (raw["base"], key[5:]) if key.startswith("base_") else (raw, key)
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return yaml.safe_dump(raw, sort_keys=False)


@dataclass
class Case:
    argv: str  # after `launch.py`; {tmp} is the working folder
    expect: str  # regular expression the error line must match
    files: dict[str, str | bytes] = field(default_factory=dict)  # relative path -> content
    setup: str | None = None  # name of a data writer to run first (see SETUPS)


def _imagenet(tmp: Path) -> None:
    write_imagefolder(tmp / "imnet", n_classes=3, n_per_class=1, size=8)


def _cifar(tmp: Path) -> None:
    write_cifar10(tmp / "data", n_per_batch=1, n_test=1)


def _imagenet_broken(tmp: Path) -> None:
    """An AppleDouble companion copied without its leading dot: an image name, no image."""
    _imagenet(tmp)
    (tmp / "imnet" / "train" / "n00000001" / "broken.JPEG").write_bytes(APPLEDOUBLE)


def _imagenet_empty_val(tmp: Path) -> None:
    _imagenet(tmp)
    folder = tmp / "imnet" / "val" / "n00000002"
    for p in folder.iterdir():
        p.unlink()
    (folder / "README.txt").write_text("images to come\n")
    (folder / "._img_0.JPEG").write_bytes(APPLEDOUBLE)


def _torch_bytes(obj) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _refused_checkpoint(tmp: Path) -> None:
    """Intact, but a numpy scalar and an argparse.Namespace the safe loader refuses."""
    import argparse

    import numpy as np

    (tmp / "ckpt.pt").write_bytes(_torch_bytes(
        {"model": {}, "epoch": 1, "best_val_acc1": np.float64(50.0),
         "args": argparse.Namespace(lr=0.01)}))  # fmt: skip


def _paper_checkpoint(tmp: Path) -> None:
    """The paper's main.py layout with the authors' own module names."""
    import torch

    (tmp / "paper.pth.tar").write_bytes(_torch_bytes(
        {"epoch": 3, "arch": "analysis", "best_acc1": torch.tensor(50.0), "optimizer": {},
         "state_dict": {"0.module.analysis.frame_weight": torch.zeros(2)}}))  # fmt: skip


SETUPS = {"imagenet": _imagenet, "cifar": _cifar, "imagenet_broken": _imagenet_broken,
          "imagenet_empty_val": _imagenet_empty_val, "refused_checkpoint": _refused_checkpoint,
          "paper_checkpoint": _paper_checkpoint}  # fmt: skip
IMNET = "train --dataset imagenet --data {tmp}/imnet -a scatnet --P-proj-size 16"

CASES: dict[str, Case] = {
    # ------------------------------------------------------------ sweep files (validate)
    "yaml_syntax_error": Case(
        "validate s.yaml", r"s\.yaml: YAML syntax error at line 4, column 7: .*; fix the file",
        {"s.yaml": "name: s\nbase:\n  dataset: [synthetic\n  arch: analysis\n"},
    ),
    "unknown_key_suggests": Case(
        "validate s.yaml", r"unknown key 'schedular' \(did you mean 'scheduler'\?\)",
        {"s.yaml": sweep_text(scheduler=None, schedular={"type": "fifo"})},
    ),
    "wrong_type": Case(
        "validate s.yaml", r"samples must be int, got 'two'",
        {"s.yaml": sweep_text(samples="two")},
    ),
    "empty_grid": Case(
        "validate s.yaml", r"search\.lr\.grid needs a non-empty list",
        {"s.yaml": sweep_text(search={"lr": {"grid": []}})},
    ),
    "per_block_list_too_long": Case(
        "validate s.yaml", r"frame_width has 2 values but scatnetblockanalysis builds 1 block",
        {"s.yaml": sweep_text(base_frame_width=[16, 32])},
    ),
    "projection_too_large_validate": Case(
        "validate s.yaml", r"P_proj_size 64 is larger than its input's 33 channels; use at most 33",
        {"s.yaml": sweep_text(search={"P_proj_size": {"grid": [8, 64]}})},
    ),
    "unknown_arch_sweep": Case(
        "validate s.yaml", r"arch 'resnet' is not one of analysis, scatnet",
        {"s.yaml": sweep_text(base_arch="resnet")},
    ),
    "unknown_non_linearity_sweep": Case(
        "validate s.yaml", r"non_linearity 'tanh' is not one of absolute, softshrink, relu",
        {"s.yaml": sweep_text(search={"non_linearity": {"grid": ["relu", "tanh"]}})},
    ),
    "unknown_dataset_sweep": Case(
        "validate s.yaml", r"dataset 'svhn' is not one of mnist, cifar10",
        {"s.yaml": sweep_text(base_dataset="svhn")},
    ),
    "workers_per_trial_zero": Case(
        "validate s.yaml", r"resources\.workers_per_trial must be > 0, got 0",
        {"s.yaml": sweep_text(resources={"workers_per_trial": 0})},
    ),
    "name_with_dotdot_in_file": Case(
        "validate s.yaml", r"sweep name '\.\./x' is not allowed",
        {"s.yaml": sweep_text(name="../x")},
    ),
    "missing_sweep_file": Case("validate nosuch.yaml", r"sweep file nosuch\.yaml does not exist"),
    # ------------------------------------------------------------ sweep / resume / results
    "name_with_dotdot_flag": Case(
        "sweep s.yaml --name ../x", r"sweep name '\.\./x' is not allowed",
        {"s.yaml": sweep_text()},
    ),
    "unreachable_tracking_uri": Case(
        "sweep s.yaml --tracking-uri http://127.0.0.1:1",
        r"tracking server http://127\.0\.0\.1:1 is unreachable .*mlflow-server",
        {"s.yaml": sweep_text()},
    ),
    "unreachable_ray_address": Case(
        "sweep s.yaml --address 127.0.0.1:1",
        r"cannot reach Ray cluster at 127\.0\.0\.1:1 .*drop --address",
        {"s.yaml": sweep_text()},
    ),
    "resume_unknown_sweep": Case("resume nosuch", r"no sweep named 'nosuch' in runs/sweeps"),
    "status_unknown_sweep": Case("status nosuch", r"no sweep named 'nosuch'"),
    "best_unknown_sweep": Case("best nosuch", r"no sweep named 'nosuch'"),
    "compare_unknown_sweep": Case("compare nosuch --csv", r"no sweep named 'nosuch'"),
    # ------------------------------------------------------------ train
    "projection_too_large_dry_run": Case(
        f"{SYN} -a scatnetblock --n-blocks 1 --P-proj-size 64 --dry-run",
        r"P_proj_size 64 is larger than its input's 33 channels",
    ),
    "frame_does_not_tile": Case(
        f"{SYN} -a analysis --frame-width 16 --frame-kernel-size 5 --frame-stride 2",
        r"frame_kernel_size 5 with frame_stride 2 does not tile the 16x16 input",
    ),
    "unknown_arch_train": Case(f"{SYN} -a resnet", r"argument -a/--arch: invalid choice: 'resnet'"),
    "unknown_non_linearity_train": Case(
        f"{SYN} --non-linearity tanh", r"argument --non-linearity: invalid choice: 'tanh'"
    ),
    "unknown_dataset_train": Case(
        "train --dataset svhn", r"argument --dataset: invalid choice: 'svhn'"
    ),
    "missing_dataset_folder": Case(
        "train --dataset mnist --data /nonexistent/mnist -a analysis --frame-width 16",
        r"MNIST not found .* in /nonexistent/mnist/MNIST/raw.*--data DIR holding MNIST/raw/",
    ),
    "mislaid_cifar_folder": Case(
        "train --dataset cifar10 --data {tmp}/data/cifar-10-batches-py -a analysis "
        "--frame-width 16 --frame-kernel-size 8 --frame-stride 4",
        r"cifar10 not found in .*is the cifar-10-batches-py folder itself: pass its parent",
        setup="cifar",
    ),
    "class_indices_out_of_range": Case(
        "train --dataset imagenet --data {tmp}/imnet --nb-classes 2 --class-indices idx.txt "
        "-a scatnet --P-proj-size 16",
        r"--class-indices idx\.txt has indices out of range 0\.\.2 .*: 7",
        {"idx.txt": "0 7\n"}, setup="imagenet",
    ),
    "class_indices_duplicates": Case(
        "train --dataset imagenet --data {tmp}/imnet --nb-classes 2 --class-indices idx.txt "
        "-a scatnet --P-proj-size 16",
        r"--class-indices idx\.txt repeats indices 1; list each once",
        {"idx.txt": "1\n1\n"}, setup="imagenet",
    ),
    "class_indices_not_text": Case(
        f"{IMNET} --nb-classes 2 --class-indices idx.txt",
        r"--class-indices idx\.txt is neither utf-8 text nor a torch or \.npy file; accepted "
        r"formats: a torch\.save'd list or 1-D integer tensor, a \.npy integer array, or text",
        {"idx.txt": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"}, setup="imagenet",
    ),
    "class_indices_torch_dict": Case(
        f"{IMNET} --nb-classes 2 --class-indices idx.pt",
        r"--class-indices idx\.pt holds a torch\.save'd dict, not a list or 1-D tensor of "
        r"integers; accepted formats: ",
        {"idx.pt": _torch_bytes({"indices": [0, 1]})}, setup="imagenet",
    ),
    "imagenet_unreadable_image": Case(
        IMNET,
        r"image file .*/imnet/train/n00000001/broken\.JPEG cannot be read \(not an image PIL "
        r"recognises\); delete or replace it",
        setup="imagenet_broken",
    ),
    "imagenet_class_without_image": Case(
        IMNET,
        r"imagenet class folder .*/imnet/val/n00000002 \(val split\) has no image \(it holds "
        r"only README\.txt\); add images \(\.jpg, \.jpeg, \.png",
        setup="imagenet_empty_val",
    ),
    "resume_refused_objects": Case(
        f"{SYN} --resume ckpt.pt",
        r"checkpoint ckpt\.pt is intact but holds objects the safe loader \(torch\.load "
        r"weights_only=True\) refuses: .*argparse\.Namespace.*add_safe_globals",
        setup="refused_checkpoint",
    ),
    "resume_paper_layout_authors_names": Case(  # found at load: no tracking, nothing written
        f"{SYN} --no-tracking --resume paper.pth.tar",
        r"checkpoint paper\.pth\.tar is the paper's main\.py layout with the authors' module "
        r"names \(e\.g\. 0\.module\.analysis\.frame_weight\)",
        setup="paper_checkpoint",
    ),
    "negative_epochs": Case(f"{SYN} --epochs -1", r"epochs must be > 0, got -1"),
    "negative_lr": Case(f"{SYN} --lr=-0.1", r"lr must be > 0, got -0\.1"),
    "resume_missing_file": Case(
        f"{SYN} --resume {{tmp}}/missing.pt", r"--resume .*missing\.pt: no checkpoint there"
    ),
    "config_file_missing": Case(
        f"{SYN} --config nosuch.yaml", r"config file nosuch\.yaml does not exist"
    ),
    "evaluate_without_resume": Case(f"{SYN} --evaluate", r"evaluate needs a checkpoint: add --resume"),
    "batch_not_divisible": Case(
        f"{SYN} --batch-size 100 --num-workers 3",
        r"batch_size 100 is not divisible by num_workers 3; choose a multiple",
    ),
    "frame_width_zero": Case(f"{SYN} --frame-width 0", r"every frame_width must be > 0, got \[0\]"),
    "P_kernel_size_even": Case(
        f"{SYN} -a scatnetblock --n-blocks 1 --P-proj-size 8 --P-kernel-size 2",
        r"P_kernel_size 2 must be odd",
    ),
    "unknown_flag": Case(
        f"{SYN} --frobnicate 3", r"unrecognized arguments: --frobnicate 3 \(see --help\)"
    ),
    # ------------------------------------------------------------ train (more)
    "projection_too_large_scatnet": Case(
        f"{SYN} -a scatnet --scattering-J 2 --P-proj-size 300 --dry-run",
        r"P_proj_size 300 is larger than its input's 81 channels"),
    "projection_too_large_train": Case(  # not a dry run: refused before the run folder
        f"{SYN} -a scatnet --scattering-J 2 --P-proj-size 300 --epochs 1 --stats-every 0",
        r"P_proj_size 300 is larger than its input's 81 channels"),
    "mnist_without_data": Case(
        "train --dataset mnist -a analysis --epochs 1", r"needs a data folder: pass --data"),
    # ------------------------------------------------------------ gpu (issue 15.5): precision
    "precision_unknown": Case(f"{SYN} --precision fp16", r"invalid choice: 'fp16'"),
    "precision_bf16_with_fused_kernels": Case(
        f"{SYN} --precision bf16 --kernels fused --dry-run",
        r"kernels 'fused' cannot run with precision 'bf16'.*use --kernels auto or reference"),
}  # fmt: skip


# Also run as the real `launch.py` subprocess: argparse's exit, a sweep file, the network
# checks, file-reading errors, a refused checkpoint, a train refused after its pre-flight.
PROCESS = (
    "unknown_arch_train",
    "yaml_syntax_error",
    "unreachable_ray_address",
    "imagenet_unreadable_image",
    "resume_refused_objects",
    "projection_too_large_train",
)
