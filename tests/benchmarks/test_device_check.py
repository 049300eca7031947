"""The device check's Python part on a CPU: its attention figures (the train-step part compiles the LRR step
twice, minutes here; `bash benchmarks/device_check.sh --dry_run` runs it all)."""
import json

from benchmarks import device_check


def test_attention_paths_agree_with_the_reference_and_a_missing_kernel_is_recorded(tmp_path):
  out = tmp_path / "device_check.json"
  result = device_check.main(["--dry_run", "--parts=attention", f"--out={out}"])
  paths = result["attention"]["implementations"]
  assert paths["reference"]["speedup_over_reference"] == 1.0
  assert paths["xla"]["seconds"] > 0 and paths["xla"]["max_abs_diff"] < 0.02  # bf16 outputs
  assert "error" in paths["cudnn"] or paths["cudnn"]["max_abs_diff"] < 0.02  # no cuDNN on a CPU
  assert json.loads(out.read_text())["machine"]["platform"] == "cpu"


def test_the_model_is_bf16_everywhere_but_its_params():
  config = device_check.model_config("tiny", 512, "bfloat16")
  assert {config.decoder.dtype, config.video.dtype, config.video.static_backbone.dtype,
          config.video.motion_backbone.dtype} == {"bfloat16"}
  assert config.decoder.param_dtype == "float32"
