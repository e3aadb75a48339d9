"""K15Fields: every K15-specific field of :class:`~rllib_k15.algorithm.config.K15Config`.

One typed dataclass attribute per field, with its default and its trade-off in
``metadata["help"]``. This is the single source of truth for the K15 fields: ``K15Config``'s
attributes and defaults, the keywords of ``K15Config.training()`` and
``rllib_k15.algorithm.config.K15_FIELDS`` (``{name: (default, help)}``, which the trainer,
strict experiment files and the tests read) all follow it. Imports neither Ray nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class K15Fields:
    """The K15 fields of ``K15Config``: name, type, default and help (``metadata["help"]``).

    ``dataclasses.fields(K15Fields)`` lists them in declaration order; ``K15Config`` exposes
    each one as an attribute of the same name and type, settable through ``.training()``.
    """

    hf_model: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "Policy to train: a model-registry name (`k15 model list`) or a local HF "
            "directory."
        },
    )
    loss: str = field(
        default="opmd",
        metadata={
            "help": "Registered policy loss (rllib_k15.core.losses.LossType): `opmd` Kimi k1.5 eq. "
            "(3); comparison algorithms (rllib_k15.core.losses.grpo, .rest, .o1_pruner) `grpo` "
            "DeepSeekMath (group mean/std advantage, token-level clipped ratio, KL to the initial "
            "model; ignores `tau` and `logprob_reduction`), `rest` (NLL of the best correct "
            "responses, no negative gradient: learns only from problems it already solves), "
            "`o1_pruner` (length-harmonizing reward with PPO clip; needs "
            "`o1_pruner_reference_stats`; ignores task reward shaping)."
        },
    )
    loss_aggregation: str = field(
        default="seq_mean_token_mean",
        metadata={
            "help": "`grpo`: how per-token losses become the batch loss "
            "(rllib_k15.core.losses.registry.aggregate_tokens): `seq_mean_token_mean` (the "
            "paper's: each response weighs the same, its tokens share it), `token_mean` (DAPO: "
            "each token weighs the same, so long responses weigh more) or `seq_mean_token_sum` "
            "(no length normalisation). The sequence-level losses (`opmd`, `o1_pruner`, `rest`) "
            "refuse other values: their per-sequence quantity is set by `logprob_reduction`."
        },
    )
    clip_eps: float = field(
        default=0.2,
        metadata={
            "help": "`grpo` / `o1_pruner`: importance ratio π_θ/π_θi clipped to [1−ε, 1+ε]. Only "
            "acts from the second optimizer step of an iteration on (the first has ratio 1); "
            "smaller = more conservative within an iteration, larger lets π_θ move further from "
            "π_θi."
        },
    )
    grpo_kl_beta: float = field(
        default=0.04,
        metadata={
            "help": "`grpo`: β of the per-token k3 KL to the FIXED initial model (DeepSeekMath: "
            "0.04). > 0 keeps a frozen copy of the start weights on each learner (one more model "
            "in memory, one more forward pass per iteration) and anchors long runs; 0 = no "
            "reference model (cheaper; the policy may drift further)."
        },
    )
    rest_top_k: int = field(
        default=1,
        metadata={
            "help": "`rest`: correct responses fitted per problem, highest shaped reward first. 1 "
            "= the report's 'best response'; 0 = every correct one (more data per iteration, less "
            "selective). Problems without a correct response contribute nothing."
        },
    )
    o1_pruner_lambda: float = field(
        default=2.0,
        metadata={
            "help": "`o1_pruner`: λ of the accuracy term λ(A − Â_ref). Larger protects accuracy (a "
            "right answer where the reference model is often wrong earns more); smaller pushes "
            "harder on length."
        },
    )
    o1_pruner_reference_stats: str | None = field(
        default=None,
        metadata={
            "help": "`o1_pruner`: JSON file of per-problem L̂_ref (mean tokens) and Â_ref "
            "(accuracy) of K samples of the start model, made before training by "
            "rllib_k15.long2short.collect.collect_reference_stats (K is recorded in the file). "
            "Required for `o1_pruner`."
        },
    )
    tau: float = field(
        default=0.1,
        metadata={
            "help": "τ of the KL(π_θ‖π_θi) regulariser. Larger keeps each iteration closer to π_θi "
            "(stabler, slower); smaller learns faster but lets the log-ratio grow."
        },
    )
    baseline: str = field(
        default="mean",
        metadata={
            "help": "Estimate of τ·log Z: `mean` reward (report's practical default, unbiased-ish, "
            "bounded) or `logsumexp` τ·log mean exp(r/τ) (exact for the surrogate but → max reward "
            "as τ → 0)."
        },
    )
    # The batch defaults (8 problems × 4 samples × ≤128 tokens, micro-batches of 4) are
    # sized for the embedded 135M model on a 2-core CPU: the former 16 × 8 × 256 with
    # micro-batches of 8 took 7–20 min per iteration there and peaked at 9.6 GiB RSS
    # (activations and the 8 × 257 × 49152 logits of a micro-batch were ~5 GiB of it).
    # GPU runs set their own.
    samples_per_problem: int = field(
        default=4,
        metadata={
            "help": "k responses per problem. More samples = better baseline and more groups with "
            "reward variance, at linear generation cost."
        },
    )
    problems_per_iteration: int = field(
        default=8,
        metadata={"help": "Problems sampled per iteration. Batch = problems × k responses."},
    )
    max_response_tokens: int = field(
        default=128,
        metadata={
            "help": "Hard cap on response length; a response cut here is `truncated` and scores 0."
        },
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO dynamic sampling (rllib_k15.rollout.dynamic_sampling): drop the "
            "problems whose k responses all got the same reward (no OPMD/GRPO signal) and "
            "sample new ones, up to `dynamic_sampling_max_rounds` extra rounds, until the "
            "iteration has `problems_per_iteration` informative groups (else it trains on "
            "fewer). More generation per iteration, no compute on zero-signal groups. Not "
            "with partial rollouts."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=3,
        metadata={"help": "Extra sampling rounds per iteration that `dynamic_sampling` may use."},
    )
    async_rollouts: bool = field(
        default=False,
        metadata={
            "help": "Overlap generation and training (rllib_k15.algorithm.async_rollouts): the "
            "remote EnvRunners sample iteration i+1 with θ_i while the learner trains on "
            "iteration i's batch, so every batch after the first is one policy version old "
            "(metric `async/staleness`). The OPMD reference stays the learner's current policy "
            "(`reference_logprobs: engine` anchors to the sampler instead). Needs "
            "`num_env_runners` >= 1; not with partial rollouts or dynamic sampling. Pays where "
            "runners and learners have their own devices; on shared CPU cores it buys little."
        },
    )
    mask_truncated_responses: bool = field(
        default=False,
        metadata={
            "help": "DAPO overlong filtering: responses cut at `max_response_tokens` (finish "
            "reason `length`) are kept out of the loss (loss mask 0, so no gradient), while "
            "still counting in their group's baseline. A partial-rollout segment cut by the "
            "per-iteration budget is NOT truncated: it is continued, and only a finished "
            "response that hit the hard cap is. Default off: the report's recipe trains on "
            "them with reward 0."
        },
    )
    overlong_buffer_tokens: int = field(
        default=0,
        metadata={
            "help": "DAPO soft overlong punishment (rllib_k15.core.rewards.soft_overlong_penalty):"
            " responses longer than `max_response_tokens` − this get a penalty rising linearly "
            "to `overlong_penalty_weight` at the cap. 0 = off. Acts on the whole response "
            "length, never on a partial-rollout segment; adds to (does not replace) the Kimi "
            "length reward."
        },
    )
    overlong_penalty_weight: float = field(
        default=1.0,
        metadata={
            "help": "Size of the soft overlong punishment at the cap (reward −weight there)."
        },
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature of the rollout engine. 1.0 samples π_θi itself, which "
            "the OPMD derivation assumes."
        },
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus sampling; < 1 makes samples deviate from π_θi (biases the off-policy "
            "estimate)."
        },
    )
    logprob_reduction: str = field(
        default="sum",
        metadata={
            "help": "log π(y|x) as the `sum` of token log-probs (the report's sequence-level "
            "quantity) or the `token_mean` (length-normalised; weaker length bias, smaller "
            "gradient scale)."
        },
    )
    length_penalty_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the Kimi length reward added to the task reward after warm-up. 0 "
            "disables it."
        },
    )
    length_penalty_warmup_iters: int = field(
        default=0,
        metadata={
            "help": "Iterations without the length reward at the start (the report warms up so the "
            "penalty does not slow early learning)."
        },
    )
    num_epochs: int = field(
        default=1,
        metadata={
            "help": "Passes over each iteration's batch. >1 moves further from π_θi per iteration "
            "(the τ term holds it back)."
        },
    )
    minibatch_size: int = field(
        default=16,
        metadata={
            "help": "Responses per optimizer step. Batch / minibatch_size optimizer steps per "
            "epoch."
        },
    )
    micro_batch_size: int = field(
        default=4,
        metadata={
            "help": "Responses per forward/backward pass (gradient accumulation). Lower saves "
            "memory, costs speed; no effect on the maths."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Padding-free learner batches (rllib_k15.core.packing): micro-batches hold "
            "up to `micro_batch_size` x the longest response's tokens instead of a fixed row "
            "count, and their rows are packed end to end (position ids restart per row, "
            "block-diagonal attention through the model's own attention implementation), so "
            "the learner computes no padded positions. Same loss up to float summation order. "
            "Plain and DeepSpeed learners."
        },
    )
    padding_free_bin_tokens: int | None = field(
        default=None,
        metadata={
            "help": "With `padding_free`: positions per packed row. None = the micro-batch's "
            "longest row, so no packed row costs more attention than the padded batch (with "
            "SDPA/eager the attention inside a packed row is a dense block-diagonal mask, "
            "O(bin²)). With `attn_implementation: flash_attention_2` (varlen kernels, GPUs) "
            "set it to the micro-batch budget, e.g. 8192: one packed row, nothing wasted."
        },
    )
    shared_prompt_packing: bool = field(
        default=False,
        metadata={
            "help": "Shared-prompt packing (rllib_k15.core.shared_prompts): the responses of "
            "one prompt in a micro-batch are computed with ONE copy of the prompt (a 4-D "
            "attention mask: each response sees the prompt and itself, never another "
            "response), so a group of k costs P + k·R positions instead of k·(P + R). Same "
            "log-probs and gradients up to float summation order. Micro-batches hold whole "
            "groups, costed in packed positions, up to `micro_batch_size` x the longest "
            "row's tokens (a larger group is split). Needs `attn_implementation` sdpa or "
            "eager (not flash_attention_2: no custom masks); not with image problems."
        },
    )
    shared_prompt_bin_tokens: int | None = field(
        default=None,
        metadata={
            "help": "With `shared_prompt_packing`: at most this many positions per packed "
            "sequence (a group longer than that is split, each part with its own prompt "
            "copy). The attention inside a sequence is a dense mask, O(positions²): set it "
            "for long responses (e.g. 2-4x the longest row). None = a group is never split."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "The learner model's attention kernel, passed to transformers' "
            "from_pretrained: `sdpa`, `eager`, `flash_attention_2` (GPU, flash-attn "
            "installed), ... None = transformers' default (sdpa)."
        },
    )
    lora: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "LoRA adapters through peft (rllib_k15.algorithm.lora), e.g. {r: 16, alpha: "
            "32, dropout: 0.0, target_modules: [q_proj, v_proj]} (default targets: every linear "
            "layer of a block). Only the adapters train; weight sync and `k15 export` send "
            "merged weights W + (α/r)·B·A. None = full fine-tuning. Not with `deepspeed`."
        },
    )
    optimizer: str = field(
        default="adamw",
        metadata={
            "help": "`adamw`, or `muon`: torch.optim.Muon (Newton-Schulz orthogonalised "
            "momentum) on the 2-D hidden weights with the update RMS matched to AdamW's, AdamW "
            "on embeddings, head and norms (rllib_k15.algorithm.learner.muon_param_split), so "
            "`lr` and `weight_decay` carry over; Newton-Schulz in bf16 where bf16 is native, "
            "else fp32 (rllib_k15.algorithm.muon). `reset_optimizer_each_iteration` resets both. "
            "Not with `deepspeed` (DeepSpeed builds its own optimizer)."
        },
    )
    muon_update_rms: float = field(
        default=0.2,
        metadata={
            "help": "`optimizer: muon` only: the RMS of a Muon step per entry, in units of `lr` "
            "(Muon's lr = lr * muon_update_rms / 0.2 with torch's `match_rms_adamw`). 0.2 is "
            "Kimi's match to AdamW's typical update RMS over a long run; right after an "
            "optimizer reset AdamW's steps have RMS ~1 x lr, so with "
            "`reset_optimizer_each_iteration` and few steps per iteration 1.0 moves the hidden "
            "matrices as far as AdamW does. The AdamW groups keep `lr`."
        },
    )
    weight_decay: float = field(
        default=0.0,
        metadata={
            "help": "AdamW weight decay. RL fine-tuning usually uses 0: the τ term already anchors "
            "θ to the previous iterate."
        },
    )
    adam_betas: tuple[float, float] = field(
        default=(0.9, 0.99),
        metadata={
            "help": "AdamW betas. With a reset every iteration, a short β2 horizon lets the second "
            "moment warm up within one iteration."
        },
    )
    reference_logprobs: str = field(
        default="learner",
        metadata={
            "help": "Where log π_θi (the τ-term's and the clip's reference) comes from. `learner`: "
            "one extra forward pass of the learner over the batch at iteration start (exact; also "
            "logs the engine/learner gap as logp_mismatch_*). `engine`: the log-probs the engine "
            "returned while sampling, no extra pass (~20 % of a CPU iteration in "
            "bench/rl_iteration.py). Valid only when the engine samples from π_θi unmodified: "
            "temperature 1, top_p 1, no partial rollouts; the engine/learner numeric gap (1.7e-5 "
            "per token in fp32 here, ~1e-2 in bf16 on GPUs) then enters the loss. Check "
            "logp_mismatch with `learner` before switching."
        },
    )
    reset_optimizer_each_iteration: bool = field(
        default=True,
        metadata={
            "help": "Reset optimizer state at each iteration start (report §2.3.2: each iteration "
            "is a new problem). Off = moments carry over (ablation)."
        },
    )
    autocast_bf16: bool | str = field(
        default="auto",
        metadata={
            "help": "Learner forward/backward in bf16 autocast over fp32 master weights: ≈4× "
            "faster matmuls on GPUs and AVX512-BF16/AMX CPUs, ~40× SLOWER where bf16 is emulated "
            "(AVX2-only CPUs). `auto` decides from the hardware (rllib_k15.hardware)."
        },
    )
    bf16_rounding: str = field(
        default="dither",
        metadata={
            "help": "How fp32 master weights become bf16 for a bf16 engine and the bf16-autocast "
            "learner forward (rllib_k15.core.rounding). `dither`: unbiased stochastic rounding "
            "with one dither per iteration shared by engine and learner, so updates far below the "
            "bf16 step (lr 1e-5 vs ~2e-4) still move the sampled policy — measured: the bf16 "
            "forward sees 98-100 % of the fp32 change in log π. `nearest`: round-to-nearest; on a "
            "bf16 checkpoint such updates round back to the old weights (the bf16 forward saw 10 % "
            "of the change) and small-lr runs stop learning. No effect in fp32."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute activations in backward: less memory for long responses, ~30% "
            "slower."
        },
    )
    engine: str = field(
        default="vllm",
        metadata={
            "help": "Rollout engine: `vllm` (product path) or `hf` (transformers.generate; "
            "reference, slow)."
        },
    )
    engine_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Extra keyword arguments for the engine constructor (e.g. kv_cache_gib, "
            "max_model_len, enforce_eager)."
        },
    )
    repeat_detection: bool = field(
        default=True,
        metadata={
            "help": "End responses that fell into a loop (rllib_k15.rollout.repetition: a periodic "
            "tail or a repeated n-gram). They are cut after one copy of the loop, not verified, "
            "and get `-repeat_penalty`. vLLM cannot stop a request mid-flight from Python, so the "
            "cut happens after generation: it saves training tokens and gives the penalty, not "
            "generation time."
        },
    )
    repeat_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Overrides of RepetitionConfig (max_period, min_repeats, min_tokens, "
            "ngram_size, max_ngram_repeats)."
        },
    )
    repeat_penalty: float = field(
        default=0.5,
        metadata={
            "help": "Reward of a looping response is −repeat_penalty (a wrong answer gets 0), so "
            "loops are pushed down harder than honest mistakes."
        },
    )
    sampling: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Problem sampling, the fields of rllib_k15.sampling.strategies.SamplingConfig: "
            "strategy (`uniform` | `curriculum` | `prioritized`), transition_iteration, "
            "hard_threshold, priority_floor."
        },
    )
    partial_rollout_max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Partial rollouts (report §2.6; rllib_k15.rollout.groups): each response gets "
            "at most this many NEW tokens per iteration; an unfinished one is stored and continued "
            "next iteration from where it stopped, under the new weights. None/0 = off. Smaller = "
            "an iteration no longer waits for its longest response (less idle engine time with "
            "heavy-tailed lengths) but more of each trained response comes from older policies, "
            "short siblings wait for their group, and every continuation re-reads its prefix "
            "(prefill). Must be < max_response_tokens."
        },
    )
    partial_rollout_train_old_segments: bool = field(
        default=False,
        metadata={
            "help": "Partial rollouts: whether tokens generated in earlier iterations (by older "
            "policies than π_θi) enter the loss. False (default) masks them out — the OPMD "
            "surrogate assumes samples from π_θi — at the cost of fewer trained tokens per "
            "response; True trains on whole responses (more signal, off-policy by up to the "
            "response's age). Reference log-probs are recomputed for the whole response either way."
        },
    )
    partial_rollout_max_groups: int | None = field(
        default=None,
        metadata={
            "help": "Partial rollouts: bound on problem groups waiting for unfinished members. "
            "While the store is full no new problem is sampled; nothing is evicted. None = "
            "problems_per_iteration × ⌈max_response_tokens / partial_rollout_max_tokens⌉: every "
            "group finishes within that many iterations, so the bound never holds new problems "
            "back. Smaller caps memory/checkpoint size and group age (fewer off-policy tokens) but "
            "starves the engine of new problems while long responses finish (measured in "
            "bench/partial_rollouts.py)."
        },
    )
    eval_interval: int = field(
        default=0,
        metadata={"help": "Evaluate held-out Pass@1 every N iterations (0 = never)."},
    )
    eval_problems: int = field(
        default=32,
        metadata={
            "help": "Held-out problems per evaluation: the first N problems of the env made "
            "with `env_config` + `eval_env_config` (the `test` split by default, see "
            "`use_splits`)."
        },
    )
    eval_samples: int = field(
        default=4,
        metadata={"help": "Samples per held-out problem (Pass@1 is averaged over them)."},
    )
    eval_env_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "env_config overrides for the held-out set. With `use_splits` (default) "
            "`split: test` and `size: eval_problems` are filled in: disjoint from training by "
            "construction (k15_envs.splits); another `seed` alone would draw from the same "
            "problem pool."
        },
    )
    use_splits: bool = field(
        default=True,
        metadata={
            "help": "Train on the env's `split: train` problems and evaluate on its "
            "`split: test` ones (disjoint by construction, a content hash decides) unless "
            "`env_config` / `eval_env_config` set `split` themselves (`split: null` = unsplit). "
            "Envs without a `split` argument are left alone "
            "(rllib_k15.algorithm.default_splits)."
        },
    )
    env_runner_sample_timeout_s: float | str | None = field(
        default="auto",
        metadata={
            "help": "Deadline (s) of each remote EnvRunner sampling call: a runner that is alive "
            "but stuck (wedged engine, verifier that never returns) past it is killed, restarted "
            "by RLlib's fault tolerance and its shard redone (metric `k15/env_runners_hung`). "
            "'auto' = 120 s + the shard's token budget (problems × samples × max tokens) at "
            "`env_runner_min_tokens_per_s`; None = wait forever. Local runners "
            "(num_env_runners=0) run in the driver and have no deadline."
        },
    )
    env_runner_min_tokens_per_s: float = field(
        default=2.0,
        metadata={
            "help": "The slowest generation (tokens/s per runner) the 'auto' sampling deadline "
            "still calls alive. Lower = more patience with slow machines, later detection of a "
            "hung runner."
        },
    )
    deepspeed: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "DeepSpeed ZeRO for the learners instead of torch DDP (rllib_k15.distributed; "
            "docs/scaling.md): None = off, else a dict of DeepSpeedSettings — zero_stage (0-3; "
            "default 2: gradients + Adam state sharded at DDP's traffic; 3 also shards parameters "
            "for an all-gather per forward/backward), offload_optimizer / offload_params (host "
            "RAM; GPU only gains), bf16 ('auto'), overlap_comm, reduce_bucket_size, extra (raw "
            "DeepSpeed keys). Needs num_learners >= 1; `minibatch_size` stays global (each of N "
            "learners takes 1/N). Adam moments are sharded and not checkpointed."
        },
    )
