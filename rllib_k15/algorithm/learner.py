"""Learner for K15MirrorDescent: reference log-probs, optimizer reset, OPMD updates.

One call of :meth:`K15TorchLearner.update` is one mirror-descent iteration i:

1. score every response with the current weights θ_i (no grad) -> ``ref_logp`` (π_θi is
   frozen for the whole iteration). By default the engine's sampling log-probs are not
   used as the reference because they differ numerically (their gap is logged as
   ``logp_mismatch_*``); ``reference_logprobs="engine"`` uses them and skips this pass;
2. reset the optimizer state (each iteration is a new optimisation problem, report §2.3.2);
3. RLlib's minibatch loop: one optimizer step per minibatch, each minibatch split into
   micro-batches whose gradients are accumulated (sequence batches do not fit at once).

The loss itself is a registered pure function (:mod:`rllib_k15.core.losses`), selected by
``config.loss``; before the minibatch loop the learner also computes that loss's per-row
signal over the whole batch and, for a KL to the fixed initial model (GRPO, β > 0), the
initial model's log-probs (:mod:`rllib_k15.algorithm.loss_prep`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.policy.sample_batch import MultiAgentBatch

from rllib_k15.algorithm.columns import (
    ADVANTAGES,
    ATTENTION_MASK,
    IMAGE_PREFIX,
    INIT_LOGP,
    INPUT_IDS,
    LOSS_MASK,
    REF_LOGP,
    RESPONSE_MASK,
    SAMPLE_LOGP,
    TOKEN_LOGP,
    image_columns,
)
from rllib_k15.algorithm.loss_prep import (
    build_initial_module,
    grouped_rows,
    load_reference_stats,
    loss_params,
)
from rllib_k15.algorithm.muon import K15Muon, muon_lr, newton_schulz_dtype
from rllib_k15.core.losses import (
    LossInputs,
    compute_policy_loss,
    micro_batch_share,
    needs_initial_reference,
    prepare_advantages,
    sequence_logprob,
)
from rllib_k15.core.packing import first_fit_decreasing
from rllib_k15.core.shared_prompts import shared_prompt_groups
from rllib_k15.metric_names import (
    GRAD_NORM,
    LOGP_MISMATCH_MAX,
    LOGP_MISMATCH_MEAN,
    OPTIMIZER_RESETS,
    TRAIN_TOKENS,
)


def _micro_batches(
    attention_mask, micro_batch_size: int, padding_free: bool = False
) -> list[tuple[Any, int]]:
    """Row groups, longest rows together, each with the width (max real length) its padding
    can be trimmed to. Rows are sorted by length so short responses are not padded to the
    longest one in the batch; the loss is a row mean, so the order does not change it.

    Padded: at most ``micro_batch_size`` rows per group. ``padding_free``: a group takes rows
    until their real tokens would pass ``micro_batch_size`` × the longest row — the memory
    of the widest padded group — so groups of short rows hold more of them (the module packs
    them, :mod:`rllib_k15.core.packing`)."""
    lengths = np.asarray(attention_mask.sum(-1)).reshape(-1)
    order = np.argsort(-lengths, kind="stable")
    if not padding_free:
        groups = [order[s : s + micro_batch_size] for s in range(0, len(order), micro_batch_size)]
    else:
        budget, groups, current, used = micro_batch_size * int(lengths.max()), [], [], 0
        for row in order:
            if current and used + lengths[row] > budget:
                groups.append(np.asarray(current))
                current, used = [], 0
            current.append(row)
            used += int(lengths[row])
        groups.append(np.asarray(current))
    return [(idx, int(lengths[idx].max())) for idx in groups]


def _shared_prompt_micro_batches(
    input_ids, attention_mask, response_mask, micro_batch_size: int
) -> list[tuple[Any, int]]:
    """Micro-batches of WHOLE prompt groups for shared-prompt packing, costed in the
    positions the packed forward computes (P + Σ m_j per group, not k·(P + R)): groups fill
    first-fit-decreasing up to ``micro_batch_size`` × the longest row, the memory of the
    widest padded group. A group larger than that is split (each part repeats the prompt);
    otherwise no prompt is computed twice."""
    ids, mask = torch.as_tensor(input_ids), torch.as_tensor(attention_mask)
    lengths = np.asarray(mask.sum(-1)).reshape(-1)
    budget = micro_batch_size * int(lengths.max())
    groups = shared_prompt_groups(ids, mask, torch.as_tensor(response_mask), capacity=budget)
    bins = first_fit_decreasing([size for _, _, size in groups], budget)
    out = []
    for members in bins:
        rows = np.asarray(sorted(row for g in members for row in groups[g][1]))
        out.append((rows, int(lengths[rows].max())))
    return out


@contextlib.contextmanager
def _seeded_minibatch_shuffle(seed: int | None, module):
    """RLlib shuffles the batch per epoch (``num_epochs > 1``) with numpy's GLOBAL generator,
    which no checkpoint holds; seed it from (seed, policy version) for the update and give
    the caller's state back, so a resumed run shuffles exactly like an uninterrupted one."""
    from rllib_k15.core.rounding import version_seed

    saved = np.random.get_state()
    version = getattr(module, "rounding_version", 0)
    np.random.seed(version_seed(seed or 0, version, "minibatch-shuffle") % (1 << 32))
    try:
        yield
    finally:
        np.random.set_state(saved)


def muon_param_split(named_params) -> tuple[list, list]:
    """(Muon's, AdamW's) parameters: Muon orthogonalises matrix updates, so it takes the 2-D
    weights of the hidden layers; embeddings and the LM head (token-indexed rows, tied in
    SmolLM2), norms and biases stay on AdamW, as in Kimi's Muon work."""
    muon, adamw = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        matrix = param.ndim == 2 and "embed" not in name and "lm_head" not in name
        (muon if matrix else adamw).append(param)
    return muon, adamw


class K15TorchLearner(TorchLearner):
    """TorchLearner whose module is a :class:`CausalLMRLModule`."""

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """AdamW on every parameter, or (``optimizer="muon"``) Muon on the 2-D hidden
        weights and AdamW on the rest (:func:`muon_param_split`)."""
        module = self._module[module_id]
        params = self.get_parameters(module)
        adamw_kwargs = {"betas": tuple(config.adam_betas), "weight_decay": config.weight_decay}
        groups = {"default_optimizer": params}
        if config.optimizer == "muon":
            lm = (module.unwrapped() if hasattr(module, "unwrapped") else module).lm
            muon, adamw = muon_param_split(lm.named_parameters())
            groups = {"muon": muon, "adamw": adamw}
        for name, group in groups.items():
            group_lr = config.lr
            if name == "muon":
                # Kimi's Muon recipe: the update's RMS matched to AdamW's (0.2 · lr), so the
                # AdamW learning rate and weight decay carry over; `muon_update_rms` rescales
                group_lr = muon_lr(config.lr, config.muon_update_rms)
                optimizer = K15Muon(
                    group, lr=group_lr, weight_decay=config.weight_decay,
                    adjust_lr_fn="match_rms_adamw", ns_dtype=newton_schulz_dtype(group[0].device),
                )  # fmt: skip
            else:
                optimizer = torch.optim.AdamW(group, lr=group_lr, **adamw_kwargs)
            self.register_optimizer(
                module_id=module_id, optimizer_name=name, optimizer=optimizer, params=group,
                lr_or_lr_schedule=group_lr,
            )  # fmt: skip

    def build(self) -> None:
        super().build()
        self._loss_params = loss_params(self.config)
        self._initial_module = None  # frozen π_init, only when the loss has a KL to it
        if needs_initial_reference(self.config.loss, self._loss_params):
            module = self.module[next(iter(self.module.keys()))]
            module = module.unwrapped() if hasattr(module, "unwrapped") else module
            self._initial_module = build_initial_module(module)
        self._reference_stats = load_reference_stats(self.config)  # O1-Pruner, else None

    # ----------------------------------------------------------------- iteration start
    def reset_optimizer_state(self) -> None:
        """Forget Adam (and Muon) moments and step counts (report: reset every iteration)."""
        for optim in self._optimizer_parameters:
            optim.state.clear()
        self.metrics.log_value(OPTIMIZER_RESETS, 1, reduce="sum")

    @torch.no_grad()
    def compute_reference_logprobs(self, columns: dict[str, np.ndarray], module=None) -> np.ndarray:
        """log π_θi per token for every row, in micro-batches. Returns (B, T) float32.

        ``module``: score with another policy instead (the frozen initial one for GRPO's KL).
        """
        if module is None:
            module = self.module[next(iter(self.module.keys()))]
            module = module.unwrapped() if hasattr(module, "unwrapped") else module
        was_training = module.training
        module.eval()
        input_ids, attention = columns[INPUT_IDS], columns[ATTENTION_MASK]
        out = np.zeros(input_ids.shape, dtype=np.float32)
        for rows, width in self._micro_batches(columns):
            batch = {
                INPUT_IDS: torch.as_tensor(input_ids[rows, :width]),
                ATTENTION_MASK: torch.as_tensor(attention[rows, :width]),
                RESPONSE_MASK: torch.as_tensor(columns[RESPONSE_MASK][rows, :width]),
            }
            for name, column in image_columns(columns).items():  # image problems
                batch[IMAGE_PREFIX + name] = torch.as_tensor(column[rows])
            out[rows, :width] = module.forward_train(batch)[TOKEN_LOGP].float().numpy()
        module.train(was_training)
        return out * columns[RESPONSE_MASK]

    def update(self, batch: MultiAgentBatch | None = None, *, training_data=None, **kwargs) -> Any:
        if training_data is not None:
            training_data.solve_refs()
            batch = training_data.batch
        if not isinstance(batch, MultiAgentBatch):
            raise ValueError(
                f"K15TorchLearner.update expects a MultiAgentBatch of padded sequences, got "
                f"{type(batch).__name__} (episodes are not supported: see batching.py)"
            )
        for sample_batch in batch.policy_batches.values():
            if self.config.reference_logprobs == "engine":  # sampled from π_θi as is
                sample_batch[REF_LOGP] = np.asarray(sample_batch[SAMPLE_LOGP], dtype=np.float32)
            else:
                ref = self.compute_reference_logprobs(sample_batch)
                sample_batch[REF_LOGP] = ref
                self._log_logp_mismatch(ref, sample_batch[SAMPLE_LOGP], sample_batch[RESPONSE_MASK])
            if self._initial_module is not None:
                init = self.compute_reference_logprobs(sample_batch, self._initial_module)
                sample_batch[INIT_LOGP] = init
            self._prepare_advantages(sample_batch)
        if self.config.reset_optimizer_each_iteration:
            self.reset_optimizer_state()
        with _seeded_minibatch_shuffle(self.config.seed, self._policy_modules()[0]):
            results = super().update(batch=batch, **kwargs)
        for module in self._policy_modules():
            module.advance_rounding()  # θ_{i+1}: the next version's bf16 dither
        return results

    def _policy_modules(self) -> list:
        modules = [self.module[mid] for mid in self.module.keys()]
        return [m.unwrapped() if hasattr(m, "unwrapped") else m for m in modules]

    def _prepare_advantages(self, sample_batch) -> None:
        """The loss's per-row signal over the whole batch (groups intact) -> ``ADVANTAGES``."""
        rows = grouped_rows(sample_batch, self._reference_stats)
        advantages, metrics = prepare_advantages(self.config.loss, rows, self._loss_params)
        sample_batch[ADVANTAGES] = advantages
        for name, value in metrics.items():
            self.metrics.log_value(name, value, window=1)

    def _log_logp_mismatch(self, ref: np.ndarray, sampled: np.ndarray, mask: np.ndarray) -> None:
        diff = np.abs(ref - sampled)[mask.astype(bool)]
        if diff.size:
            self.metrics.log_value(LOGP_MISMATCH_MEAN, float(diff.mean()), window=1)
            self.metrics.log_value(LOGP_MISMATCH_MAX, float(diff.max()), window=1)

    # ----------------------------------------------------------------- one optimizer step
    def _uncompiled_update(self, batch: dict, **kwargs):
        """Gradient accumulation over micro-batches, then one optimizer step."""
        ((module_id, module_batch),) = batch.items()
        n_rows = len(module_batch[INPUT_IDS])
        module = self.module[module_id]
        for optim in self._optimizer_parameters:
            optim.zero_grad(set_to_none=True)
        total_loss = torch.zeros(())
        minibatch_tokens = float(module_batch[LOSS_MASK].sum())
        groups = self._micro_batches(module_batch)
        for idx, (rows, width) in enumerate(groups):
            rows = torch.as_tensor(rows)
            micro = {  # token columns trimmed to the group's width; per-row ones (images) not
                k: (v[rows, :width] if v.dim() == 2 and not k.startswith(IMAGE_PREFIX) else v[rows])
                for k, v in module_batch.items()
            }
            last = idx == len(groups) - 1
            sync = (
                contextlib.nullcontext()
                if last or not hasattr(module, "no_sync")
                else module.no_sync()
            )
            with sync:
                fwd_out = self.module.forward_train({module_id: micro})
                loss = self.compute_loss_for_module(
                    module_id=module_id, config=self.config, batch=micro, fwd_out=fwd_out[module_id]
                )
                share = micro_batch_share(
                    self._loss_params.aggregation, len(rows), n_rows,
                    float(micro[LOSS_MASK].sum()), minibatch_tokens,
                )  # fmt: skip
                weighted = loss * share
                self._backward(weighted)
            total_loss = total_loss + weighted.detach()
        grad_norm = self._step_optimizers()
        self.metrics.log_value((module_id, GRAD_NORM), grad_norm, window=1)
        return fwd_out, {module_id: total_loss}, {}

    def _micro_batches(self, columns) -> list[tuple[Any, int]]:
        """(rows, width) per micro-batch of a batch's columns (numpy or torch)."""
        cfg = self.config
        if cfg.shared_prompt_packing and RESPONSE_MASK in columns:
            return _shared_prompt_micro_batches(
                columns[INPUT_IDS], columns[ATTENTION_MASK], columns[RESPONSE_MASK],
                cfg.micro_batch_size,
            )  # fmt: skip
        return _micro_batches(columns[ATTENTION_MASK], cfg.micro_batch_size, cfg.padding_free)

    def _backward(self, loss: torch.Tensor) -> None:
        """Accumulate one micro-batch's gradients (the DeepSpeed learner uses its engine)."""
        loss.backward()

    def _step_optimizers(self) -> float:
        """Clip and apply the accumulated gradients; returns their global norm after
        postprocessing (the DeepSpeed learner lets its engine reduce, clip and step)."""
        grads = {pid: p.grad for pid, p in self._params.items() if p.grad is not None}
        grads = self.postprocess_gradients(grads)
        grad_norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads.values()))
        self.apply_gradients(grads)
        return grad_norm.item()

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        mask = batch[LOSS_MASK]
        logp = sequence_logprob(fwd_out[TOKEN_LOGP], mask, config.logprob_reduction)
        ref_logp = sequence_logprob(batch[REF_LOGP], mask, config.logprob_reduction)
        inputs = LossInputs(
            logp=logp,
            ref_logp=ref_logp,
            advantages=batch[ADVANTAGES],
            token_logp=fwd_out[TOKEN_LOGP],
            token_ref_logp=batch[REF_LOGP],
            token_init_logp=batch.get(INIT_LOGP),
            token_mask=mask,
        )
        loss, metrics = compute_policy_loss(config.loss, inputs, self._loss_params)
        for name, value in metrics.items():
            self.metrics.log_value((module_id, name), value.item(), window=1)
        self.metrics.log_value((module_id, TRAIN_TOKENS), int(mask.sum().item()), reduce="sum")
        return loss

    # ----------------------------------------------------------------- weight export
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        module = self.module[next(iter(self.module.keys()))]
        module = module.unwrapped() if hasattr(module, "unwrapped") else module
        return module.hf_state_dict()
