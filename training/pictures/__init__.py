"""Debug pictures: heatmaps, semantic maps, overlays, track plots."""
