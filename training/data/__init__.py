"""A2D2 reading, label mapping, conversion to NPZ chunks, the dataset, augmentations and targets."""
