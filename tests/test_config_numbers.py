"""Numbers as users write them, and every value sepconc writes read back unchanged.

Proves: the one YAML loader (`sepconc.yamlio`) reads `1e-3`, `5E-4`, `1e+2`, `.5`, `+.5`,
`-1e5` as floats and keeps ints ints, and stays safe (no Python objects); a string that
looks like a number or a boolean is quoted when written; EVERY config field, with awkward
values, round-trips through `config.yaml` (`train --config`), MLflow parameters (a real
sqlite store) and `best --out`'s writer, with its type; YAML's implicit booleans and
numbers in a text option are refused with the YAML rule and how to quote.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import yaml

from sepconc.config import FIELD_SECTION, PER_BLOCK, Config, field_kind, load_config_file
from sepconc.errors import UserError
from sepconc.tracking.store import param_text
from sepconc.yamlio import Loader, dump_inline, dump_yaml, load_yaml


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-3", 0.001), ("5E-4", 0.0005), ("1e+2", 100.0), ("1E+2", 100.0), (".5", 0.5),
     ("+.5", 0.5), ("-1e5", -100000.0), ("-.5e-3", -0.0005), ("1.5", 1.5), ("2.", 2.0),
     (".inf", float("inf")), ("-.inf", float("-inf"))],
)  # fmt: skip
def test_yaml_1_2_floats(text, value):
    loaded = load_yaml(f"x: {text}")["x"]
    assert isinstance(loaded, float) and loaded == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("-3", -3), ("+7", 7), ("0", 0), ("0x1f", 31), ("0o17", 15), ("017", 17),
     ("123456789012345678901234567890", 123456789012345678901234567890),
     ("1e", "1e"), ("e5", "e5"), (".", "."), ("1e-3x", "1e-3x"), ("off", False), ("yes", True),
     ("~", None), ("'1e-3'", "1e-3")],
)  # fmt: skip
def test_ints_stay_ints_and_other_scalars_keep_their_type(text, value):
    loaded = load_yaml(f"x: {text}")["x"]
    assert loaded == value and type(loaded) is type(value)


@pytest.mark.parametrize("text", ["67182_00000", "1_000", "1_000.5", "12:30", "1:30:00"])
def test_yaml_1_1_only_numbers_stay_text(text):
    """YAML 1.1 reads digit separators and base 60 as numbers: a Tune trial id
    (`67182_00000`) or a time would become a number. YAML 1.2, and sepconc, keep them text."""
    assert load_yaml(f"x: {text}")["x"] == text
    assert load_yaml(dump_yaml({"x": text}))["x"] == text


def test_the_loader_is_safe():
    assert issubclass(Loader, yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        load_yaml("x: !!python/object/apply:os.system [true]")


AWKWARD_SCALARS = [1e-5, 0.0, -0.0, 1e300, 5e-324, 2**63 + 1, 0, None, True, False, "1e-3",
                   "5E-4", ".5", "10", "0x1f", "017", "0o17", "1_000", "67182_00000", "off", "no", "yes", "true", "null", "~",
                   "", " lead", "a: b", "#x", "'q'", "[1]", "1:30", "2024-01-01", "relu"]  # fmt: skip


@pytest.mark.parametrize("value", AWKWARD_SCALARS + [[64, 128], [1e-5], ["1e-3", None]])
def test_written_values_read_back_with_their_type(value):
    for text in (dump_inline(value), param_text(value)):
        assert "\n" not in text
        back = load_yaml(text)
        assert back == value and type(back) is type(value), (value, text, back)
    back = load_yaml(dump_yaml({"x": value}))["x"]
    assert back == value and type(back) is type(value)


def awkward_config() -> Config:
    """A config with an awkward value in every field (each type's hard cases)."""
    flat = {}
    floats = itertools.cycle([1e-5, 0.0, 123456.75, 5e-4, 3e-7, 1e2])
    ints = itertools.cycle([2**40 + 1, 7, 3, 2**31 - 1, 12])
    texts = itertools.cycle(["1e-3", "off", "10", "true", "null", "0x1f", ".5", "2024-01-01",
                             "~", "yes", "1_000", "+.5", "no"])  # fmt: skip
    for name in FIELD_SECTION:
        kind = field_kind(name)
        if kind == "float":
            flat[name] = next(floats)
        elif kind == "int":
            flat[name] = next(ints)
        elif kind == "bool":
            flat[name] = name not in ("evaluate",)
        elif kind == "str":
            flat[name] = next(texts)
    fixed = {"arch": "scatnetblockanalysis", "n_blocks": 4, "non_linearity": "softshrink",
             "classifier_type": "mlp", "backend": "torch", "phase_method": "fourier", "kernels": "fused",
             "precision": "tf32",
             "device": "cpu", "dataset": "digits", "batch_size": 2**40, "num_workers": 2,
             "dropout_p_mlp": 0.0, "momentum": 0.9999, "lr": 1e-3, "cache_max_gib": 0.5,
             "weight_decay": 1e-5, "data": "1e-3", "out": "off", "experiment": "10", "start_epoch": 0, "evaluate": False,
             "seed": None, "class_indices": None, "P_proj_size": [64, 128],
             "frame_width": [1024, 2048, 4096, 8192], "scat_angles": 4,
             "frame_kernel_size": [1], "frame_stride": [1, 2, 1, 2], "P_kernel_size": [3]}  # fmt: skip
    flat.update(fixed)
    config = Config.from_flat(flat)
    assert config.notes  # P_proj_size, scat_angles, P_kernel_size padded
    return config


def assert_same_flat(back: dict, flat: dict) -> None:
    assert set(back) == set(flat)
    for name, value in flat.items():
        assert back[name] == value and type(back[name]) is type(value), (name, value, back[name])
        if name in PER_BLOCK:
            assert all(type(v) is int for v in back[name]), name


def test_every_field_round_trips_through_config_yaml(tmp_path):
    config = awkward_config()
    flat = config.to_flat()
    assert flat["weight_decay"] == 1e-5 and flat["data"] == "1e-3" and flat["out"] == "off"
    assert flat["P_proj_size"] == [64, 128, 256, 256]  # the resolved (padded) list is stored
    config.save(tmp_path / "config.yaml")
    back = load_config_file(tmp_path / "config.yaml")
    assert_same_flat(back, flat)
    assert Config.from_flat(back) == config


def test_every_field_round_trips_through_mlflow_params(tmp_path):
    """A real sqlite MLflow store: what `log_params` writes, read back as `best --out` does."""
    from sepconc.tracking.store import log_params, open_client

    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("numbers"))
    flat = awkward_config().to_flat()
    log_params(client, run.info.run_id, flat)
    params = client.get_run(run.info.run_id).data.params
    assert params["weight_decay"] == "1.0e-05" and params["data"] == "'1e-3'"
    back = {k: load_yaml(v) for k, v in params.items()}
    assert_same_flat(back, flat)
    exported = tmp_path / "best.yaml"  # `best --out` writes the params with `dump_yaml`
    exported.write_text("# best trial\n" + dump_yaml(back))
    assert_same_flat(load_config_file(exported), flat)


def test_params_logged_before_the_fix_still_read_as_numbers():
    """Stores written by earlier versions hold `json.dumps` text: `1e-05` is a float now."""
    assert load_yaml("1e-05") == 1e-5
    assert Config.from_flat({"weight_decay": load_yaml("1e-05")}).optim.weight_decay == 1e-5


def test_train_config_file_with_scientific_notation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5E-4\npars_beta: .5e-3\nmomentum: +.9\n")
    optim = Config.from_flat(load_config_file(path)).optim
    assert (optim.lr, optim.weight_decay, optim.pars_beta, optim.momentum) == (
        1e-3,
        5e-4,
        5e-4,
        0.9,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("non_linearity: off", "non_linearity: got the boolean false: YAML reads unquoted "
      "off/no/false as booleans; quote it: non_linearity: 'off'"),
     ("backend: yes", "backend: got the boolean true: YAML reads unquoted on/yes/true as "
      "booleans; quote it: backend: 'on'"),
     ("dataset: 10", "dataset: got the number 10: YAML reads an unquoted 10 as a number, not "
      "text; quote it: dataset: '10'"),
     ("experiment: 1e5", "experiment: got the number 100000.0: YAML reads an unquoted"),
     ("data: 2024-01-01", "data: got the date 2024-01-01: YAML reads an unquoted 2024-01-01"),
     ("epochs: 1e3", "epochs must be int, got 1000.0 (float); write it without a dot or "
      "exponent: epochs: 1000")],
)  # fmt: skip
def test_yaml_implicit_types_name_the_rule(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(UserError) as info:
        Config.from_flat(load_config_file(path), where=str(path))
    assert str(info.value) == f"{path}: {expected}" or expected in str(info.value)


def test_quoted_values_are_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("experiment: '1e5'\ndata: '10'\nnon_linearity: 'relu'\n")
    config = Config.from_flat(load_config_file(path))
    assert (config.tracking.experiment, config.data.data) == ("1e5", "10")


def test_every_field_is_covered():
    covered = {f.name for cls in ("model", "data", "optim", "run", "tracking")
               for f in dataclasses.fields(getattr(Config(), cls))}  # fmt: skip
    assert covered == set(FIELD_SECTION) == set(awkward_config().to_flat())
    assert Path(__file__).name.startswith("test_config")
