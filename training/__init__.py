"""Offline training tools: A2D2 reading, synthetic data, chunks, targets, trainer, metrics."""
