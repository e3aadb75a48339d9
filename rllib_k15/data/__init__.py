"""The k1.5 data side (the report's §2.1-2.2): everything that happens to prompts and
problems *before* RL.

- ``curate``: the RL prompt set - deduplication (MinHash), decontamination against
  evaluation sets, the format filter, the easy-to-hack filter and model-based difficulty
  (``k15 curate``).
- ``gen_tests``: test cases for code problems that have solutions but no tests, inputs from
  CYaRon, kept by agreement of the ground-truth solutions (``k15 gen-tests``).
- ``judge``: a chain-of-thought judge for free-form answers, over an OpenAI-compatible
  endpoint or an in-process engine (``verifier="judge"``).
- ``warmup``: the long-CoT SFT warm-up - reasoning-template sampling, rejection sampling,
  SFT (``k15 warmup``).

Torch-free at import time; the commands import engines lazily.
"""
