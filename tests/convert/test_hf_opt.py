"""Loading local Hugging Face OPT checkpoints: every layout we read, and clear errors for bad ones."""
import dataclasses
import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from lrr_jax.convert import hf_opt
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.models import decoder as decoder_lib
from tests.conftest import save_tiny_hf_opt


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = tmp_path_factory.mktemp("opt")
  return directory, save_tiny_hf_opt(directory, do_layer_norm_before=False, word_embed_proj_dim=16)


def assert_same_params(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x, np.float32), y, atol=1e-6), a, b)


def test_config_is_read_from_config_json(checkpoint):
  directory, torch_model = checkpoint
  config = hf_opt.read_config(directory, cross_attention_layers=(1,))
  hf = torch_model.config
  assert (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads, config.ffn_dim,
          config.max_positions, config.word_embed_proj_dim) == (
              hf.vocab_size, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.ffn_dim,
              hf.max_position_embeddings, hf.word_embed_proj_dim)
  assert config.layer_norm_before is False and config.cross_attention_layers == (1,)


def test_pytorch_bin_and_sharded_safetensors_give_the_same_params(checkpoint, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  directory, torch_model = checkpoint
  _, reference = hf_opt.load_hf_opt(directory)
  as_bin = tmp_path / "bin"
  as_bin.mkdir()
  shutil.copy(directory / "config.json", as_bin)
  torch.save(torch_model.state_dict(), as_bin / "pytorch_model.bin")
  assert_same_params(hf_opt.load_hf_opt(as_bin)[1], reference)

  sharded = tmp_path / "sharded"
  torch_model.save_pretrained(sharded, max_shard_size="20KB")
  assert (sharded / "model.safetensors.index.json").is_file()
  assert_same_params(hf_opt.load_hf_opt(sharded)[1], reference)


def test_bfloat16_safetensors_are_read(checkpoint, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  bf16_model = transformers.OPTForCausalLM.from_pretrained(checkpoint[0], dtype=torch.bfloat16)
  bf16_model.save_pretrained(tmp_path)
  _, params = hf_opt.load_hf_opt(tmp_path)
  expected = bf16_model.model.decoder.embed_tokens.weight.detach().float().numpy()
  np.testing.assert_array_equal(params["embed_tokens"]["embedding"], expected)


def test_a_scanned_decoder_gets_its_layers_stacked(checkpoint):
  directory, _ = checkpoint
  _, unrolled = hf_opt.load_hf_opt(directory)
  config, stacked = hf_opt.load_hf_opt(directory, scan_layers=True)
  assert stacked["layers"]["layers_0"]["mlp"]["fc1"]["kernel"].shape[0] == config.num_layers
  assert_same_params(decoder_lib.unstack_layers(stacked, config), unrolled)
  model = decoder_lib.Decoder(config)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *[jnp.zeros((1, 4), jnp.int32)] * 3)
  assert jax.tree.structure(nn.unbox(abstract)["params"]) == jax.tree.structure(stacked)


def test_params_load_in_the_configured_param_dtype(checkpoint):
  _, params = hf_opt.load_hf_opt(checkpoint[0], param_dtype="bfloat16")
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))


def test_missing_directory_or_weights(checkpoint, tmp_path):
  with pytest.raises(hf_opt.WeightsFileError, match="No config.json"):
    hf_opt.load_hf_opt(tmp_path / "nowhere")
  shutil.copy(checkpoint[0] / "config.json", tmp_path)
  with pytest.raises(hf_opt.WeightsFileError, match="No weights in"):
    hf_opt.load_hf_opt(tmp_path)


# (id, config.json's bytes or a function of the good config, what the message must say besides the file)
BAD_CONFIGS = [
    ("a_json_list", b'[{"model_type": "opt"}]', "holds a JSON list; expected a JSON object"),
    ("not_utf8", b'{"model_type": "opt\xff"}', "is not valid JSON"),
    ("malformed_json", b'{"model_type": "opt",', "is not valid JSON"),
    ("missing_hidden_size", lambda c: {k: v for k, v in c.items() if k != "hidden_size"}, "lacks hidden_size"),
    ("missing_model_type", lambda c: {k: v for k, v in c.items() if k != "model_type"}, "model_type=None"),
    ("hidden_size_a_string", lambda c: dict(c, hidden_size="32"), "hidden_size is '32'; expected a positive"),
    ("num_layers_zero", lambda c: dict(c, num_hidden_layers=0), "num_hidden_layers is 0; expected a positive"),
    ("flag_an_integer", lambda c: dict(c, do_layer_norm_before=1), "do_layer_norm_before is 1; expected true"),
    ("dropout_negative", lambda c: dict(c, dropout=-0.5), "dropout is -0.5; expected a number >= 0"),
    ("unknown_activation", lambda c: dict(c, activation_function="swish"), "activation_function: Unknown"),
    ("heads_not_dividing", lambda c: dict(c, num_attention_heads=5), "hidden_size=32 is not divisible"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_is_refused_naming_the_file_and_the_key(checkpoint, tmp_path, content, message):
  good = json.loads((checkpoint[0] / "config.json").read_text())
  config_file = tmp_path / "config.json"
  config_file.write_bytes(content if isinstance(content, bytes) else json.dumps(content(good)).encode())
  with pytest.raises(hf_opt.WeightsFileError, match=message) as error:
    hf_opt.read_config(tmp_path)
  assert str(config_file) in str(error.value)


def test_a_config_without_optional_keys_gets_opt_defaults(checkpoint, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  good = json.loads((checkpoint[0] / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({k: good[k] for k in ("model_type", *hf_opt.REQUIRED_FIELDS)}))
  ours, theirs = hf_opt.read_config(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
  assert {o: getattr(ours, o) for o in hf_opt.CONFIG_FIELDS if o != "word_embed_proj_dim"} == {
      o: getattr(theirs, t) for o, t in hf_opt.CONFIG_FIELDS.items() if o != "word_embed_proj_dim"}
  assert ours.embed_dim == theirs.word_embed_proj_dim


def test_non_opt_config(checkpoint, tmp_path):
  shutil.copytree(checkpoint[0], tmp_path / "gpt2")
  config = json.loads((tmp_path / "gpt2" / "config.json").read_text())
  (tmp_path / "gpt2" / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
  with pytest.raises(hf_opt.WeightsFileError, match="model_type='gpt2'"):
    hf_opt.load_hf_opt(tmp_path / "gpt2")


def test_weights_that_disagree_with_config_json(checkpoint, tmp_path):
  shutil.copytree(checkpoint[0], tmp_path / "bad")
  config = json.loads((tmp_path / "bad" / "config.json").read_text())
  (tmp_path / "bad" / "config.json").write_text(json.dumps(dict(config, ffn_dim=64)))
  with pytest.raises(hf_opt.WeightsFileError, match=r"layers.0.fc1.weight has shape \(48, 32\).*\(64, 32\)"):
    hf_opt.load_hf_opt(tmp_path / "bad")


def test_truncated_safetensors_names_the_file(checkpoint, tmp_path):
  shutil.copytree(checkpoint[0], tmp_path / "cut")
  weights = tmp_path / "cut" / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:-100])
  with pytest.raises(hf_opt.WeightsFileError, match="model.safetensors is truncated"):
    hf_opt.load_hf_opt(tmp_path / "cut")


@pytest.mark.slow  # over 4 s
def test_insert_pretrained_keeps_boxes_and_rejects_other_shapes(checkpoint):
  config, pretrained = hf_opt.load_hf_opt(checkpoint[0])
  tokens = jnp.ones((1, 4), jnp.int32)
  boxed = decoder_lib.Decoder(config).init(jax.random.key(0), tokens, tokens, tokens)["params"]
  merged = hf_opt.insert_pretrained({"decoder": boxed}, pretrained)
  assert isinstance(merged["decoder"]["embed_tokens"]["embedding"], nn.Partitioned)
  assert_same_params(nn.unbox(merged)["decoder"], pretrained)

  wider = decoder_lib.Decoder(decoder_lib.decoder_config("tiny")).init(jax.random.key(0), tokens, tokens,
                                                                        tokens)["params"]
  with pytest.raises(hf_opt.WeightsFileError, match="decoder/embed_tokens/embedding: the checkpoint has shape"):
    hf_opt.insert_pretrained({"decoder": wider}, pretrained)


def test_a_grown_vocabulary_keeps_the_checkpoint_rows_and_fresh_rows_for_added_tokens(checkpoint):
  config, pretrained = hf_opt.load_hf_opt(checkpoint[0])
  grown = dataclasses.replace(config, vocab_size=config.vocab_size + 5)
  tokens = jnp.ones((1, 4), jnp.int32)
  fresh = nn.unbox(decoder_lib.Decoder(grown).init(jax.random.key(0), tokens, tokens, tokens)["params"])
  merged = hf_opt.insert_pretrained({"decoder": fresh}, pretrained)["decoder"]["embed_tokens"]["embedding"]
  np.testing.assert_array_equal(merged[:config.vocab_size], pretrained["embed_tokens"]["embedding"])
  np.testing.assert_array_equal(merged[config.vocab_size:], fresh["embed_tokens"]["embedding"][config.vocab_size:])


def test_a_tokenizer_without_stage_tags_gets_them_appended_as_single_tokens(tmp_path):
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>"], show_progress=False,
                                           initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(["the snitch moves to frame 3 under a cone"] * 4, trainer)  # as GPT-2's BPE: no tags
  bpe.save(str(tmp_path / "tokenizer.json"))
  first, second = tokenizer_lib.load(tmp_path), tokenizer_lib.load(tmp_path)
  assert first.base_size == bpe.get_vocab_size()
  added = [first.token_id(t) for t in (*tokenizer_lib.TAGS, *tokenizer_lib.FRAME_MARKERS)]
  assert added == list(range(first.base_size, first.vocab_size))  # appended in a fixed order
  assert added == [second.token_id(t) for t in (*tokenizer_lib.TAGS, *tokenizer_lib.FRAME_MARKERS)]
  ids = first.encode("<CAPTION>frame 3: the snitch</CAPTION>")
  assert ids[:2] == [first.token_id("<CAPTION>"), first.token_id("frame 3:")] and ids[-1] == first.token_id(
      "</CAPTION>")
  assert first.frame_markers()[first.token_id("frame 3:")] == 3


def test_tags_after_a_tokenizer_smaller_than_the_checkpoint_get_fresh_rows(checkpoint):
  """An OPT whose tokenizer has fewer tokens (3 here; OPT-125M: 50,265 of 50,272 rows) than its embedding rows:
  the tags appended after the tokenizer's own tokens take fresh rows, not the checkpoint's unused ones."""
  config, pretrained = hf_opt.load_hf_opt(checkpoint[0])
  own = config.vocab_size - 3
  grown = dataclasses.replace(config, vocab_size=own + 5)  # 5 tags appended after the tokenizer's own tokens
  tokens = jnp.ones((1, 4), jnp.int32)
  fresh = nn.unbox(decoder_lib.Decoder(grown).init(jax.random.key(0), tokens, tokens, tokens)["params"])
  merged = hf_opt.insert_pretrained({"decoder": fresh}, pretrained, fresh_rows=range(own, own + 5))
  embedding = merged["decoder"]["embed_tokens"]["embedding"]
  np.testing.assert_array_equal(embedding[:own], pretrained["embed_tokens"]["embedding"][:own])
  np.testing.assert_array_equal(embedding[own:], fresh["embed_tokens"]["embedding"][own:])
