"""The parts of one training run; `sepconc.trainer.train` is their outline.

- `setup`: resolve the run (folder, seed), the pre-flight checks, device, data, model,
  optimizer, batches, and the resume from a checkpoint;
- `epoch`: one epoch's body (train, evaluate, read-outs) and its metrics row;
- `run_files`: what the run folder holds (config.yaml, data.json, metrics.jsonl,
  checkpoints, result.json);
- `hooks`: what an epoch hook receives (`EpochReport`), the run's `TrainResult`, and
  telling hooks and the tracker about each epoch (replayed ones included).
"""
