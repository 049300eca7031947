"""`lrr_jax.config_checks`: bad values are named with their key before a run starts, the batch must split over
processes, data-parallel devices and micro-batches, and resuming refuses a config that changes the arithmetic."""
import pathlib

from absl import flags
from ml_collections import config_flags
import pytest

from configs import acre
from configs import cater
from configs import released
from lrr_jax import config_checks
from lrr_jax import run_config
from lrr_jax.train import trainer
from tests.conftest import save_tiny_hf_opt


def cater_config(**values):
  """The CATER demo config with dotted keys set: cater_config(**{"optimizer.lr": 0.1})."""
  config = cater.get_config()
  for key, value in values.items():
    *sections, name = key.split(".")
    section = config
    for part in sections:
      section = section[part]
    section[name] = value
  return config


@pytest.mark.parametrize("config", [
    cater.get_config(), cater.get_config("variant=direct,camera=moving"), acre.get_config("split=systematic"),
    released.get_config("dataset=something_else,lm=opt-125m"), released.get_config("dataset=star,lm=opt-1.3b"),
    released.get_config("mixture=cater+something_else:2+acre,split=iid"),
], ids=["cater", "cater_direct", "acre", "released_125m", "released_1.3b", "released_mixture"])
@pytest.mark.parametrize("num_devices", [1, 8])
def test_the_shipped_configs_are_valid(config, num_devices, tmp_path):
  if config.model.size != "tiny":  # the released recipe's BatchNorm ResNets start from checkpoints
    for name in ("static_init_from", "motion_init_from"):
      (tmp_path / name).write_bytes(b"")
      config.model.video[name] = str(tmp_path / name)
  assert config_checks.validate(config, num_devices) == []


@pytest.mark.parametrize("key, value, error", [
    ("num_steps", -5, "config.num_steps=-5 must be > 0."),
    ("batch_size", 0, "config.batch_size=0 must be > 0."),
    ("optimizer.lr", -0.01, "config.optimizer.lr=-0.01 must be > 0."),
    ("optimizer.lr", float("nan"), "config.optimizer.lr=nan must be > 0."),
    ("optimizer.warmup_steps", -1, "config.optimizer.warmup_steps=-1 must be >= 0."),
    ("optimizer.clip_norm", 0.0, "config.optimizer.clip_norm=0.0 must be > 0."),
    ("optimizer.b2", 1.0, "config.optimizer.b2=1.0 must be in [0, 1)."),
    ("optimizer.final_fraction", 1.5, "config.optimizer.final_fraction=1.5 must be in [0, 1]."),
    ("data.surrogate_prompt_prob", 1.3, "config.data.surrogate_prompt_prob=1.3 must be in [0, 1]."),
    ("data.world_seed", -2, "config.data.world_seed=-2 must be an integer >= -1 (-1: seed)."),
    ("grad_accum_steps", -1, "config.grad_accum_steps=-1 must be >= 0."),  # 0: auto
    ("device_memory_gib", -1.0, "config.device_memory_gib=-1.0 must be >= 0."),
    ("log_every", 0, "config.log_every=0 must be > 0."),
    ("eval.batch_size", 0, "config.eval.batch_size=0 must be > 0."),
    ("eval.every", -1, "config.eval.every=-1 must be >= 0."),
    ("data.max_length", 0, "config.data.max_length=0 must be > 0."),
    ("data.num_train", 0, "config.data.num_train=0 must be > 0."),
    ("world.resolution", 0, "config.world.resolution=0 must be > 0."),
    ("checkpoint.every", -1, "config.checkpoint.every=-1 must be >= 0."),
    ("checkpoint.keep", 0, "config.checkpoint.keep=0 must be > 0."),
    ("data.read_threads", 0, "config.data.read_threads=0 must be > 0."),
    ("data.prefetch_buffer", -1, "config.data.prefetch_buffer=-1 must be >= 0."),
])
def test_a_bad_value_is_the_one_error_named(key, value, error):
  assert config_checks.validate(cater_config(**{key: value}), num_devices=1) == [error]


def test_every_error_is_listed_at_once():
  config = cater_config(**{"optimizer.lr": -0.01, "num_steps": -5})
  with pytest.raises(config_checks.ConfigError) as raised:
    config_checks.check(config, num_devices=1)
  assert "config.num_steps=-5" in str(raised.value) and "config.optimizer.lr=-0.01" in str(raised.value)


def test_the_batch_splits_over_the_data_parallel_devices():
  assert config_checks.validate(cater_config(batch_size=6), num_devices=4) == [
      "config.batch_size=6 does not divide over the 4 data-parallel devices (mesh.data=4, mesh.fsdp=1)."]
  fsdp = cater_config(batch_size=6, **{"mesh.data": 2, "mesh.fsdp": 2})
  assert config_checks.validate(fsdp, num_devices=4) == [
      "config.batch_size=6 does not divide over the 4 data-parallel devices (mesh.data=2, mesh.fsdp=2)."]
  tensor = cater_config(batch_size=6, **{"mesh.data": -1, "mesh.tensor": 4})  # the tensor axis holds whole rows
  assert config_checks.validate(tensor, num_devices=4) == []
  assert config_checks.validate(cater_config(batch_size=6), num_devices=4, num_processes=4)[0] == (
      "config.batch_size=6 (the global batch) does not divide over the 4 processes.")
  assert config_checks.validate(cater_config(batch_size=8, grad_accum_steps=3), num_devices=1) == [
      "config.grad_accum_steps=3 does not divide config.batch_size=8 into equal micro-batches."]
  assert config_checks.validate(cater_config(batch_size=8, grad_accum_steps=0), num_devices=1) == []  # 0: auto


def test_a_mesh_that_does_not_fit_the_devices_is_named():
  errors = config_checks.validate(cater_config(**{"mesh.data": 3}), num_devices=4)
  assert len(errors) == 1 and errors[0].startswith("config.mesh: Mesh {'data': 3, 'fsdp': 1, 'tensor': 1} has 3")


def test_the_evaluation_budget_must_fit_the_positions(tmp_path):
  config = cater_config(**{"model.decoder.max_positions": 300})
  assert config_checks.validate(config, num_devices=1) == [  # 192 + 190 tokens
      "config.data.max_length + config.eval.max_new_tokens = 382 exceeds the 300 positions of the model "
      "(config.model.decoder.max_positions, else max(256, this sum))."]
  save_tiny_hf_opt(tmp_path, max_position_embeddings=40)
  pretrained = cater_config(**{"model.init_from": str(tmp_path), "data.max_length": 32,
                               "eval.max_new_tokens": 16})
  assert config_checks.validate(pretrained, num_devices=1) == [
      "config.data.max_length + config.eval.max_new_tokens = 48 exceeds the 40 positions of the OPT at "
      "config.model.init_from."]
  missing = cater_config(**{"model.init_from": str(tmp_path / "nowhere")})
  assert "nowhere" in config_checks.validate(missing, num_devices=1)[0]


# Resuming.

def test_free_keys_name_keys_of_the_config():
  keys = config_checks.flatten(cater.get_config().to_dict())
  for free in config_checks.FREE_ON_RESUME:
    assert any(config_checks.is_free(key) and (key == free or key.startswith(free + ".")) for key in keys), free


def test_changes_that_alter_the_arithmetic_are_refused():
  old = cater.get_config().to_dict()
  free = cater_config(**{"eval.every": 7, "checkpoint.keep": 5, "mesh.fsdp": 2, "model.decoder.remat_policy": "full",
                         "search.num_candidates": 2, "eval.max_new_tokens": 64}).to_dict()
  assert config_checks.resume_changes(old, free) == {  # positions max(256, 192 + 190) -> max(256, 192 + 64)
      "eval.max_new_tokens": (190, 64)}
  old["eval"]["max_new_tokens"] = 40  # 256 positions: the budget may change within them
  assert config_checks.resume_changes(old, free) == {}
  assert set(config_checks.config_changes(old, free)) == {
      "eval.every", "checkpoint.keep", "mesh.fsdp", "model.decoder.remat_policy", "search.num_candidates",
      "eval.max_new_tokens"}
  new = cater_config(**{"optimizer.lr": 0.01, "num_steps": 2000, "seed": 1, "data.variant": "direct"}).to_dict()
  assert config_checks.resume_changes(cater.get_config().to_dict(), new) == {
      "data.variant": ("full", "direct"), "num_steps": (1800, 2000), "optimizer.lr": (0.001, 0.01),
      "optimizer.total_steps": (1800, 2000), "seed": (0, 1),
      "data.world_seed": (0, 1)}  # world_seed -1: the world is the seed's, so it changes too


def test_an_absent_key_equals_its_preset_none():
  old = cater.get_config().to_dict()
  del old["model"]["decoder"]["remat_policy"], old["model"]["video"]["dtype"], old["resume_with_changes"]
  assert config_checks.config_changes(old, cater.get_config().to_dict()) == {}  # absent: the default, False
  new = cater_config(**{"model.video.dtype": "bfloat16"}).to_dict()
  assert config_checks.resume_changes(old, new) == {"model.video.dtype": ("<absent>", "bfloat16")}
  del old["data"]["surrogate_prompt_prob"]  # a run from before surrogate prompting ran without it
  assert config_checks.resume_changes(old, cater.get_config().to_dict()) == {}
  prompted = cater_config(**{"data.surrogate_prompt_prob": 0.3}).to_dict()
  assert config_checks.resume_changes(old, prompted) == {"data.surrogate_prompt_prob": ("<absent>", 0.3)}


def test_a_run_from_before_world_seed_resumes_with_its_own_world_given_explicitly():
  """A run written before data.world_seed (its world seeded by config.seed) resumes with the key at its default
  or set to that seed; another world, or the same world with another seed, is refused."""
  old = cater.get_config().to_dict()
  del old["data"]["world_seed"]
  for world_seed in (-1, 0):
    assert config_checks.config_changes(old, cater_config(**{"data.world_seed": world_seed}).to_dict()) == {}
    assert config_checks.check_resume(cater_config(**{"data.world_seed": world_seed}), old, 1400,
                                      pathlib.Path("/runs/a")) == {}
  assert config_checks.resume_changes(old, cater_config(**{"data.world_seed": 3}).to_dict()) == {
      "data.world_seed": (0, 3)}
  other_seed = cater_config(**{"seed": 1, "data.world_seed": 0}).to_dict()
  assert config_checks.resume_changes(old, other_seed) == {"seed": (0, 1)}  # the same world, another run


def test_check_resume_refuses_unless_told_to_resume_with_changes():
  old, where = cater.get_config().to_dict(), pathlib.Path("/runs/a")
  new = cater_config(**{"optimizer.lr": 0.01, "eval.every": 7})
  assert config_checks.check_resume(new, old, None, where) == {  # nothing to resume: a fresh start
      "optimizer.lr": (0.001, 0.01), "eval.every": (600, 7)}
  with pytest.raises(config_checks.ConfigError, match=r"/runs/a has a checkpoint at step 400 .*"
                     r"Changed: config\.optimizer\.lr: 0\.001 -> 0\.01\. Set them back"):
    config_checks.check_resume(new, old, 400, where)
  with pytest.raises(config_checks.ConfigError, match="no run.json saying which config wrote it"):
    config_checks.check_resume(new, None, 400, where)
  new.resume_with_changes = True
  assert config_checks.check_resume(new, old, 400, where) == {
      "optimizer.lr": (0.001, 0.01), "eval.every": (600, 7), "resume_with_changes": (False, True)}


def test_bad_mixture_entries_are_named_with_their_key():
  config = released.get_config("mixture=cater+star")
  config.data.mixture = (("cater", "nope", 1.0), ("stir", "default", 1.0), ("star", "default", 0.0),
                         ("something_else", "boxes1", 1.0), ("star", "default", 2.0), ("acre",))
  assert config_checks.validate(config, 1) == [
      "config.data.mixture[0]: unknown builder config 'nope' of cater; expected one of ['default'].",
      "config.data.mixture[1]: unknown dataset 'stir'; expected one of ['generated_cater', 'generated_acre', "
      "'cater', 'acre', 'star', 'something_else'].",
      "config.data.mixture[2]: the weight 0.0 of star/default must be > 0.",
      "config.data.mixture[3]: Unknown Something-Else builder config 'boxes1'; expected default, boxes or "
      "boxes<N> (N bins per side, 2..1000).",
      "config.data.mixture[4]: star/default is in the mixture twice.",
      "config.data.mixture[5]=('acre',) must be a (dataset, builder config, weight) triple."]
  mixed = cater_config(**{"data.mixture": (("generated_cater", "tiny", 1.0), ("cater", "default", 1.0))})
  assert "mixes generated and released datasets" in config_checks.validate(mixed, 1)[0]
  with pytest.raises(ValueError, match="Unknown dataset 'stir' in mixture='cater\\+stir'"):
    released.get_config("mixture=cater+stir")


def test_a_mixture_from_json_resumes_as_the_same_config():
  """run.json holds the mixture's entries as lists: that is no change of the tuples the config file gives."""
  config = released.get_config("mixture=cater+something_else:2").to_dict()
  as_json = {**config, "data": {**config["data"], "mixture": [list(e) for e in config["data"]["mixture"]]}}
  assert config_checks.resume_changes(as_json, config) == {}
  changed = {**config, "data": {**config["data"], "mixture": (("cater", "default", 1.0),)}}
  assert list(config_checks.resume_changes(as_json, changed)) == ["data.mixture"]


# Unknown keys and types.

TYPOS = """
from configs import cater


def get_config(arg=None):
  config = cater.get_config(arg)
  config.data.surogate_prompt_prob = 0.5
  config.optimizer.learning_rate = 0.1
  config.eval.evry = 10
  return config
"""


def test_a_config_file_with_misspelt_keys_is_refused_naming_each(tmp_path):
  """Each unknown key of a config file is named in full with the closest known one, all in one error, before
  any work (the typed config is built first: `config_checks.check` of a ConfigDict)."""
  (tmp_path / "typos.py").write_text(TYPOS)
  config = parse_file(tmp_path / "typos.py")
  with pytest.raises(config_checks.ConfigError) as raised:
    run_config.RunConfig.from_config_dict(config)
  message = str(raised.value)
  for line in ("config.data.surogate_prompt_prob is not a config key (did you mean "
               "config.data.surrogate_prompt_prob?)",
               "config.optimizer.learning_rate is not a config key (did you mean config.optimizer.lr?)",
               "config.eval.evry is not a config key (did you mean config.eval.every?)"):
    assert line in message
  assert config_checks.validate(config, num_devices=1) == message.split("\n  ")[1:]


def test_a_misspelt_key_on_the_command_line_is_refused():
  """A new key in a section set from the command line (`--config.eval.evry=3` names an existing key only;
  ml_collections refuses others) and a wrong type reach the typed config as errors too."""
  config = cater_config()
  config.mesh.unlock()["fsdpp"] = 2
  config.world.unlock()["num_object"] = 3
  config.model.video.static_backbone.unlock()["depth"] = 101
  config.num_steps = 10
  config.unlock()["num_step"] = 10
  assert config_checks.validate(config, num_devices=1) == [
      "config.mesh.fsdpp is not a config key (did you mean config.mesh.fsdp?)",
      "config.model.video.static_backbone.depth is not a config key (did you mean "
      "config.model.video.static_backbone.width?)",
      "config.num_step is not a config key (did you mean config.num_steps?)",
      "config.world.num_object is not a config key (did you mean config.world.num_objects?)"]


def test_every_shipped_config_is_typed_with_its_values():
  typed = run_config.RunConfig.from_config_dict(released.get_config("mixture=cater+something_else:2,split=iid"))
  assert isinstance(typed.optimizer, trainer.OptimizerConfig) and typed.optimizer.lr == 1e-4
  assert typed.data.sources["something_else"].eval_split == "validation" and typed.video_shape() == (16, 224)
  assert [s.weight for s in typed.sources()] == [1.0, 2.0]
  assert typed.search.sampling.top_p == 0.9 and typed.search.scorer == "judge"
  demo = run_config.RunConfig.from_config_dict(cater.get_config())
  assert demo.world_seed() == 0 and demo.video_shape() == (demo.world["num_frames"], demo.world["resolution"])
  wrong = cater.get_config().to_dict()  # as run.json holds it (a ConfigDict refuses another type itself)
  wrong["checkpoint"]["keep"] = "two"
  assert config_checks.validate(wrong, 1) == ["config.checkpoint.keep='two' must be of type int."]


def parse_file(path: pathlib.Path):
  """The config `lrr_jax.main` parses from `--config=<path>`."""
  argv = ["main", f"--config={path}"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_an_unknown_key_on_the_command_line_is_named_in_full_with_the_closest(tmp_path):
  argv = ["main", f"--config={pathlib.Path(__file__).parents[1] / 'configs/cater.py'}", "--config.eval.evry=3"]
  with pytest.raises(AttributeError) as raised:
    parse_file_args(argv)
  assert run_config.override_error(argv, raised.value) == (
      "config.eval.evry is not a config key (did you mean config.eval.every?): --config.eval.evry= names no key "
      "of the config file; nothing was run.")


def parse_file_args(argv: list[str]):
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config
