"""Model registry: name resolution, cache location, atomic idempotent preparation, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rllib_k15 import models
from rllib_k15.models import (
    COMPLETE_MARKER,
    MODEL_REGISTRY,
    ModelNotFoundError,
    default_cache_dir,
    is_prepared,
    prepare_model,
    resolve_model,
)


def test_registry_names_and_duplicates_rejected() -> None:
    assert {"smollm2-135m-instruct", "tiny-random-llama"} <= set(MODEL_REGISTRY)
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("tiny-random-llama", "again")(lambda out, cache: None)


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K15_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"  # argument wins
    assert default_cache_dir() == tmp_path / "env"  # then the env var
    monkeypatch.delenv("K15_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "rllib_k15"  # then the default


def test_unknown_name_says_how_to_get_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="k15 model prepare") as err:
        resolve_model("org/not-a-model", tmp_path)
    assert "local Hugging Face model directory" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path)  # a directory, but not a model
    with pytest.raises(ModelNotFoundError, match="registered"):
        prepare_model("no-such-model", tmp_path)


def test_unprepared_registered_name_without_prepare(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="k15 model prepare tiny-random-llama"):
        resolve_model("tiny-random-llama", tmp_path, prepare=False)


def test_materialise_is_atomic_on_failure(tmp_path: Path) -> None:
    def broken(out: Path) -> None:
        (out / "half-written").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        models._materialise(tmp_path / "m", broken)
    left = [p.name for p in tmp_path.iterdir()]
    assert left == [".m.lock"]  # neither the target nor a temp dir is left


def test_concurrent_preparers_build_once(tmp_path: Path) -> None:
    import threading
    import time

    calls = []

    def slow_build(out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)
        (out / "weights").write_text("w")

    threads = [
        threading.Thread(target=models._materialise, args=(tmp_path / "m", slow_build))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (tmp_path / "m" / "weights").read_text() == "w"


def test_materialise_rebuilds_an_unmarked_directory(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale").write_text("from a crashed run")
    calls = []
    models._materialise(target, lambda out: calls.append((out / "ok").write_text("1")))
    assert is_prepared(target) and (target / "ok").exists() and not (target / "stale").exists()
    models._materialise(target, lambda out: calls.append("again"))  # idempotent
    assert len(calls) == 1


def test_tiny_model_directory(tiny_model_dir: Path, k15_cache_dir: Path) -> None:
    assert is_prepared(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU attention
    assert "quantization_config" not in config
    assert (tiny_model_dir / "model.safetensors").is_file()
    marker = (tiny_model_dir / COMPLETE_MARKER).read_text()
    # idempotent: resolving again returns the same directory without rebuilding it
    assert resolve_model("tiny-random-llama", k15_cache_dir) == tiny_model_dir
    assert (tiny_model_dir / COMPLETE_MARKER).read_text() == marker


def test_tiny_model_is_reproducible(
    tiny_model_dir: Path, k15_cache_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    models._build_tiny_random_llama(tmp_path, k15_cache_dir)  # same seed, fresh build
    first = load_file(tiny_model_dir / "model.safetensors")
    second = load_file(tmp_path / "model.safetensors")
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)


def test_load_tokenizer_and_model(tiny_model_dir: Path) -> None:
    import torch

    tok = models.load_tokenizer(tiny_model_dir)
    assert tok.pad_token_id is not None
    text = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\n2+2?<|im_end|>" in text
    model = models.load_hf_model(tiny_model_dir, dtype="float32")
    assert model.dtype == torch.float32 and not model.training
    assert models.load_hf_model(tiny_model_dir, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        models.load_hf_model(tiny_model_dir, dtype="float33")


def test_preferred_dtype_is_a_float_type() -> None:
    assert models.preferred_dtype() in {"bfloat16", "float32"}


@pytest.mark.slow
def test_smollm2_prepared_from_gguf_answers_like_the_original(smollm2_dir: Path) -> None:
    """The dequantized GGUF is a working SmolLM2 (docs/design.md §4: '17 + 25 = 32' greedily)."""
    import torch

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (30, 576)
    assert config["tie_word_embeddings"] and "quantization_config" not in config
    tok = models.load_tokenizer(smollm2_dir)
    model = models.load_hf_model(smollm2_dir, dtype="float32")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 17 + 25?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.startswith("17 + 25 = "), answer
