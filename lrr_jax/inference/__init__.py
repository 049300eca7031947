"""A checkpoint and a prompt -> answers: cached generation."""
