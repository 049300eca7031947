"""Files -> batches: generated worlds, rationales, tokenizer, pipelines."""
