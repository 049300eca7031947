"""Run as a script (worker processes need a __main__ guard): the pipeline with 2 Grain workers against none."""
import dataclasses, json, sys
from absl import flags
from lrr_jax.data import pipeline, prepare

if __name__ == "__main__":
  flags.FLAGS.mark_as_parsed()
  data_dir = sys.argv[1]
  directory = prepare.prepare("generated_cater", "tiny", data_dir, 400, num_train=64, num_test=8)
  source = prepare.builder_for("generated_cater", "tiny", data_dir, num_train=64, num_test=8).as_data_source("train")
  base = pipeline.PipelineConfig(tokenizer_path=str(directory / "tokenizer.json"), batch_size=8, max_length=320, num_epochs=1)
  single = [b["record_index"].tolist() for b in pipeline.make_dataset([("c", source, 1.0)], base)]
  multi_ds = pipeline.make_dataset([("c", source, 1.0)], dataclasses.replace(base, worker_count=2))
  it = iter(multi_ds)
  first = [next(it)["record_index"].tolist() for _ in range(3)]
  state = it.get_state()
  rest = [b["record_index"].tolist() for b in it]
  it2 = iter(multi_ds); it2.set_state(state)
  rest2 = [b["record_index"].tolist() for b in it2]
  print(json.dumps({"same_order": single == first + rest, "resume_exact": rest == rest2,
                    "covers": sorted(sum(first + rest, [])) == list(range(64))}))
