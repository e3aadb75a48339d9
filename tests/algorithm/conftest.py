"""Fixtures for the training-loop tests."""

import pytest


@pytest.fixture(scope="session")
def peaked_tiny_model_dir(tmp_path_factory, tiny_model_dir):
    """tiny-random-llama with its final norm scaled ×10: logits ×10, so each context puts
    most mass on a handful of tokens (like a trained LM) and RL can move it quickly."""
    import torch

    from rllib_k15.models import load_hf_model, load_tokenizer

    out = tmp_path_factory.mktemp("peaked-tiny-llama")
    model = load_hf_model(tiny_model_dir, dtype="float32")
    with torch.no_grad():
        model.model.norm.weight.mul_(10.0)
    model.save_pretrained(out)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out
