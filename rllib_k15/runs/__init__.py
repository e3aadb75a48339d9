"""A training run on disk: its experiment file, the trainer loop, checkpoints, export.

- :mod:`~rllib_k15.runs.experiment`: experiment files (YAML/JSON) → a ``K15Config``;
- :mod:`~rllib_k15.runs.trainer`: the ``k15 train`` loop (progress, metrics, curve, preflight);
- :mod:`~rllib_k15.runs.run_files`: the one owner of a run directory's files (metrics.jsonl,
  run.json, …);
- :mod:`~rllib_k15.runs.checkpoints`: crash-safe checkpoints with a ``latest`` pointer;
- :mod:`~rllib_k15.runs.integrity`: manifests, verification and durable writes;
- :mod:`~rllib_k15.runs.export`: a checkpoint → a Hugging Face model directory.
"""
