"""`lrr_jax.run_objects`: every field of the model's dataclasses is reachable from the command line, unknown keys
are named, and `config.search` (with flag overrides) is the search that infer and scaling run."""
import dataclasses
import pathlib

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import pytest

from lrr_jax import run_config
from lrr_jax import run_objects
from lrr_jax.inference import scorers
from lrr_jax.models import decoder
from lrr_jax.models import lrr
from lrr_jax.models import resnet
from lrr_jax.models import video_encoder
from tests.conftest import save_tiny_hf_opt

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"

# A value for every field, each different from the presets', valid together (a new field must be added here).
DECODER = dict(vocab_size=640, hidden_size=48, num_layers=3, num_heads=6, ffn_dim=96, max_positions=300,
               word_embed_proj_dim=24, layer_norm_before=False, remove_final_layer_norm=True, enable_bias=False,
               layer_norm_affine=False, activation="gelu", dropout_rate=0.25, attention_dropout_rate=0.125,
               init_std=0.5, cross_attention_layers=(0, 1, 2), cross_attention_heads=3, cross_attention_ffn_dim=40,
               gate_init=0.5, cross_attention_query_scale=2.0, cross_attention_frames=2, dtype="bfloat16", param_dtype="bfloat16",
               attention="xla", remat_policy="minimal", scan_layers=True)
VIDEO = dict(two_stream=False, motion_downsample=4, width=40, num_layers=3, num_heads=5, mlp_dim=80,
             temporal_window=2, max_frames=12, grid_size=49, position_init_std=0.5, coordinate_channels=False,
             dropout_rate=0.25, dtype="bfloat16", param_dtype="bfloat16", attention="reference", scan_layers=True,
             remat_policy="full")
BACKBONE = dict(stage_sizes=(1, 2, 1), bottleneck=False, width=16, norm="group", num_groups=8, stem_pool=False,
                grid_stage=3, projection_dim=24, dtype="bfloat16", param_dtype="bfloat16", scan_layers=True,
                train_batch_norm=True, remat_policy="minimal")


# The released recipe's grid is conv4_x of a ResNet-101; the tiny preset's two-stage backbones give their last.
TINY_GRIDS = ("--config.model.video.static_backbone.grid_stage=0", "--config.model.video.motion_backbone.grid_stage=0")


def parse(config_file: str, *overrides: str):
  """The config after the command line `--config=<file> <overrides>`, parsed as `lrr_jax.main` parses it."""
  argv = ["main", f"--config={CONFIGS / config_file}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return run_config.RunConfig.from_config_dict(flag_values.config)


def flag(path: str, value) -> str:
  text = str(value) if not isinstance(value, tuple) else f"({','.join(map(str, value))},)"
  return f"--config.model.{path}={text}"


def test_the_value_tables_cover_every_field():
  for table, config_class in ((DECODER, decoder.DecoderConfig), (VIDEO, video_encoder.VideoEncoderConfig),
                              (BACKBONE, resnet.ResNetConfig)):
    names = {f.name for f in dataclasses.fields(config_class)} - {"static_backbone", "motion_backbone"}
    assert set(table) == names, config_class.__name__


@pytest.mark.parametrize("config_file", ["released.py:dataset=star,lm=opt-125m", "cater.py"])
def test_every_model_field_is_set_from_the_command_line(config_file):
  overrides = [flag(f"decoder.{k}", v) for k, v in DECODER.items()]
  overrides += [flag(f"video.{k}", v) for k, v in VIDEO.items()]
  overrides += [flag(f"video.{stream}.{k}", v) for stream in ("static_backbone", "motion_backbone")
                for k, v in BACKBONE.items()]
  config = parse(config_file, *overrides)
  model = lrr.LRRModel(run_objects.model_config(config))
  assert dataclasses.asdict(model.config.decoder) == DECODER
  video = dataclasses.asdict(model.config.video)
  assert video.pop("static_backbone") == BACKBONE and video.pop("motion_backbone") == BACKBONE
  assert video == VIDEO


def test_the_data_section_reaches_the_pipeline_and_the_release_builder():
  config = parse("released.py:dataset=cater,lm=opt-125m", "--config.data.read_threads=3",
                 "--config.data.prefetch_buffer=7", "--config.data.worker_count=5", "--config.data.worker_buffer=2",
                 "--config.data.contrast_jitter=0.1", "--config.data.frame_format=png")
  cfg = run_objects.pipeline_config(config, "tokenizer.json")
  assert (cfg.read_threads, cfg.prefetch_buffer, cfg.worker_count, cfg.worker_buffer) == (3, 7, 5, 2)
  assert (cfg.brightness_jitter, cfg.contrast_jitter, cfg.resolution, cfg.num_frames) == (0.2, 0.1, 224, 16)
  assert run_objects.builder_sizes(config) == dict(resolution=224, frame_format="png", jpeg_quality=90)
  demo = run_objects.pipeline_config(parse("cater.py"), "tokenizer.json")
  assert (demo.read_threads, demo.prefetch_buffer, demo.contrast_jitter) == (2, 4, 0.0)


def test_the_world_seed_seeds_the_generated_world_and_the_run_seed_the_rest():
  """data.world_seed fixes the world (and its held-out set) across run seeds; -1 gives the run's seed."""
  for name in ("cater.py", "acre.py"):
    assert run_objects.builder_sizes(parse(name, "--config.seed=2"))["seed"] == 2
    fixed = parse(name, "--config.seed=2", "--config.data.world_seed=0")
    assert run_objects.builder_sizes(fixed)["seed"] == 0 and run_objects.pipeline_config(fixed, "t.json").seed == 2


def test_the_released_recipe_reads_a_14x14_grid_of_224_pixel_frames():
  """conv4_x of ResNet-101 (stride 16) on 224 px; the motion stream's conv4_x on 112 px, resized to it."""
  video = run_objects.model_config(parse("released.py:dataset=star,lm=opt-125m")).video
  static, motion = video.static_backbone, video.motion_backbone
  assert (224 // static.stride, static.out_channels, video.grid_size) == (14, 1024, 196)
  assert (224 // video.motion_downsample // motion.stride, motion.out_channels) == (7, 256)


def test_unset_fields_are_the_presets():
  config = parse("released.py:dataset=cater,lm=opt-1.3b", "--config.model.decoder.remat_policy=full")
  model_config = run_objects.model_config(config)
  assert model_config.decoder.remat_policy == "full" and model_config.decoder.num_layers == 24
  # BatchNorm ResNet-101 with the recipe's model-wide switches (bf16 compute, scanned stages, full remat)
  assert model_config.video.static_backbone == resnet.resnet_config(
      "resnet101", grid_stage=4, dtype="bfloat16", scan_layers=True, remat_policy="full")
  assert model_config.decoder.cross_attention_layers == tuple(range(1, 24, 2))


def test_model_wide_switches_reach_every_part_and_a_part_key_wins():
  config = parse("cater.py", "--config.model.scan_layers=True", "--config.model.remat_policy=full",
                 "--config.model.dtype=bfloat16", "--config.model.loss_chunk_size=64",
                 "--config.model.video.motion_backbone.dtype=float32")
  model = run_objects.model_config(config)
  parts = (model.decoder, model.video, model.video.static_backbone, model.video.motion_backbone)
  assert all(p.scan_layers and p.remat_policy == "full" and p.param_dtype == "float32" for p in parts)
  assert [p.dtype for p in parts] == ["bfloat16", "bfloat16", "bfloat16", "float32"]
  assert model.loss_chunk_size == 64


def test_unknown_model_keys_are_named():
  with pytest.raises(AttributeError, match="remat_everything"):
    parse("cater.py", "--config.model.decoder.remat_everything=True")
  with pytest.raises(AttributeError, match="remat"):  # folded into remat_policy
    parse("cater.py", "--config.model.decoder.remat=True")


def test_search_section_with_overrides():
  config = parse("cater.py", "--config.search.num_candidates=10", "--config.search.scorer=likelihood")
  search, scorer = run_objects.search_config(config)
  assert (search.strategy, search.num_candidates, search.sampling.temperature) == ("stage_beam", 10, 0.6)
  assert isinstance(scorer, scorers.Likelihood)
  search, scorer = run_objects.search_config(config, strategy="best_of_n", num_candidates=None, scorer="judge")
  assert (search.strategy, search.num_candidates) == ("best_of_n", 10) and isinstance(scorer, scorers.Judge)
  with pytest.raises(ValueError, match="beams"):
    run_objects.search_config(config, beams=2)


def test_the_released_recipe_searches_with_the_release_sampling_and_budgets_that_fit_opt():
  released, demo = parse("released.py:dataset=cater"), parse("cater.py")
  search, _ = run_objects.search_config(released)
  assert (search.num_candidates, search.sampling.temperature, search.sampling.top_p) == (10, 0.6, 0.9)
  # the release's 2,048 new tokens, as many as fit OPT's 2,048 positions after a prompt of data.max_length
  assert search.max_new_tokens == search.max_step_tokens == min(2048, 2048 - released.data.max_length) == 1024
  assert run_objects.search_config(demo)[0].max_new_tokens == 192  # the CPU demo keeps its own


def test_the_oracle_and_release_judge_scorers_by_name():
  config = parse("cater.py")
  _, oracle = run_objects.search_config(config, scorer="oracle")
  reference = "<CAPTION>frame 0: <detect> snitch 1,2.</CAPTION><CONCLUSION>answer 1,2</CONCLUSION>"
  assert isinstance(oracle, scorers.Oracle) and oracle.check(reference, reference) == 3 + 1
  _, judge = run_objects.search_config(config, scorer="release_judge")
  assert type(judge).__name__ == "ReleaseJudge"


def test_a_grown_vocabulary_is_padded_to_divide_over_the_mesh(tmp_path):
  save_tiny_hf_opt(tmp_path / "opt", vocab_size=250, max_position_embeddings=512)
  config = parse("released.py:dataset=cater", f"--config.model.init_from={tmp_path / 'opt'}",
                 "--config.model.size=tiny",  # the tiny preset lays cross-attention over 2 layers
                 *TINY_GRIDS)
  model_config = run_objects.model_config(config, tokenizer_size=260)  # 10 tags added to the OPT's 250
  assert (model_config.decoder.vocab_size, model_config.num_predicted_tokens) == (384, 260)
  assert run_objects.model_config(config, tokenizer_size=200).num_predicted_tokens == 250
  assert run_objects.model_config(parse("cater.py")).num_predicted_tokens == 0  # 512 rows: nothing to pad


@pytest.mark.slow  # over 7 s
def test_padding_rows_are_never_predicted():
  config = lrr.lrr_config("tiny", vocab_size=128)
  tokens = np.arange(6, dtype=np.int32)[None] % 100
  ones, video = np.ones_like(tokens), np.zeros((1, 2, 32, 32, 3), np.uint8)
  args = (tokens, np.arange(6)[None], ones, ones, video)
  variables = lrr.LRRModel(config).init(jax.random.key(0), *args)
  full = lrr.LRRModel(config).apply(variables, *args)
  padded = lrr.LRRModel(dataclasses.replace(config, num_predicted_tokens=100)).apply(variables, *args)
  np.testing.assert_array_equal(padded[..., :100], full[..., :100])
  assert np.all(np.asarray(padded[..., 100:]) == np.finfo(np.float32).min)


COMPILE_TWICE = """
import json, sys
import jax, jax.numpy as jnp
from lrr_jax import run_config
from lrr_jax import run_objects
events = []
jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
run_objects.enable_compilation_cache(sys.argv[1], min_compile_seconds=0.0)
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((32, 16))).block_until_ready()
print(json.dumps({e: events.count(e) for e in ("/jax/compilation_cache/cache_hits",
                                               "/jax/compilation_cache/cache_misses")}))
"""


@pytest.mark.slow  # two processes compile
def test_a_second_process_compiles_from_the_persistent_cache(tmp_path):
  """config.compilation_cache_dir: the first process compiles and stores, an identical second one loads."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).parents[1]
  runs = [json.loads(subprocess.run([sys.executable, "-c", COMPILE_TWICE, str(tmp_path / "xla")], cwd=root,
                                    check=True, capture_output=True, text=True).stdout.splitlines()[-1])
          for _ in range(2)]
  assert runs[0]["/jax/compilation_cache/cache_misses"] > 0 and runs[0]["/jax/compilation_cache/cache_hits"] == 0
  assert runs[1]["/jax/compilation_cache/cache_hits"] == runs[0]["/jax/compilation_cache/cache_misses"]
  assert runs[1]["/jax/compilation_cache/cache_misses"] == 0
  assert list((tmp_path / "xla").iterdir())
  assert run_objects.enable_compilation_cache("") == ""
