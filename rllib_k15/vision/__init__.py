"""Vision-language policies: problems shown as images (``k15/Rendered*-v0``,
``k15/ImageQA-v0``) answered by a VLM.

- :mod:`rllib_k15.vision.tiny_vlm` registers ``tiny-random-llava``, a seeded random LLaVA
  (CLIP vision tower, projector, 2-layer Llama with the SmolLM2 tokenizer) for tests;
  any local Hugging Face VLM directory works for real runs.
- :mod:`rllib_k15.vision.sequences` turns (instruction, image) into the model's prompt with
  its processor and computes teacher-forced response log-probs with the image in the
  forward, so the learner's gradients reach the projector and, when trainable, the vision
  tower.
"""
