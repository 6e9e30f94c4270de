"""The synthetic data set generator, writing A2D2's own on-disk layout."""
