"""The learner's GPU path in one short run: autocast bf16 on the parameters' device, dithered
bf16 weights with straight-through gradients, one OPMD step (torch + transformers only).

    python -m bench.cuda_learner_check [--device cuda] [--out cuda_check.json]

For a machine that has a GPU but no vLLM, Ray or DeepSpeed: it builds a small random Llama
in-process (no download), and checks, printing one line each and failing loudly:

1. ``autocast_device`` names the parameters' device (a CUDA learner autocasts on "cuda");
2. under that autocast the logits come out in bf16 and the profiler sees bf16 GEMM kernels
   (CUDA kernel names with "bf16"/"BFloat16"; CPU profiler events do not name the dtype,
   so there the logits' dtype is the check) — the learner computes in bf16 over fp32
   master weights;
3. the dithered bf16 view of the weights (``round_to_bf16`` with one dither, as the learner
   and the engine share it) is on the bf16 grid, and the straight-through gradient reaches
   every fp32 master parameter;
4. one OPMD step (``rllib_k15.core.losses.opmd_loss``, eq. 3) on random responses gives a
   finite loss and changes the parameters; the τ term is 0 at the first step (π_θ = π_θi);
5. padding-free packing (``rllib_k15.core.packing``, what ``padding_free: true`` runs) on
   the device: rows of 9-48 tokens packed into fewer rows give the padded rows' log-probs.

``--device cpu`` runs the same checks here (tests/test_bench_cuda_check.py).
"""

from __future__ import annotations

import argparse
import json

import torch

from rllib_k15.core.losses import LossInputs, LossParams, opmd_loss, sequence_logprob
from rllib_k15.core.packing import pack_rows, unpack_rows
from rllib_k15.core.rounding import StraightThrough, autocast_device, dither_noise, round_to_bf16
from rllib_k15.core.sequences import token_logprobs


def _tiny_llama(device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config).to(device)


def _dithered(model) -> dict[str, torch.Tensor]:
    out = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        noise = dither_noise(p.shape, seed=1000 + i).to(p.device)
        out[name] = StraightThrough.apply(p, round_to_bf16(p.detach(), noise).float())
    return out


def _logp(model, ids, params=None):
    with torch.autocast(autocast_device(model), dtype=torch.bfloat16):
        if params is None:
            logits = model(input_ids=ids).logits
        else:
            logits = torch.func.functional_call(model, params, (), {"input_ids": ids}).logits
    return logits, token_logprobs(logits, ids)


def run(device: str) -> dict:
    model = _tiny_llama(device)
    report: dict = {"device": device, "torch": torch.__version__}
    report["autocast_device"] = autocast_device(model)
    assert report["autocast_device"] == torch.device(device).type, report

    ids = torch.randint(0, 512, (8, 48), device=device)
    mask = torch.zeros_like(ids, dtype=torch.float32)
    mask[:, 16:] = 1.0  # prompt 16 tokens, response 32
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        logits, _ = _logp(model, ids)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    report["logits_dtype"] = str(logits.dtype)
    names = {e.name for e in prof.events()}
    bf16_kernels = sorted(n for n in names if "bf16" in n.lower() or "bfloat16" in n.lower())
    report["bf16_kernels"] = bf16_kernels[:10]
    assert logits.dtype == torch.bfloat16, report
    if device.startswith("cuda"):  # CPU profiler events (aten::mm) do not name the dtype
        assert bf16_kernels, f"no bf16 GEMM kernel ran: {sorted(names)[:30]}"

    params = _dithered(model)
    on_grid = all(torch.equal(v.detach(), v.detach().bfloat16().float()) for v in params.values())
    report["dithered_on_bf16_grid"] = on_grid
    assert on_grid, report

    with torch.no_grad():
        _, ref_token_logp = _logp(model, ids, params)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, token_logp = _logp(model, ids, params)
    logp = sequence_logprob(token_logp, mask, "sum")
    rewards = torch.tensor([1.0, 0.0] * 4, device=device)
    baselines = torch.full_like(rewards, 0.5)
    inputs = LossInputs(logp=logp, ref_logp=sequence_logprob(ref_token_logp, mask, "sum"),
                        advantages=rewards - baselines)  # fmt: skip
    loss, metrics = opmd_loss(inputs, LossParams(tau=0.1))
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    report["params_without_grad"] = [k for k, g in grads.items() if g is None or not g.any()]
    optimizer.step()
    changed = sum(not torch.equal(before[k], p.detach()) for k, p in model.named_parameters())
    report.update(loss=float(loss.detach()), changed_tensors=changed, total_tensors=len(before))
    report["metrics"] = {k: float(v) for k, v in metrics.items()}
    assert torch.isfinite(loss) and not report["params_without_grad"], report
    assert changed == len(before), report
    report.update(_packing_check(model, ids))
    return report


def _packing_check(model, ids) -> dict:
    """Packed rows (position ids per row, no mask) vs padded rows, fp32, on the device."""
    lengths = torch.tensor([48, 20, 12, 30, 9, 41, 16, 25], device=ids.device)
    attention = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
        padded = token_logprobs(logits.float(), ids) * attention
        packing = pack_rows(ids, attention)
        logits = model(
            input_ids=packing.input_ids, position_ids=packing.position_ids, use_cache=False
        ).logits
        packed = unpack_rows(
            token_logprobs(logits.float(), packing.input_ids), packing, ids.shape[1]
        )
    report = {"packing_rows": int(packing.input_ids.shape[0]),
              "packing_max_abs_err": float((packed - padded).abs().max())}  # fmt: skip
    assert report["packing_rows"] < len(lengths) and report["packing_max_abs_err"] < 1e-3, report
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    report = run(args.device)
    for key, value in report.items():
        print(f"{key}: {value}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)
    print("CUDA LEARNER CHECK OK" if args.device.startswith("cuda") else "LEARNER CHECK OK")


if __name__ == "__main__":
    main()
