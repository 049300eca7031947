"""Readers of third-party checkpoints (local files only)."""
