"""Experiments that reproduce the paper's figures and claims (one module per figure family)."""

from .reproduce import PRESETS, reproduce

__all__ = ["PRESETS", "reproduce"]
