"""Export the policy of a K15MirrorDescent checkpoint to a plain Hugging Face directory.

    k15 export runs/k15/checkpoint runs/k15/hf
    python -c "import transformers as t; t.AutoModelForCausalLM.from_pretrained('runs/k15/hf')"

The RLModule inside an RLlib checkpoint (``learner_group/learner/rl_module/<module id>``) is
rebuilt with ``RLModule.from_checkpoint`` (no Ray cluster, no engine) and its wrapped
``transformers`` model is saved with ``save_pretrained`` together with the base model's
tokenizer (a vision-language model's whole processor), so vLLM, ``k15 eval`` and any HF
tool can load the result.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_checkpoint", "module_checkpoint_dir"]


def module_checkpoint_dir(checkpoint: str | Path, module_id: str = "default_policy") -> Path:
    """Where RLlib stores the RLModule inside an algorithm checkpoint (clear error if absent)."""
    root = Path(checkpoint).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(root)!r} does not exist")
    candidate = root / "learner_group" / "learner" / "rl_module" / module_id
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"{root} is not a K15MirrorDescent checkpoint: {candidate.relative_to(root)} is missing"
        )
    return candidate


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, dtype: str = "bfloat16", adapter: bool = False
) -> Path:
    """Write the policy as a plain HF directory. A LoRA policy is merged (W + (α/r)·B·A);
    with ``adapter`` its peft adapter is also written to ``out_dir/adapter``."""
    import torch
    from peft import PeftModel
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rllib_k15.models import load_tokenizer
    from rllib_k15.vision.sequences import is_vision_model, load_processor

    module = RLModule.from_checkpoint(str(module_checkpoint_dir(checkpoint).resolve()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = module.lm
    if isinstance(model, PeftModel):
        if adapter:
            model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()  # this module is ours alone: merging in place is fine
    elif adapter:
        raise ValueError(f"{checkpoint} is not a LoRA policy: there is no adapter to export")
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out)
    base = module.model_config["model_path"]
    if is_vision_model(base):  # a VLM: its processor (image processor + tokenizer) too
        load_processor(base).save_pretrained(out)
    else:
        load_tokenizer(base).save_pretrained(out)
    return out
