"""Model merging for long2short: weight averaging and CoT-Valve-style interpolation.

Kimi k1.5 §2.4 merges a long-CoT and a short-CoT model "by simply averaging their
weights". CoT-Valve (Ma et al. 2025) moves along a parameter direction Δθ with a strength
α. Both are one formula here, applied tensor by tensor:

    θ = θ_short + α (θ_long − θ_short)

* α = 0.5  plain average (the report's merge, the default);
* 0 < α < 1 interpolation between the two models (α = 0 → short, α = 1 → long);
* α > 1    extrapolation past the long model, α < 0 extrapolation past the short one.

Convention note: CoT-Valve writes θ_new = θ_base + α_cv Δθ with Δθ pointing from the
long-CoT base towards short chains, i.e. α_cv = 1 − α in the formula above (CoT-Valve's
"shorter than the short model" extrapolation is α < 0 here).

Streaming: tensors are read with ``safetensors.safe_open`` (memory-mapped) and the output
is written shard by shard, mirroring the long model's shard layout, so the process's own
(anonymous) memory peaks at about one output shard plus the tensor being merged — not two
models. RSS also counts the memory-mapped input pages; those are clean page cache the
kernel reclaims under pressure. All names, shapes and
the architecture fields of ``config.json`` are checked *before* anything is written; a
mismatch raises :class:`MergeError` naming the tensor, shapes or config field. Arithmetic
is done in float32 and cast back to the long model's dtype for each tensor. Non-weight
files (config, tokenizer, chat template, generation config) are copied from the long
model's directory. Only safetensors checkpoints are supported.

CLI: ``k15 long2short merge LONG SHORT --out DIR [--alpha 0.5]``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["MergeError", "MergeReport", "check_configs", "interpolate", "merge_models"]

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"

# config.json fields that fix tensor shapes or the meaning of the weights: must match.
ARCHITECTURE_FIELDS = (
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
    "num_local_experts",
    "num_experts",
    "moe_intermediate_size",
)
# config.json fields that say nothing about the weights: never compared.
IGNORED_FIELDS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")


class MergeError(ValueError):
    """The two checkpoints cannot be merged (different architecture, names or shapes)."""


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge_models` wrote."""

    out_dir: Path
    alpha: float
    num_tensors: int
    shards: list[str]
    config_differences: list[str] = field(default_factory=list)


def interpolate(short: torch.Tensor, long: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ = θ_short + α (θ_long − θ_short), in float32, returned in ``long``'s dtype."""
    if short.shape != long.shape:
        raise MergeError(f"shape mismatch: short {tuple(short.shape)} vs long {tuple(long.shape)}")
    if not (long.is_floating_point() and short.is_floating_point()):
        if not torch.equal(short, long):
            raise MergeError("non-float tensors differ between the two models")
        return long.clone()
    s = short.to(torch.float32)
    out = long.to(torch.float32, copy=True)  # one working buffer, updated in place
    return out.sub_(s).mul_(alpha).add_(s).to(long.dtype)


def check_configs(long_cfg: dict[str, Any], short_cfg: dict[str, Any]) -> list[str]:
    """Raise on differing architecture fields (all named); return the other differences."""
    keys = sorted((set(long_cfg) | set(short_cfg)) - set(IGNORED_FIELDS))
    arch = [k for k in ARCHITECTURE_FIELDS if k in keys]
    mismatched, differences = [], []
    for key in arch + [k for k in keys if k not in ARCHITECTURE_FIELDS]:
        a, b = long_cfg.get(key, "<absent>"), short_cfg.get(key, "<absent>")
        if a == b:
            continue
        if key in ARCHITECTURE_FIELDS:
            mismatched.append(f"config field `{key}` is {a!r} in LONG but {b!r} in SHORT")
        else:
            differences.append(f"{key}: long={a!r} short={b!r}")
    if mismatched:
        raise MergeError("models have different architectures: " + "; ".join(mismatched))
    return differences


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise MergeError(f"{model_dir} has no config.json (not a Hugging Face model directory)")
    return json.loads(path.read_text())


def _shard_names(model_dir: Path) -> list[str]:
    """Safetensors shard file names in the checkpoint's own order."""
    if (model_dir / SAFE_INDEX).is_file():
        weight_map = json.loads((model_dir / SAFE_INDEX).read_text())["weight_map"]
        return list(dict.fromkeys(weight_map.values()))
    if (model_dir / SAFE_SINGLE).is_file():
        return [SAFE_SINGLE]
    found = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if found:
        return found
    others = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(
        p.name for p in model_dir.glob("*.pt")
    )
    hint = f" (found {others}; re-save with save_pretrained(safe_serialization=True))"
    raise MergeError(f"{model_dir} has no safetensors weights{hint if others else ''}")


def _locations(model_dir: Path) -> dict[str, str]:
    """Tensor name -> shard file, read from the shard headers only."""
    where: dict[str, str] = {}
    for shard in _shard_names(model_dir):
        with safe_open(model_dir / shard, framework="pt") as f:
            for name in f.keys():
                where[name] = shard
    return where


def _check_tensors(
    long_dir: Path, short_dir: Path, long_loc: dict[str, str], short_loc: dict[str, str]
) -> None:
    only_long = sorted(set(long_loc) - set(short_loc))
    only_short = sorted(set(short_loc) - set(long_loc))
    if only_long or only_short:
        raise MergeError(
            "models have different tensors: "
            f"only in LONG {only_long[:5]}{' …' if len(only_long) > 5 else ''}, "
            f"only in SHORT {only_short[:5]}{' …' if len(only_short) > 5 else ''}"
        )
    with ExitStack() as stack:
        handles = {
            (d, shard): stack.enter_context(safe_open(d / shard, framework="pt"))
            for d, loc in ((long_dir, long_loc), (short_dir, short_loc))
            for shard in set(loc.values())
        }
        for name in long_loc:
            shape_l = handles[(long_dir, long_loc[name])].get_slice(name).get_shape()
            shape_s = handles[(short_dir, short_loc[name])].get_slice(name).get_shape()
            if list(shape_l) != list(shape_s):
                raise MergeError(
                    f"tensor `{name}` has shape {list(shape_l)} in LONG but "
                    f"{list(shape_s)} in SHORT"
                )


def _merged_shards(
    long_dir: Path,
    short_dir: Path,
    short_loc: dict[str, str],
    alpha: float,
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield (shard name, merged tensors) for each shard of the long model, one at a time."""
    with ExitStack() as stack:
        short_handles = {
            shard: stack.enter_context(safe_open(short_dir / shard, framework="pt"))
            for shard in set(short_loc.values())
        }
        for shard in _shard_names(long_dir):
            out: dict[str, torch.Tensor] = {}
            with safe_open(long_dir / shard, framework="pt") as f:
                for name in f.keys():
                    short = short_handles[short_loc[name]].get_tensor(name)
                    out[name] = interpolate(short, f.get_tensor(name), alpha)
            yield shard, out


def _copy_side_files(src: Path, dst: Path) -> None:
    """Copy config, tokenizer, chat template … — every top-level file that is not a weight
    file, a hidden marker or one of our own run logs (``k15_*.json``, ``*.jsonl``)."""
    for path in src.iterdir():
        name = path.name
        if (
            not path.is_file()
            or name.startswith((".", "k15_"))
            or path.suffix in {".safetensors", ".bin", ".pt", ".pth", ".jsonl"}
            or name in {SAFE_INDEX, "pytorch_model.bin.index.json"}
        ):
            continue
        shutil.copy2(path, dst / name)


def merge_models(
    long_dir: str | Path,
    short_dir: str | Path,
    out_dir: str | Path,
    alpha: float = 0.5,
) -> MergeReport:
    """Write θ_short + α(θ_long − θ_short) as a plain HF model directory in ``out_dir``."""
    long_dir, short_dir, out_dir = Path(long_dir), Path(short_dir), Path(out_dir)
    if not math.isfinite(alpha):
        raise ValueError(f"`alpha` ({alpha}) must be a finite number")
    for label, d in (("LONG", long_dir), ("SHORT", short_dir)):
        if not d.is_dir():
            raise FileNotFoundError(f"{label} model directory not found: {d}")
    if out_dir.resolve() in (long_dir.resolve(), short_dir.resolve()):
        raise ValueError(f"--out ({out_dir}) must differ from the input model directories")
    differences = check_configs(_read_config(long_dir), _read_config(short_dir))
    long_loc, short_loc = _locations(long_dir), _locations(short_dir)
    _check_tensors(long_dir, short_dir, long_loc, short_loc)

    out_dir.mkdir(parents=True, exist_ok=True)
    shards, total_size = [], 0
    for shard, tensors in _merged_shards(long_dir, short_dir, short_loc, alpha):
        total_size += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, out_dir / shard, metadata={"format": "pt"})
        shards.append(shard)
        del tensors
    _copy_side_files(long_dir, out_dir)
    if (long_dir / SAFE_INDEX).is_file():
        index = {
            "metadata": {"total_size": total_size},
            "weight_map": dict(sorted(long_loc.items())),
        }
        (out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    provenance = {
        "long": str(long_dir),
        "short": str(short_dir),
        "alpha": alpha,
        "formula": "theta_short + alpha * (theta_long - theta_short)",
        "config_differences": differences,
    }
    (out_dir / "k15_merge.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return MergeReport(out_dir, alpha, len(long_loc), shards, differences)
