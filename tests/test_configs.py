"""Config files: the generated ACRE config's per-variant `max_length` holds every example of every split."""
import pytest

from lrr_jax.data import encoding
from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import acre

from configs import acre as acre_config

SPLITS = ("iid", "compositional", "systematic")
VARIANTS = ("direct", "no_surrogate", "full")


@pytest.fixture(scope="module")
def problems() -> dict[tuple[str, bool], list[acre.AcreProblem]]:
  return {(split, train): acre.generate(acre.AcreConfig(split=split), 40, seed=7, train=train)
          for split in SPLITS for train in (True, False)}


@pytest.fixture(scope="module")
def tokenizer(problems) -> tokenizer_lib.Tokenizer:
  """A BPE trained on 40 problems merges less than the runs' (4,096): its token counts are an upper bound."""
  train_examples = [acre.rationale_example(p, q, v) for p in problems[("iid", True)] for q in range(4)
                    for v in rationales.VARIANTS]
  return tokenizer_lib.train_bpe([s.text for e in train_examples for s in e.question + e.response], 512)


@pytest.mark.parametrize("variant", VARIANTS)
def test_acre_max_length_holds_every_split(problems, tokenizer, variant):
  examples = [acre.rationale_example(p, q, variant) for ps in problems.values() for p in ps for q in range(4)]
  max_length = acre_config.get_config(f"variant={variant}").data.max_length
  lengths = [int(encoding.encode_example(e, tokenizer, max_length)["segment_ids"].sum()) for e in examples]
  assert max(lengths) <= max_length
  assert max_length < 4 * max(lengths), "max_length pads every sequence far beyond its need"


def test_the_sweeps_add_the_encoder_ablations_to_the_rationale_ablation(tmp_path):
  """configs/cater.py and configs/released.py: the rationale variants, then on the full rationale one stream
  only and each look-back window tau; every run's config builds the model those overrides describe."""
  from launch import sweep  # pylint: disable=g-import-not-at-top
  from lrr_jax.models import lrr  # pylint: disable=g-import-not-at-top
  from configs import cater as cater_config  # pylint: disable=g-import-not-at-top
  from configs import released as released_config  # pylint: disable=g-import-not-at-top
  cater_runs = sweep.expand("configs/cater.py", tmp_path)
  assert [r.name for r in cater_runs][8:] == [
      "variant=full,camera=static,model.video.two_stream=False",
      "variant=full,camera=static,model.video.temporal_window=2",
      "variant=full,camera=static,model.video.temporal_window=4"]
  released_runs = sweep.expand("configs/released.py:mixture=cater+star", tmp_path)
  assert [(r.config, r.overrides) for r in released_runs] == [
      *((f"configs/released.py:mixture=cater+star,variant={v}", {})
        for v in ("direct", "no_surrogate", "no_tags", "full")),
      ("configs/released.py:mixture=cater+star,variant=full", {"model.video.two_stream": False}),
      ("configs/released.py:mixture=cater+star,variant=full", {"model.video.temporal_window": 4}),
      ("configs/released.py:mixture=cater+star,variant=full", {"model.video.temporal_window": 8})]
  modules = {"configs/cater.py": cater_config, "configs/released.py": released_config}
  videos = []
  for run in cater_runs[8:] + released_runs[4:]:
    path, _, arg = run.config.partition(":")
    config = modules[path].get_config(arg)
    for key, value in run.overrides.items():
      config.model.video[key.rsplit(".", 1)[1]] = value
    videos.append(lrr.config_from_dict(config.model.to_dict(), vocab_size=512, max_positions=256).video)
  assert [(v.two_stream, v.temporal_window) for v in videos] == [(False, 0), (True, 2), (True, 4)] + [
      (False, 0), (True, 4), (True, 8)]


def test_the_model_field_tables_are_the_dataclasses_fields():
  """configs/common.py lists the model's fields (config files import no library code): the same names and the
  types their command-line values parse to."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  import typing  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from lrr_jax.models import decoder, resnet, video_encoder  # pylint: disable=g-import-not-at-top

  def parsed_type(annotation):
    if isinstance(annotation, types.UnionType):
      annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation

  for table, config_class in ((common.DECODER_FIELDS, decoder.DecoderConfig),
                              (common.VIDEO_FIELDS, video_encoder.VideoEncoderConfig),
                              (common.BACKBONE_FIELDS, resnet.ResNetConfig)):
    hints = typing.get_type_hints(config_class)
    fields = {f.name: parsed_type(hints[f.name]) for f in dataclasses.fields(config_class)
              if f.name not in ("static_backbone", "motion_backbone")}
    assert table == fields, config_class.__name__


@pytest.mark.parametrize("name", ["cater", "acre", "released"])
def test_every_config_of_every_sweep_is_typed_and_valid(name, tmp_path):
  """Each config a sweep starts (config_arg and overrides; the released recipe on every dataset and both LMs,
  given its two ResNet checkpoints) types into a RunConfig and passes the checks: no file sets a key the typed
  config lacks."""
  import importlib  # pylint: disable=g-import-not-at-top
  from lrr_jax import config_checks, run_config  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"configs.{name}")
  runs = []
  args = ([f"dataset={d},lm={lm}" for d in module.DATASETS for lm in ("opt-125m", "opt-1.3b")]
          if name == "released" else [None])
  for arg in args:
    module.sweep(lambda config_arg=None, **overrides: runs.append((config_arg, overrides)), arg)
  for config_arg, overrides in runs:
    config = module.get_config(config_arg)
    for key, value in overrides.items():
      *sections, leaf = key.split(".")
      section = config
      for part in sections:
        section = section[part]
      section[leaf] = value
    if name == "released":
      for key in ("static_init_from", "motion_init_from"):
        (tmp_path / key).write_bytes(b"")
        config.model.video[key] = str(tmp_path / key)
    typed = run_config.RunConfig.from_config_dict(config)
    assert config_checks.validate(typed, num_devices=1) == [], (config_arg, overrides)


@pytest.mark.parametrize("lm, remat", [("opt-125m", "minimal"), ("opt-1.3b", "full")])
def test_the_released_recipe_sets_its_memory_settings_per_lm_size(lm, remat):
  """Ours, not the papers': bfloat16 compute, scanned layers, remat, 256-position loss chunks, and the fewest
  micro-batches that fit (grad_accum_steps=0) whatever the pod."""
  from configs import released  # pylint: disable=g-import-not-at-top
  config = released.get_config(f"lm={lm}")
  model = config.model
  assert (model.dtype, model.scan_layers, model.remat_policy, model.loss_chunk_size) == ("bfloat16", True, remat, 256)
  assert (config.grad_accum_steps, config.device_memory_gib) == (0, 0.0)
