"""The core imports neither TensorFlow nor torch."""
import subprocess
import sys


def test_import_loads_no_tensorflow_and_no_torch():
  code = ("import sys, lrr_jax, lrr_jax.models.lrr, lrr_jax.convert.hf_opt; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout
