"""Batches -> updates: the train step, and the loop that runs it."""
