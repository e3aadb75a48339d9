"""LoRA weight sync, the two ways: merged weights reloaded in place vs vLLM's own LoRA path.

    python -m bench.lora_sync_paths [--model smollm2-135m-instruct] [--r 16] [--repeats 3]
        [--out bench/results/lora_sync_paths.json]

The training loop syncs a LoRA policy as merged weights W + (α/r)·B·A
(:func:`rllib_k15.algorithm.lora.merged_hf_state_dict`) into the engine, exactly like full
fine-tuning. vLLM can instead apply adapters per request (``enable_lora``, ``LoRARequest``).
One in-process vLLM engine with ``enable_lora=True`` (fp32, so the two paths can agree to
float rounding) measures both for an adapter of rank ``--r`` on every linear layer, its B
drawn at random so it changes the model:

- *merged*: :meth:`VLLMEngine`-style reload (``model_runner.reload_weights``) of the merged
  state, seconds per sync;
- *adapter*: ``save_pretrained`` of the adapter + the first request under a new
  ``LoRARequest`` id (vLLM loads it then) minus a request of a loaded adapter, seconds per
  sync;

and whether greedy decoding of the same prompts gives the same tokens both ways, with the
largest difference of their per-token log-probs. Not in ``make bench``: a measurement behind
docs/results/training_options, about 1-2 min.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from statistics import median

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: reload by reference
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    import torch
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from bench.common import Row, add_common_args, arithmetic_prompts, write_result
    from rllib_k15.algorithm.lora import apply_lora, merged_hf_state_dict
    from rllib_k15.engine.vllm_engine import _reload_weights  # the engine's in-place reload
    from rllib_k15.models import load_hf_model, load_tokenizer, resolve_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "lora_sync_paths")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.repeats = "tiny-random-llama", 2
    path = str(resolve_model(args.model))
    policy = apply_lora(load_hf_model(path, "float32"), {"r": args.r, "alpha": 2 * args.r})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:  # B = 0 at the start: make the adapter change the model
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    trainable = sum(q.numel() for q in policy.parameters() if q.requires_grad)
    llm = LLM(model=path, dtype="float32", enable_lora=True, max_lora_rank=args.r, seed=0,
              max_model_len=512, kv_cache_memory_bytes=1 << 29, enforce_eager=True)  # fmt: skip
    tok = load_tokenizer(path)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True)
               for q in arithmetic_prompts(8)]  # fmt: skip
    greedy = SamplingParams(max_tokens=32, temperature=0, logprobs=0)
    adapter_s, merged_s = [], []
    with tempfile.TemporaryDirectory(prefix="k15-lora-") as tmp:
        for i in range(args.repeats):
            start = time.perf_counter()
            policy.save_pretrained(Path(tmp) / f"v{i}")
            request = LoRARequest(f"v{i}", i + 1, str(Path(tmp) / f"v{i}"))
            by_adapter = llm.generate(prompts, greedy, lora_request=request, use_tqdm=False)
            first = time.perf_counter() - start
            start = time.perf_counter()
            llm.generate(prompts, greedy, lora_request=request, use_tqdm=False)
            adapter_s.append(first - (time.perf_counter() - start))  # the load, not the decode
        merged = merged_hf_state_dict(policy)
        for _ in range(args.repeats):
            start = time.perf_counter()
            llm.collective_rpc(_reload_weights, args=(list(merged.items()),))
            llm.reset_prefix_cache()
            merged_s.append(time.perf_counter() - start)
        by_weights = llm.generate(prompts, greedy, use_tqdm=False)
    same = sum(a.outputs[0].token_ids == b.outputs[0].token_ids
               for a, b in zip(by_adapter, by_weights))  # fmt: skip
    gaps = [abs(next(iter(x.values())).logprob - next(iter(y.values())).logprob)
            for a, b in zip(by_adapter, by_weights)
            for x, y in zip(a.outputs[0].logprobs, b.outputs[0].logprobs)
            if a.outputs[0].token_ids == b.outputs[0].token_ids]  # fmt: skip
    results = {
        "trainable_params": trainable,
        "adapter_sync_seconds": adapter_s,
        "merged_sync_seconds": merged_s,
        "adapter_mib": trainable * 4 / 2**20,
        "merged_mib": sum(t.numel() * t.element_size() for t in merged.values()) / 2**20,
        "greedy_same_prompts": same,
        "prompts": len(prompts),
        "max_logprob_gap": max(gaps) if gaps else None,
    }
    a, m = median(adapter_s), median(merged_s)
    rows = [
        Row("lora sync", "vLLM LoRA adapter vs merged reload, seconds per sync", a, "s", m,
            "merged weights", a / m, higher_is_better=False,
            note=f"{args.model}, r {args.r}; {results['adapter_mib']:.1f} vs "
            f"{results['merged_mib']:.0f} MiB fp32"),
        Row("lora sync", "greedy outputs equal, adapter vs merged", same, "", len(prompts),
            "prompts", note=f"max |Δ log-prob| {results['max_logprob_gap']}"),
    ]  # fmt: skip
    config = {"model": args.model, "r": args.r, "repeats": args.repeats}
    write_result("lora_sync_paths", args, config=config, results=results, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
