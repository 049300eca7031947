"""Flax Linen modules: ResNet grid features, the two-stream video encoder, the OPT decoder, the LRR model."""
