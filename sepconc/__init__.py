"""sepconc: train and sweep the networks of "Separation and Concentration in Deep Networks".

Public API for researchers:
- `build_model(config)`: the network of a `Config` (or `ModelConfig` + shape + classes);
- `PhaseScattering2D(shape, L=8)`: the rectified complex wavelet frame, `(B, C, n, n)`
  -> `(B, C (1 + 4L), n // 2, n // 2)`;
- `parseval_step(weight, beta)`: one tight-frame update, in place;
- `train(config, hooks)`: one training run (single process, local DDP, or a Ray worker),
  logged to MLflow as `config.tracking` says (as `launch.py train` logs it).
"""

from sepconc.config import Config, DataConfig, ModelConfig, OptimConfig, RunConfig


def __getattr__(name: str):
    # Heavy pieces import lazily so `import sepconc` stays quick and torch-free: a sweep
    # trial's process imports `sepconc.sweep.trial` before it starts its workers.
    if name == "parseval_step":
        from sepconc.frames import parseval_step

        return parseval_step
    if name in ("build_model", "plan_model"):
        from sepconc import model

        return getattr(model, name)
    if name == "PhaseScattering2D":
        from sepconc.scattering import PhaseScattering2D

        return PhaseScattering2D
    if name in ("train", "TrainResult", "EpochReport"):
        from sepconc import trainer

        return getattr(trainer, name)
    raise AttributeError(name)


__all__ = ["Config", "DataConfig", "ModelConfig", "OptimConfig", "PhaseScattering2D",
           "RunConfig", "build_model", "parseval_step", "plan_model", "train"]  # fmt: skip
