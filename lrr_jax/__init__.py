"""lrr_jax: Look, Remember, Reason (LRR) video LMs with LLaVA-o1 structured reasoning, in JAX/Flax.

Importing the package loads neither TensorFlow nor torch; submodules are imported where used.
"""

__version__ = "0.1.0"
