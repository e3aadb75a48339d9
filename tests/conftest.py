"""Session-wide fixtures: one model cache, the tiny model, and ONE shared vLLM engine.

- ``k15_cache_dir``: ``$K15_CACHE_DIR`` if set (reuse a warm cache across runs), else a
  temporary directory. An autouse fixture points ``$K15_CACHE_DIR`` at it for the whole
  session, so code under test that resolves registered names without an explicit cache
  (``resolve_model("tiny-random-llama")``) never writes into ``~/.cache``.
- ``tiny_model_dir``: the seeded random 2-layer Llama (``tiny-random-llama``) with the
  SmolLM2 tokenizer, built once per session (~20 s cold: the tokenizer is extracted from
  the GGUF; ~2 s once the tokenizer is cached).
- ``smollm2_dir``: the embedded default model (~1 min to prepare cold). Slow tests only.
- ``vllm_tiny_engine``: one in-process ``VLLMEngine`` on the tiny model, in fp32, for the
  whole session (an engine costs ~10-30 s to start). Tests that use it must leave it as they
  found it: restore weights they replaced, and not close it. A test may start a second
  in-process engine and close it; the shared one keeps working (tested). Note that an
  in-process vLLM-CPU engine makes ``torch.set_num_threads`` a no-op for the process.

Precision (rllib_k15.hardware): the session header prints ``decide_precision().as_dict()``,
and ``K15_PRECISION`` is exported with that decision for the whole session, so every process
(Ray actors, child ``k15`` commands) runs with the precision the header names. Tests of exact
numerics pin fp32 explicitly (``autocast_bf16=False``, engine ``dtype="float32"``, DeepSpeed
``bf16=False``); learning tests keep "auto" and so follow ``K15_PRECISION``. Tests marked
``precision`` are run a second time by CI with the other precision (``make test-precision``).

``ast_guard.install()``: on CPython 3.11.0-3.11.7 a failure report could crash the whole
session with ``INTERNALERROR ... SystemError: AST constructor recursion depth mismatch``
(see tests/ast_guard.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import ast_guard
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the model hub
ast_guard.install()

# directories / files whose tests all carry the `precision` marker (files we do not mark
# one by one); other precision tests are marked in their files
_PRECISION_PATHS = ("core/",)
_HERE = Path(__file__).resolve().parent


def _precision():
    """The session's precision decision; a bad K15_PRECISION is a usage error."""
    from rllib_k15.hardware import decide_precision

    try:
        return decide_precision()
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


def _precision_line() -> str:
    return f"precision: {json.dumps(_precision().as_dict())}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [_precision_line()]


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """``-q`` (what `make test` runs) shows no header: print the decision anyway."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.verbosity < 0:
        reporter.write_line(_precision_line())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = item.path.resolve().relative_to(_HERE).as_posix()
        except ValueError:  # envs/tests
            continue
        if rel.startswith(_PRECISION_PATHS):
            item.add_marker(pytest.mark.precision)


@pytest.fixture(scope="session")
def k15_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("K15_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("k15-cache")


@pytest.fixture(scope="session", autouse=True)
def _session_cache_env(k15_cache_dir: Path) -> Iterator[None]:
    """``$K15_CACHE_DIR`` for the session, and ``$K15_PRECISION`` = the header's decision
    (decided before the cache dir changes: the probe's result lives in the real cache)."""
    decision = _precision()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("K15_PRECISION", {"bfloat16": "bf16", "float32": "fp32"}[decision.dtype])
        mp.setenv("K15_CACHE_DIR", str(k15_cache_dir))
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(k15_cache_dir: Path) -> Path:
    from rllib_k15.models import prepare_model

    return prepare_model("tiny-random-llama", k15_cache_dir)


@pytest.fixture(scope="session")
def tiny_vlm_dir(k15_cache_dir: Path) -> Path:
    from rllib_k15.models import prepare_model

    return prepare_model("tiny-random-idefics3", k15_cache_dir)


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
        dtype="float32",  # tests compare it with fp32 references at tight tolerances
        max_model_len=1024,
        kv_cache_gib=0.25,
        enforce_eager=True,  # no torch.compile: faster start, fine for a tiny model
    )
    yield engine
    engine.close()
