"""Reference rollout engine on plain ``transformers.generate`` (no vLLM needed).

Slower than vLLM (no paged KV cache, no continuous batching: docs/design.md §4 measured ~5x), but
dependency-light and numerically transparent, so it serves as

- the reference the vLLM engine is tested against (same interface, same log-prob
  convention — see ``rllib_k15.engine.base``);
- a fallback sampler where vLLM isn't installed (``k15 eval --engine hf``);
- a teacher-forced scorer: ``score(prompts, completions)`` returns the model's own
  per-token log-probs (temperature 1), the quantity the learner recomputes.

Sampling uses a private RNG stream (swapped in around ``generate``), so samples depend on
``seed`` and the call sequence only, and the caller's global torch RNG is left untouched.

Launch::

    from rllib_k15.engine import HFEngine, SamplingParams
    engine = HFEngine("smollm2-135m-instruct")
    print(engine.generate_text(["What is 17 + 25?"], SamplingParams(max_tokens=64))[0][0].text)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rllib_k15.core.sequences import pack_sequences, response_token_logprobs
from rllib_k15.engine.base import Completion, RolloutEngine, SamplingParams
from rllib_k15.models import load_hf_model, load_tokenizer, resolve_model

__all__ = ["HFEngine"]


class HFEngine(RolloutEngine):
    """``RolloutEngine`` on ``transformers``.

    model_path: registered model name or HF directory.
    seed:       seed of the engine's private sampling stream.
    dtype:      "float32" for a numerically exact reference; "auto" picks bf16 where the CPU
                has native bf16 matmuls (see ``rllib_k15.models.preferred_dtype``).
    batch_size: rows (prompt x sample) per ``generate``/forward call; bounds memory.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        seed: int = 0,
        dtype: str | torch.dtype = "auto",
        batch_size: int = 64,
    ) -> None:
        self.model_path = Path(resolve_model(model_path))
        self.model: Any = load_hf_model(self.model_path, dtype)
        self.tokenizer = load_tokenizer(self.model_path)
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    def reseed(self, seed: int) -> None:
        """Restart the engine's sampling stream as if it had been built with ``seed``."""
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    # ------------------------------------------------------------------ generation

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        copies = params.n if params.temperature == 0 else 1  # greedy: compute once, copy
        n = params.n // copies
        rows = [list(map(int, ids)) for ids in prompt_token_ids for _ in range(n)]
        flat: list[Completion] = []
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            for start in range(0, len(rows), self.batch_size):
                flat.extend(self._generate_batch(rows[start : start + self.batch_size], params))
            self._rng_state = torch.get_rng_state()
        return [
            [replace(c, token_ids=list(c.token_ids), logprobs=list(c.logprobs))
             for c in flat[i : i + n] for _ in range(copies)]
            for i in range(0, len(flat), n)
        ]  # fmt: skip

    @torch.no_grad()
    def _generate_batch(self, rows: list[list[int]], params: SamplingParams) -> list[Completion]:
        from transformers import GenerationConfig

        tok = self.tokenizer
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: generation continues at the right edge
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attention_mask[i, width - len(r) :] = 1
        sample = params.temperature > 0
        config = GenerationConfig(  # explicit: ignore sampling defaults in the model's dir
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=0 if sample else None,
            max_new_tokens=params.max_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            stop_strings=list(params.stop) or None,
            output_scores=True,  # processed logits: after temperature / top-p
            return_dict_in_generate=True,
        )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            tokenizer=tok if params.stop else None,
        )
        generated = out.sequences[:, width:]  # (B, S)
        scores = torch.stack(out.scores, dim=1).float()  # (B, S, V)
        logprobs = torch.log_softmax(scores, dim=-1).gather(-1, generated.unsqueeze(-1))[..., 0]
        return [
            self._completion(generated[i].tolist(), logprobs[i].tolist(), params)
            for i in range(len(rows))
        ]

    def _completion(
        self, ids: list[int], logprobs: list[float], params: SamplingParams
    ) -> Completion:
        """Cut a padded row after its end token; decide why it ended."""
        eos = self.tokenizer.eos_token_id
        end = ids.index(eos) + 1 if eos in ids else len(ids)
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        reason = "stop" if eos in ids[:end] else "length"
        for stop in params.stop:  # HF stops after the token completing the stop string
            if stop in text:
                text, reason = text[: text.index(stop)], "stop"
                end = _tokens_covering(self.tokenizer, ids[:end], len(text) + len(stop))
        return Completion(ids[:end], logprobs[:end], text, reason)

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def score(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Teacher-forced log π(token | prefix) of each completion token (temperature 1)."""
        out: list[list[float]] = []
        for start in range(0, len(prompt_ids), self.batch_size):
            prompts = prompt_ids[start : start + self.batch_size]
            completions = completion_ids[start : start + self.batch_size]
            packed = pack_sequences(prompts, completions, self.tokenizer.pad_token_id)
            logprobs = response_token_logprobs(self.model, packed)  # (B, T)
            for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
                out.append(logprobs[row, len(p) : len(p) + len(c)].tolist())
        return out

    # ------------------------------------------------------------------ weights

    @torch.no_grad()
    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        expected = set(self.model.state_dict())
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        missing, extra = expected - set(state_dict) - tied, set(state_dict) - expected
        if missing or extra:  # checked before anything is copied
            raise KeyError(f"state_dict mismatch: missing {sorted(missing)}, extra {sorted(extra)}")
        self.model.load_state_dict(dict(state_dict), strict=True)

    def weight_fingerprints(self, names: list[str]) -> dict[str, tuple[float, float]]:
        """Fingerprints of the named tensors as the model holds them."""
        from rllib_k15.engine.fingerprint import fingerprint

        state = self.model.state_dict()
        return {name: fingerprint(state[name]) for name in names if name in state}

    @property
    def torch_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def close(self) -> None:
        self.model = None


def _tokens_covering(tokenizer: Any, ids: list[int], n_chars: int) -> int:
    """Smallest prefix length of ``ids`` whose decoded text has at least ``n_chars`` chars."""
    for end in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:end], skip_special_tokens=True)) >= n_chars:
            return end
    return len(ids)
