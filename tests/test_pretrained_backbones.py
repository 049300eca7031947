"""A BatchNorm video stream starts from a checkpoint or is declared from scratch: the released recipe (ResNet-101
static, ResNet-18 motion) is refused before any work without `model.video.static_init_from` /
`motion_init_from` unless `model.video.from_scratch=True`, which trains the BatchNorm statistics; the demo's
GroupNorm backbones are untouched (`config_checks.backbone_errors`)."""
from configs import cater
from configs import released
from lrr_jax import config_checks
from lrr_jax import run_config
from tests.test_run_objects import parse


def weights(directory):
  """torchvision's file names, as users have them (validation checks only that they exist)."""
  paths = {"static": directory / "resnet101-cd907fc2.pth", "motion": directory / "resnet18-f37072fd.pth"}
  for path in paths.values():
    path.write_bytes(b"")
  return paths


def recipe(**video):
  config = released.get_config("dataset=star,lm=opt-125m")
  config.model.video.update(video)
  return config


def test_no_static_weights_is_refused_naming_the_key_and_the_fix(tmp_path):
  errors = config_checks.validate(recipe(motion_init_from=str(weights(tmp_path)["motion"])), 1)
  assert len(errors) == 1
  assert errors[0].startswith("config.model.video.static_init_from is not set: the static stream's ResNet-101")
  assert "resnet101-cd907fc2.pth" in errors[0] and "microsoft/resnet-101" in errors[0]
  assert "--config.model.video.from_scratch=True" in errors[0]


def test_no_motion_weights_is_refused_unless_the_encoder_is_one_stream(tmp_path):
  config = recipe(static_init_from=str(weights(tmp_path)["static"]))
  errors = config_checks.validate(config, 1)
  assert len(errors) == 1
  assert errors[0].startswith("config.model.video.motion_init_from is not set: the motion stream's ResNet-18")
  assert "resnet18-f37072fd.pth" in errors[0]
  config.model.video.two_stream = False  # no motion stream built
  assert config_checks.validate(config, 1) == []


def test_both_checkpoints_given_is_accepted_and_a_missing_file_is_named(tmp_path):
  paths = weights(tmp_path)
  assert config_checks.validate(recipe(static_init_from=str(paths["static"]),
                                       motion_init_from=str(paths["motion"])), 1) == []
  errors = config_checks.validate(recipe(static_init_from=str(tmp_path / "absent.pth"),
                                         motion_init_from=str(paths["motion"])), 1)
  assert errors == [f"config.model.video.static_init_from={str(tmp_path / 'absent.pth')!r} does not exist."]


def test_from_scratch_is_accepted_and_trains_the_batch_norm_statistics_of_the_streams_without_weights(tmp_path):
  config = parse("released.py:dataset=star,lm=opt-125m", "--config.model.video.from_scratch=True")
  assert config_checks.validate(config, 1) == []
  video = config.model.architecture().video
  assert video.static_backbone.norm == video.motion_backbone.norm == "batch"
  assert video.static_backbone.train_batch_norm and video.motion_backbone.train_batch_norm
  static = str(weights(tmp_path)["static"])
  config = parse("released.py:dataset=star,lm=opt-125m", "--config.model.video.from_scratch=True",
                 f"--config.model.video.static_init_from={static}")
  video = config.model.architecture().video
  assert not video.static_backbone.train_batch_norm and video.motion_backbone.train_batch_norm  # pretrained: frozen


def test_the_demo_needs_no_weights_and_its_model_and_resumed_runs_are_unchanged():
  """The demo's tiny backbones are GroupNorm (no statistics); the new key is None, so a run.json written before
  it existed resumes without a change."""
  config = cater.get_config()
  assert config_checks.validate(config, 1) == []
  video = run_config.RunConfig.from_config_dict(config).model.architecture().video
  assert (video.static_backbone.norm, video.motion_backbone.norm) == ("group", "group")
  assert not video.static_backbone.train_batch_norm and not video.motion_backbone.train_batch_norm
  before = config.to_dict()
  del before["model"]["video"]["from_scratch"]
  assert config_checks.resume_changes(before, config.to_dict()) == {}
