"""The error raised when a ROS message cannot be converted to or from numpy arrays."""
from __future__ import annotations


class ConversionError(ValueError):
    """A message's layout disagrees with itself or with what the caller asked for.

    The text names the message field (or encoding / point field) and what was expected, so the
    user can tell a misconfigured driver from a wrong topic.
    """
