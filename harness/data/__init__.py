"""Training data: the embedded Shakespeare corpus, users' token files and Hugging Face
streams, tokenised once into a cache and served as deterministic, resumable batches.

Entry point: :func:`ebt_scaling.harness.data.pipeline.open_dataset`. Modules: common
(errors, cache dir, locks, atomic writes), corpus (the Shakespeare archive), tokenizer
(byte-level BPE), token_store (token file + document index), batches (packed and paper
batching over a token store), hf_stream (streaming), pipeline (prepare / open), prefetch
(the trainer's thread that builds batches ahead, pinned on CUDA).
"""
