"""Metrics as pure functions, the evaluation CLIs (chunks, tracking, bags) and the report."""
