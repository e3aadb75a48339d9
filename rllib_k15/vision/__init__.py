"""Vision-language policies: problems shown as images (``k15/Rendered*-v0``,
``k15/ImageQA-v0``) answered by a VLM.

- :mod:`rllib_k15.vision.tiny_vlm` builds ``tiny-random-idefics3``, a seeded random
  Idefics3 (SmolVLM's architecture: vision tower, pixel-shuffle connector, 2-layer Llama with
  the SmolLM2 tokenizer) for tests; any local Hugging Face VLM directory vLLM supports works
  for real runs.
- :mod:`rllib_k15.vision.sequences` turns (instruction, image) into the model's prompt with
  its processor and computes teacher-forced response log-probs with the image in the
  forward, so the learner's gradients reach the connector and, when trainable, the vision
  tower. The rollout side is :mod:`rllib_k15.rollout.prompts`; docs/vision.md has the flow.
"""
