"""Weights that are what they claim: a cheap fingerprint of what an engine holds after a sync.

After every weight sync the EnvRunner compares a few tensors of the engine with the ones it
sent (:func:`check_synced`). A sync that silently loaded nothing (a changed loader, a dtype
it skipped, a name it ignored) would otherwise let the run train on samples of a stale
policy. The tensors are ones every engine stores unfused and unpadded under the Hugging Face
names — the first and last layers' norms, attention output and MLP down projections (vLLM
fuses q/k/v and gate/up and pads the vocabulary, so those are left out) — and the
fingerprint is their float64 sum and sum of squares, compared exactly: the engine holds the
values it was sent, in its dtype. vLLM-CPU repacks linear weights into oneDNN buffers that
cannot be read back, so there only the norms are compared (they move with every update
that changes the bf16 copy; a no-op load leaves them stale).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["FINGERPRINT_SUFFIXES", "WeightSyncError", "check_synced", "fingerprint", "pick_names"]

FINGERPRINT_SUFFIXES = (
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.o_proj.weight",
    "mlp.down_proj.weight",
)


LANGUAGE_MODEL_PREFIXES = ("model.", "model.language_model.", "model.text_model.")


class WeightSyncError(RuntimeError):
    """The engine does not hold the weights it was sent."""


def pick_names(names: list[str]) -> list[str]:
    """The fingerprinted tensors among ``names``: the final norm plus the first and the last
    layer's :data:`FINGERPRINT_SUFFIXES` (whatever of them exists), of the language model
    (a vision-language model's under ``model.language_model.`` or ``model.text_model.``)."""
    # the language model's prefix: "model." (a causal LM), "model.language_model." (LLaVA-
    # style VLMs), "model.text_model." (Idefics3 / SmolVLM)
    found = [p for p in LANGUAGE_MODEL_PREFIXES if any(n.startswith(p + "layers.") for n in names)]
    prefix = found[0] if found else "model."
    depth = prefix.count(".")
    layers = sorted(
        {int(n.split(".")[depth + 1]) for n in names if n.startswith(prefix + "layers.")}
    )
    wanted = {f"{prefix}norm.weight"}
    for layer in layers[:1] + layers[-1:]:
        wanted.update(f"{prefix}layers.{layer}.{suffix}" for suffix in FINGERPRINT_SUFFIXES)
    return [n for n in names if n in wanted]


def fingerprint(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(Σ x, Σ x²) in float64 of ``tensor`` as the engine stores it (cast to ``dtype``)."""
    values = tensor.detach().to(dtype or tensor.dtype).to(torch.float64)
    return float(values.sum()), float((values * values).sum())


def check_synced(
    sent: Mapping[str, torch.Tensor], held: Mapping[str, tuple[float, float]], dtype: torch.dtype
) -> list[str]:
    """Raise :class:`WeightSyncError` naming every tensor whose fingerprint in ``held`` (what
    the engine reports) differs from the one of ``sent`` cast to the engine's ``dtype``.
    Returns the names compared (those the engine reported); none compared is the caller's
    to report (an engine that names its tensors otherwise cannot be checked this way)."""
    compared = [name for name in sent if name in held]
    wrong = [name for name in compared if held[name] != fingerprint(sent[name], dtype)]
    if wrong:
        raise WeightSyncError(
            f"after the weight sync the engine does not hold the weights it was sent "
            f"({', '.join(wrong)} differ); stopping instead of sampling from a stale policy"
        )
    return compared
