"""The TRL side of :mod:`bench.rl_iteration`: TRL 1.16 ``GRPOTrainer`` on the same model,
prompts, samples, max tokens and reward as our iteration, timed per optimizer step.

    python -m bench.trl_grpo [--problems 4] [--samples 4] [--max-tokens 64] [--iterations 3]
        [--dtype float32] [--model smollm2-135m-instruct] [--child-out FILE]

Nothing is downloaded: the model is loaded from the local directory ``resolve_model``
gives (as a model object, in ``--dtype``), the dataset is built in memory from
k15/Arithmetic-v0, and the reward is that env's verifier. TRL's CPU path
(``use_vllm=False``: batched ``transformers.generate``). Settings that differ from TRL's
defaults, to match our iteration: ``bf16`` follows ``--dtype`` (TRL: True),
``gradient_checkpointing=False`` (TRL: True), a constant learning rate (TRL: linear decay),
one generation batch = one optimizer step of
``problems × samples`` completions, no shuffling, no checkpoints, no reporting.
TRL's own defaults kept: ``beta=0`` (no reference model), ``loss_type``, ``epsilon``.
Step time = wall time from ``on_step_begin`` to ``on_step_end``: generation, reward,
log-probs, backward and optimizer step (the step's batch is only prompts, fetched before).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class EnvReward:
    """TRL reward function: the k15/Arithmetic-v0 verifier (reward 0/1 per completion)."""

    __name__ = "k15_arithmetic_verifier"

    def __init__(self, size: int) -> None:
        import gymnasium as gym
        import k15_envs  # noqa: F401

        self.env = gym.make("k15/Arithmetic-v0", difficulty=1, size=size, seed=0).unwrapped

    def __call__(self, prompts, completions, problem_index, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        problems = [self.env.problem(int(i)) for i in problem_index]
        return [float(v.reward) for v in self.env.verify_batch(problems, texts)]


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from bench.common import arithmetic_prompts
    from bench.lockstep import Lockstep
    from rllib_k15.models import load_hf_model, load_tokenizer, resolve_model

    torch.manual_seed(0)
    path = resolve_model(args.model)
    prompts = arithmetic_prompts(args.problems)
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p}], "problem_index": i}
         for i, p in enumerate(prompts)]
    )  # fmt: skip
    marks: list[float] = []
    steps: list[float] = []
    trl_logs: list[dict] = []

    lock = Lockstep(args.lockstep_fds)

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            lock.wait()  # in lockstep: until it is this side's turn
            marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            steps.append(time.perf_counter() - marks[-1])
            lock.report({"seconds": steps[-1]})

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs:
                trl_logs.append({key: v for key, v in logs.items() if isinstance(v, int | float)})

    bf16 = args.dtype == "bfloat16"
    with tempfile.TemporaryDirectory() as out_dir:
        config = GRPOConfig(
            output_dir=out_dir,
            per_device_train_batch_size=args.problems * args.samples,
            num_generations=args.samples,
            max_completion_length=args.max_tokens,
            max_steps=args.iterations,
            gradient_accumulation_steps=1,
            num_iterations=1,
            learning_rate=1e-6,
            lr_scheduler_type="constant",  # ours: constant lr (TRL's default decays linearly)
            temperature=1.0,
            top_p=1.0,
            use_vllm=args.use_vllm,  # True: TRL's colocated vLLM (vllm_mode="colocate")
            vllm_mode="colocate",
            bf16=bf16,
            gradient_checkpointing=False,
            shuffle_dataset=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
            use_cpu=True,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=load_hf_model(path, dtype=args.dtype),
            reward_funcs=EnvReward(size=args.problems),
            args=config,
            train_dataset=dataset,
            processing_class=load_tokenizer(path),
            callbacks=[StepClock()],
        )
        trainer.train()
    # in lockstep: sit idle through the other side's extra turn (rl_iteration measures the
    # weight sync there), so that measurement does not share the cores with a TRL step
    lock.wait()
    lock.report({"idle": True})
    for i, s in enumerate(steps):
        print(f"[rl_iteration] TRL step {i}: {s:.1f} s", flush=True)
    key = "completions/mean_length"
    lengths = [log[key] for log in trl_logs if key in log]
    return {
        "step_seconds": steps,
        "generated_tokens": [n * args.problems * args.samples for n in lengths],  # per step
        "logs": trl_logs,
        "trl_settings": {"beta": config.beta, "loss_type": config.loss_type,
                         "bf16": config.bf16, "gradient_checkpointing": False,
                         "steps_per_generation": config.steps_per_generation},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3, help="optimizer steps")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--use-vllm", action="store_true", help="TRL's colocated vLLM route")
    parser.add_argument("--child-out", default=None, help="write the JSON result here")
    parser.add_argument("--lockstep-fds", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dtype == "auto":
        from rllib_k15.models import preferred_dtype

        args.dtype = preferred_dtype()
    result = run_trl(args)
    text = json.dumps(result, default=str)
    if args.child_out:
        Path(args.child_out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
