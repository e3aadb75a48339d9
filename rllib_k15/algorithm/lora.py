"""LoRA adapters on the policy through ``peft``: ``training(lora={"r": 16, "alpha": 32})``.

Only the adapters train (peft freezes the base weights); the base stays in the learner's
memory in fp32, so LoRA saves the gradients and optimizer state of the frozen weights, not
the weights themselves. Everything outside the learner keeps seeing a plain model:

- **weight sync** and **export** use :func:`merged_hf_state_dict`: every adapted linear
  layer's weight is W + (α/r)·B·A (peft's own ``get_delta_weight``) under the plain Hugging
  Face name, so the rollout engine loads merged weights exactly as with full fine-tuning
  (vLLM's LoRA path is not used);
- the **reference pass** (log π_θi) scores with the same module, base plus adapters; GRPO's
  frozen initial model is rebuilt from the model config, adapters at their zero start
  (B = 0), i.e. the base model.

At the start B = 0, so the adapted policy equals the base model and training starts from it.
With bf16 weight sync the engine gets the merged weights rounded (with the dither of their
HF names), while the learner's bf16 forward rounds the base weights and adds the adapters:
the two are then close, not bit-identical as without LoRA (docs/precision.md).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DEFAULT_TARGETS", "LORA_KEYS", "apply_lora", "lora_errors", "merged_hf_state_dict"]

# every linear layer of a Llama block (attention and MLP)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


def lora_errors(spec: Any) -> list[str]:
    """What is wrong with a ``lora`` setting (None = off), one message per problem."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        return [f"`lora` ({spec!r}) must be a mapping like {{'r': 16, 'alpha': 32}} or None"]
    errors = []
    unknown = set(spec) - LORA_KEYS
    if unknown:
        errors.append(f"`lora` has unknown keys {sorted(unknown)}; known: {sorted(LORA_KEYS)}")
    r = spec.get("r", 16)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        errors.append(f"`lora.r` ({r!r}) must be an integer >= 1")
    alpha = spec.get("alpha", 2 * r if isinstance(r, int) else 32)
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        errors.append(f"`lora.alpha` ({alpha!r}) must be a number > 0")
    dropout = spec.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        errors.append(f"`lora.dropout` ({dropout!r}) must be in [0, 1)")
    targets = spec.get("target_modules", list(DEFAULT_TARGETS))
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
        errors.append(f"`lora.target_modules` ({targets!r}) must be a list of module names")
    return errors


def apply_lora(model: torch.nn.Module, spec: dict) -> torch.nn.Module:
    """``model`` wrapped with fresh LoRA adapters (peft); base weights frozen."""
    from peft import LoraConfig, get_peft_model

    r = int(spec.get("r", 16))
    config = LoraConfig(
        r=r,
        lora_alpha=float(spec.get("alpha", 2 * r)),
        lora_dropout=float(spec.get("dropout", 0.0)),
        target_modules=list(spec.get("target_modules", DEFAULT_TARGETS)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def merged_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights under plain HF names; for a peft model, adapters merged:

        W_merged = W_base + (α / r) · B · A        (per adapted linear layer)

    computed without touching ``model`` (no ``merge_and_unload``). Detached tensors."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(model, PeftModel):
        return {k: v.detach() for k, v in model.state_dict().items()}
    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                weight = module.base_layer.weight
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                merged[f"{name}.weight"] = (weight + delta.to(weight.dtype)).detach()
        out = {}
        for key, tensor in base.state_dict().items():
            if "lora_" in key:
                continue
            plain = key.replace(".base_layer.", ".")
            out[plain] = merged.get(plain, tensor.detach())
    return out
