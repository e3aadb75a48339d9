"""How much of a small RL update a bf16 forward sees: round-to-nearest vs dithered rounding.

    python -m bench.bf16_visibility [--quick] [--model smollm2-135m-instruct]

The measurement behind ``bf16_rounding`` (rllib_k15/core/rounding.py, docs/precision.md).
It samples k=4 responses for 8 single-digit additions with the engine, takes ``--steps``
fp32 AdamW steps (lr ``--lr``) on the OPMD policy-gradient term Σ_j (r_j − r̄) log π(y_j|x),
giving an update Δ of the fp32 master weights, and then measures the change of every
response's log π under θ_0 + s·Δ for a few scales s:

- fp32: the exact change (the reference);
- bf16 nearest: weights rounded to nearest (what a bf16 engine holds after a plain cast);
- bf16 autocast: fp32 weights under torch.autocast (the learner's bf16 mode before dither);
- bf16 dithered: weights rounded with ``round_to_bf16(·, u)`` for two dithers u.

Each bf16 row reports the regression slope of its change on the fp32 change (1 = sees the
whole update) and their correlation. The fraction of the checkpoint's fp32 weights that lie
exactly on the bf16 grid is reported too: on the grid, an update below half a bf16 step
rounds back to the old weight. Nothing here depends on the CPU's bf16 speed (bf16 numerics
are the same on every CPU), only the run time does.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np
import torch

from bench.common import Row, add_common_args, write_result

NAME = "bf16_visibility"


def _sample(model_path: str, problems: int, k: int, max_tokens: int) -> dict[str, torch.Tensor]:
    import gymnasium as gym
    import k15_envs  # noqa: F401

    from rllib_k15.core.sequences import pack_sequences
    from rllib_k15.engine import SamplingParams, make_engine
    from rllib_k15.models import load_tokenizer

    env = gym.make("k15/Arithmetic-v0", difficulty=1, size=2000, seed=0).unwrapped
    items = [env.problem(i) for i in range(problems)]
    engine = make_engine("vllm", model_path, seed=0, dtype="float32", kv_cache_gib=0.5)
    try:
        prompts = [engine.encode_prompt(p.prompt) for p in items]
        params = SamplingParams(n=k, temperature=1.0, top_p=1.0, max_tokens=max_tokens)
        completions = engine.generate(prompts, params)
    finally:
        engine.close()
    flat = [(i, c) for i, group in enumerate(completions) for c in group]
    truncated = [c.finish_reason == "length" for _, c in flat]
    verdicts = env.verify_batch(
        [items[i] for i, _ in flat], [c.text for _, c in flat], truncated=truncated
    )
    rewards = torch.tensor([float(v.reward) for v in verdicts])
    advantages = rewards - rewards.view(problems, k).mean(1).repeat_interleave(k)
    pad = load_tokenizer(model_path).eos_token_id
    packed = pack_sequences([prompts[i] for i, _ in flat], [c.token_ids for _, c in flat], pad)
    return {
        "ids": packed.input_ids,
        "attention": packed.attention_mask,
        "mask": packed.response_mask.float(),
        "advantages": advantages,
        "rewards": rewards,
    }


def _sequence_logp(model, batch, autocast: bool, grad: bool = False) -> torch.Tensor:
    from rllib_k15.core.sequences import token_logprobs

    out = []
    with torch.set_grad_enabled(grad):
        for s in range(0, len(batch["ids"]), 8):
            ids, attention = batch["ids"][s : s + 8], batch["attention"][s : s + 8]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=ids, attention_mask=attention).logits
            out.append((token_logprobs(logits, ids) * batch["mask"][s : s + 8]).sum(-1))
    return torch.cat(out)


def _fp32_update(model, batch, steps: int, lr: float) -> dict[str, torch.Tensor]:
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0)
    for _ in range(steps):
        optimizer.zero_grad()
        logp = _sequence_logp(model, batch, autocast=False, grad=True)
        (-(batch["advantages"] * logp).mean()).backward()
        optimizer.step()
    delta = {k: p.detach() - start[k] for k, p in model.named_parameters()}
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(start[k])
    return delta


def _bf16_copy(model, noise_seed: int | None):
    from rllib_k15.core.rounding import dither_noise, round_to_bf16

    out = copy.deepcopy(model)
    with torch.no_grad():
        for i, (_, p) in enumerate(out.named_parameters()):
            noise = None if noise_seed is None else dither_noise(p.shape, noise_seed * 1000 + i)
            p.data = round_to_bf16(p.data, noise)
    return out


def measure(model_path: str, scales: list[float], steps: int, lr: float, problems: int) -> dict:
    from rllib_k15.models import load_hf_model

    batch = _sample(model_path, problems, k=4, max_tokens=96)
    model = load_hf_model(model_path, dtype="float32")
    params = list(model.parameters())
    on_grid = sum(int((p.bfloat16().float() == p).sum()) for p in params) / sum(
        p.numel() for p in params
    )
    delta = _fp32_update(model, batch, steps, lr)
    variants = {"bf16 nearest": lambda m: (_bf16_copy(m, None), False),
                "bf16 autocast": lambda m: (m, True),
                "bf16 dithered (u1)": lambda m: (_bf16_copy(m, 1), False),
                "bf16 dithered (u2)": lambda m: (_bf16_copy(m, 2), False)}  # fmt: skip

    def view_logp(make, weights) -> torch.Tensor:
        viewed, autocast = make(weights)
        return _sequence_logp(viewed, batch, autocast=autocast)

    base = {name: view_logp(make, model) for name, make in variants.items()}
    base_fp32 = _sequence_logp(model, batch, autocast=False)
    rows = []
    for scale in scales:
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for k, p in moved.named_parameters():
                p.add_(delta[k] * scale)
        exact = _sequence_logp(moved, batch, autocast=False) - base_fp32
        row: dict[str, Any] = {"scale": scale, "fp32_mean_abs_change": float(exact.abs().mean())}
        for name, make in variants.items():
            if name.startswith("bf16 dithered"):  # the dithered view of θ_0 is θ_0 itself
                change = view_logp(make, moved) - base["bf16 nearest"]
            else:
                change = view_logp(make, moved) - base[name]
            slope = float(change @ exact / (exact @ exact))
            corr = float(np.corrcoef(change.numpy(), exact.numpy())[0, 1])
            row[name] = {"slope": slope, "correlation": corr}
        rows.append(row)
        print(row, flush=True)
    updates = torch.cat([d.abs().flatten() for d in delta.values()])
    return {
        "weights_on_bf16_grid": on_grid,
        "reward_mean": float(batch["rewards"].mean()),
        "responses": len(batch["ids"]),
        "median_abs_update": float(updates.median()),
        "scales": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, NAME)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4, help="fp32 AdamW steps in Δ")
    parser.add_argument("--lr", type=float, default=1e-5, help="the quickstart's lr")
    args = parser.parse_args(argv)
    from rllib_k15.models import resolve_model

    scales = [1.0] if args.quick else [0.5, 1.0, 4.0, 16.0]
    problems = 2 if args.quick else 8
    path = str(resolve_model(args.model))
    results = measure(path, scales, args.steps, args.lr, problems)
    one = next(r for r in results["scales"] if r["scale"] == 1.0)
    rows = [
        Row(NAME, f"{name}: share of the fp32 log π change seen (slope)", one[name]["slope"],
            note=f"corr {one[name]['correlation']:.3f}; {args.steps} AdamW steps, lr {args.lr}")
        for name in ("bf16 nearest", "bf16 autocast", "bf16 dithered (u1)", "bf16 dithered (u2)")
    ]  # fmt: skip
    rows.append(
        Row(NAME, "checkpoint weights exactly on the bf16 grid", results["weights_on_bf16_grid"])
    )
    config = {"model": args.model, "steps": args.steps, "lr": args.lr, "problems": problems, "k": 4}
    write_result(NAME, args, config=config, results=results, rows=rows)


if __name__ == "__main__":
    main()
