"""Offline phase: the strategy x budget sweep, selector training and evaluation (later issues)."""
