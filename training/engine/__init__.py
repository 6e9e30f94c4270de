"""The trainer: configuration, losses, data loading, checkpoints, distributed training."""
