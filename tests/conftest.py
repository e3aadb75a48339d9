"""Session-wide fixtures: one model cache, the tiny model, and ONE shared vLLM engine.

- ``k15_cache_dir``: ``$K15_CACHE_DIR`` if set (reuse a warm cache across runs), else a
  temporary directory. An autouse fixture points ``$K15_CACHE_DIR`` at it for the whole
  session, so code under test that resolves registered names without an explicit cache
  (``resolve_model("tiny-random-llama")``) never writes into ``~/.cache``.
- ``tiny_model_dir``: the seeded random 2-layer Llama (``tiny-random-llama``) with the
  SmolLM2 tokenizer, built once per session (~20 s cold: the tokenizer is extracted from
  the GGUF; ~2 s once the tokenizer is cached).
- ``smollm2_dir``: the embedded default model (~1 min to prepare cold). Slow tests only.
- ``vllm_tiny_engine``: one in-process ``VLLMEngine`` on the tiny model for the whole
  session (an engine costs ~10-30 s to start). Tests that use it must leave it as they
  found it: restore weights they replaced, and not close it. A test may start a second
  in-process engine and close it; the shared one keeps working (tested). Note that an
  in-process vLLM-CPU engine makes ``torch.set_num_threads`` a no-op for the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the model hub


@pytest.fixture(scope="session")
def k15_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("K15_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("k15-cache")


@pytest.fixture(scope="session", autouse=True)
def _session_cache_env(k15_cache_dir: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("K15_CACHE_DIR", str(k15_cache_dir))
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(k15_cache_dir: Path) -> Path:
    from rllib_k15.models import prepare_model

    return prepare_model("tiny-random-llama", k15_cache_dir)


@pytest.fixture(scope="session")
def smollm2_dir(k15_cache_dir: Path) -> Path:
    from rllib_k15.models import prepare_model

    return prepare_model("smollm2-135m-instruct", k15_cache_dir)


@pytest.fixture(scope="session")
def vllm_tiny_engine(tiny_model_dir: Path) -> Iterator[object]:
    pytest.importorskip("vllm")
    from rllib_k15.engine.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        tiny_model_dir,
        seed=0,
        dtype="auto",  # bf16 only where the CPU has native bf16 matmuls
        max_model_len=1024,
        kv_cache_gib=0.25,
        enforce_eager=True,  # no torch.compile: faster start, fine for a tiny model
    )
    yield engine
    engine.close()
