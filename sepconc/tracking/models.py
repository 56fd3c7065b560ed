"""Trained models in MLflow: a trial's final checkpoint, and the best trial as an MLflow PyTorch model.

- Every completed trial's run is tagged `sepconc.checkpoint` with the path (or storage
  URI) of its final checkpoint (`final_checkpoint`): the trial folder's newest
  `checkpoints/epoch_NNNN.pt`, kept by `checkpoint.keep`.
- `best NAME --register MODEL` (`log_model` then `register`): the best trial's checkpoint
  is loaded into its network (`model_from_checkpoint`) and logged into the trial's run as
  an MLflow PyTorch model (`model`, with the trial's `config.yaml` and an input example of
  the data set's image shape), then registered under MODEL in the store's registry.
  `mlflow.pytorch.load_model(uri)` gives the network in eval mode: the same logits as the
  checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepconc.errors import UserError

TAG_CHECKPOINT = "sepconc.checkpoint"
TAG_MODEL_URI = "sepconc.model_uri"


def final_checkpoint(trial_folder: Path | None, trial: Any = None) -> str | None:
    """The final checkpoint of a trial: the newest file in `trial_folder/checkpoints`, else
    the path of Tune's latest checkpoint of `trial` (remote storage); None when neither."""
    from sepconc.checkpoint import list_checkpoints

    if trial_folder is not None:
        found = list_checkpoints(Path(trial_folder) / "checkpoints")
        if found:
            return str(found[-1])
    checkpoint = getattr(trial, "checkpoint", None)
    return getattr(checkpoint, "path", None) if checkpoint is not None else None


def model_from_checkpoint(path: str | Path):
    """`(net, config)`: the network a sepconc checkpoint holds, on the CPU, in eval mode.
    Raises `UserError` when the file is missing or not a sepconc checkpoint."""
    from sepconc.checkpoint import load_checkpoint
    from sepconc.config import Config
    from sepconc.model import build_model

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; was the trial's storage moved?")
    state = load_checkpoint(path)
    config = Config.from_flat(state["config"], where=str(path))
    net = build_model(config)
    net.load_state_dict({k.removeprefix("module."): v for k, v in state["model"].items()})
    return net.eval(), config


def log_model(uri: str, run_id: str, checkpoint: str | Path) -> str:
    """Log the checkpoint's network into run `run_id` as MLflow PyTorch model `model`
    (config.yaml as an extra file, an input example of one zero image); returns its URI
    (also tagged `sepconc.model_uri` on the run)."""
    import tempfile

    import mlflow
    import mlflow.pytorch
    import torch

    from sepconc.data import dataset_spec
    from sepconc.yamlio import dump_yaml

    net, config = model_from_checkpoint(checkpoint)
    d = config.data
    shape = dataset_spec(d.dataset, d.nb_classes, d.compact_head)[0]
    example = torch.zeros((1, *shape)).numpy()
    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(dump_yaml(config.to_flat()))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                net, name="model", input_example=example, extra_files=[str(config_file)],
                pip_requirements=[f"torch=={torch.__version__}", "kymatio"],
                metadata={"sepconc_checkpoint": str(checkpoint)},
                serialization_format="pickle")  # fmt: skip
            mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    return info.model_uri


def register(uri: str, model_uri: str, name: str) -> int:
    """Register `model_uri` as a new version of registered model `name`; returns the version."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return int(mlflow.register_model(model_uri, name).version)


def best_model(uri: str, run_id: str, name: str) -> tuple[str, int]:
    """`best --register NAME`: log the run's final checkpoint as a model (once) and register
    it; returns `(model URI, version)`. `UserError` when the run has no checkpoint tag."""
    from sepconc.tracking.store import tracking_client

    tags = tracking_client(uri).get_run(run_id).data.tags
    if TAG_CHECKPOINT not in tags:
        raise UserError(f"run {run_id} has no {TAG_CHECKPOINT} tag (not a completed trial "
                        f"of this version of sepconc); nothing to register")  # fmt: skip
    model_uri = tags.get(TAG_MODEL_URI) or log_model(uri, run_id, tags[TAG_CHECKPOINT])
    return model_uri, register(uri, model_uri, name)
