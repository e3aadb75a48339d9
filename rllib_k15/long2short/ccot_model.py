"""CCoT modules on one frozen base model: φ ("ccot") and ψ ("decode") as two peft LoRA
adapters, the projection back to the embedding space and the END head; their training,
inference and the saved directory. The math is in :mod:`rllib_k15.long2short.ccot`.

Contemplation (φ active), for a batch of left-padded prompts x (B, T):

    h_0 = final hidden state of the last prompt position
    c_j = P(h_{j−1})             (the j-th contemplation embedding, input at position T+j)
    h_j, s_j = final and layer-l hidden states at position T+j,   j = 1..K

    P(h) = ρ · y / RMS(y),  y = W h + b,  W initialised to I, b to 0

with ρ = RMS of the input-embedding table: every contemplation embedding has the scale of
a token embedding, so the feedback loop cannot blow up while W learns. END reads h_j (detached:
its loss does not move φ); at inference the loop stops after step j when
σ(END(h_j)) > threshold, or at ``max_contemplation``. ψ then reads [embed(x); c_1..c_k]
and decodes the answer greedily. Hidden states need the model itself, so this runs on
Hugging Face transformers only — vLLM cannot feed continuous embeddings back step by step.

Saved directory: ``ccot.json`` (:class:`CCoTSettings`), ``heads.safetensors`` (P and END),
``adapters/ccot/`` and ``adapters/decode/`` (peft adapter directories).

The last section is the resumable run behind ``k15 long2short ccot`` (:func:`run_ccot`):
data, full-CoT cost, then per ratio targets → φ+END → ψ → eval, each step stored with a
key of its settings and skipped when the key matches. Launch::

    k15 long2short ccot --model smollm2-135m-instruct --env k15/Arithmetic-v0 \
        --env-kwargs '{"difficulty": 2}' --out runs/ccot --results results/eval.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rllib_k15.long2short.ccot import (
    CCOT_DECODE_LOSS,
    CCOT_END_LOSS,
    CCOT_LOSS,
    Phase,
    contemplation_loss,
    end_loss,
    step_mask,
)
from rllib_k15.long2short.training import AdamWStep, StepLog, pad_token_id, run_epochs

__all__ = [
    "ADAPTERS",
    "CCoTHeads",
    "CCoTModel",
    "CCoTSettings",
    "Contemplation",
    "Inference",
    "Phase",
    "contemplations",
    "full_cot_decode",
    "greedy_decode",
    "teacher_states",
    "train_decode",
    "train_phi",
]

logger = logging.getLogger(__name__)
ADAPTERS = ("ccot", "decode")
SETTINGS_FILE, HEADS_FILE, ADAPTER_DIR = "ccot.json", "heads.safetensors", "adapters"


@dataclass(frozen=True)
class CCoTSettings:
    """What a saved CCoT directory needs to run (``ccot.json``)."""

    base_model: str
    """Registered model name or HF directory of the frozen base."""
    layer: int
    """l: the hidden layer whose states φ matches (1..num_hidden_layers)."""
    ratio: float
    """r: k = ⌈r·m⌉ contemplation steps for a CoT of m tokens."""
    max_contemplation: int
    """Cap on contemplation steps at inference (END may stop earlier)."""
    end_threshold: float = 0.5
    """Stop after the step where σ(END) exceeds this."""
    answer_max_tokens: int = 32
    use_chat_template: bool = True
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )


class CCoTHeads(torch.nn.Module):
    """P (final hidden → input embedding, see the module docstring) and END (final hidden →
    stop logit, starting at 0: p = 0.5)."""

    def __init__(self, hidden: int, embed_rms: float = 1.0) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden, hidden)
        self.end = torch.nn.Linear(hidden, 1)
        self.register_buffer("embed_rms", torch.tensor(float(embed_rms)))
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(hidden))
            self.linear.bias.zero_()
            self.end.weight.zero_()
            self.end.bias.zero_()

    def proj(self, h: torch.Tensor) -> torch.Tensor:
        """P(h) = ρ · y / RMS(y), y = W h + b: (..., d) → (..., d) at the embeddings' scale."""
        y = self.linear(h)
        return self.embed_rms * y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)


@dataclass
class Contemplation:
    """inputs c (B, K, d), layer-l states s (B, K, d), END logits (B, K)."""

    inputs: torch.Tensor
    states: torch.Tensor
    end_logits: torch.Tensor


@dataclass(frozen=True)
class Inference:
    """One answered problem: text, token ids (EOS included), contemplation steps, time."""

    text: str
    answer_ids: list[int]
    steps: int
    truncated: bool
    seconds: float


def _lora_config(settings: CCoTSettings) -> Any:
    """The peft ``LoraConfig`` of both adapters."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        bias="none",
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )


def _embedding_rms(lm: Any) -> float:
    """ρ = RMS of the input-embedding table."""
    return float(lm.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())


def _left_pad(rows: Sequence[Sequence[int]], pad: int, device: torch.device):
    """(ids (B, T), mask (B, T), position ids (B, T)) of left-padded rows."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.as_tensor(list(row))
        mask[b, width - len(row) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


@torch.no_grad()
def greedy_decode(
    lm: Any,
    embeds: torch.Tensor,
    max_tokens: int,
    eos: int,
    forced: Sequence[int] | None = None,
) -> tuple[list[int], bool]:
    """Greedy decoding after ``embeds`` (1, T, d) with a KV cache: one forward per token
    (the last token is not fed back). ``forced``: emit these ids instead (same cost — the
    full-CoT timing). Returns (ids, truncated = hit ``max_tokens`` without EOS)."""
    limit = len(forced) if forced is not None else max_tokens
    out = lm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    ids: list[int] = []
    for t in range(limit):
        best = int(out.logits[0, -1].argmax())
        ids.append(int(forced[t]) if forced is not None else best)
        if (forced is None and ids[-1] == eos) or t + 1 == limit:
            break
        step = torch.tensor([[ids[-1]]], device=embeds.device)
        out = lm(
            input_ids=step, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1
        )
    return ids, forced is None and (not ids or ids[-1] != eos)


class CCoTModel:
    """The base model with the φ and ψ adapters, the heads and the settings."""

    def __init__(self, peft_model: Any, heads: CCoTHeads, tokenizer: Any, settings: CCoTSettings):
        self.model, self.heads, self.tokenizer = peft_model, heads, tokenizer
        self.settings = settings
        self.lm = peft_model.get_base_model()  # LoRA layers are injected in place
        self.backbone = self.lm.get_decoder()
        self.device = next(self.lm.parameters()).device
        self.heads.to(self.device)
        num_layers = int(self.lm.config.num_hidden_layers)
        if not 1 <= settings.layer <= num_layers:
            raise ValueError(f"--layer ({settings.layer}) must be in 1..{num_layers}")

    @classmethod
    def create(cls, base: Any, tokenizer: Any, settings: CCoTSettings) -> CCoTModel:
        """Fresh adapters (B = 0: both start as the base model) and heads on ``base``."""
        from peft import get_peft_model

        model = get_peft_model(base, _lora_config(settings), adapter_name=ADAPTERS[0])
        model.add_adapter(ADAPTERS[1], _lora_config(settings))
        heads = CCoTHeads(int(base.config.hidden_size), _embedding_rms(base))
        return cls(model, heads, tokenizer, settings)

    def reset_decode(self) -> None:
        """A fresh ψ adapter (before retraining it on a new φ)."""
        self.model.set_adapter(ADAPTERS[0])
        self.model.delete_adapter(ADAPTERS[1])
        self.model.add_adapter(ADAPTERS[1], _lora_config(self.settings))

    # ---------------------------------------------------------------- save / load
    def save(self, out_dir: str | Path, settings_only: bool = False) -> Path:
        """Both adapters, the heads and the settings (only these) into ``out_dir``."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self.settings), indent=2))
        if settings_only:
            return out
        self.model.save_pretrained(out / ADAPTER_DIR, selected_adapters=list(ADAPTERS))
        state = {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        save_file(state, out / HEADS_FILE)
        return out

    @classmethod
    def load(cls, out_dir: str | Path, base: Any = None, tokenizer: Any = None) -> CCoTModel:
        """A saved CCoT directory; ``base``/``tokenizer`` default to its ``base_model``."""
        from peft import PeftModel
        from safetensors.torch import load_file

        from rllib_k15.models import load_hf_model, load_tokenizer

        out = Path(out_dir)
        if not (out / SETTINGS_FILE).is_file():
            raise FileNotFoundError(f"{out} is not a CCoT directory: no {SETTINGS_FILE}")
        raw = json.loads((out / SETTINGS_FILE).read_text())
        settings = CCoTSettings(**{**raw, "target_modules": tuple(raw["target_modules"])})
        base = base if base is not None else load_hf_model(settings.base_model, dtype="float32")
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(settings.base_model)
        first, second = (out / ADAPTER_DIR / name for name in ADAPTERS)
        model = PeftModel.from_pretrained(base, first, adapter_name=ADAPTERS[0], is_trainable=True)
        model.load_adapter(second, adapter_name=ADAPTERS[1], is_trainable=True)
        heads = CCoTHeads(int(base.config.hidden_size))
        heads.load_state_dict(load_file(out / HEADS_FILE))
        return cls(model, heads, tokenizer, settings)

    # ---------------------------------------------------------------- forward pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of token ids (the embedding table carries no LoRA)."""
        return self.lm.get_input_embeddings()(ids)

    @property
    def pad(self) -> int:
        return pad_token_id(self.tokenizer)

    def contemplate(
        self, prompts: Sequence[Sequence[int]], steps: int, until_end: bool = False
    ) -> Contemplation:
        """K = ``steps`` contemplation steps with φ (module docstring). ``until_end`` (one
        prompt): stop after the first step whose END probability exceeds the threshold."""
        if until_end and len(prompts) != 1:
            raise ValueError("stopping on END needs one prompt at a time")
        self.model.set_adapter(ADAPTERS[0])
        ids, mask, pos = _left_pad(prompts, self.pad, self.device)
        out = self.backbone(
            inputs_embeds=self.embed(ids), attention_mask=mask, position_ids=pos, use_cache=True
        )
        h, cache, nxt = out.last_hidden_state[:, -1], out.past_key_values, pos[:, -1:] + 1
        ones = torch.ones_like(mask[:, :1])
        inputs, states, finals = [], [], []
        for j in range(steps):
            inputs.append(self.heads.proj(h))  # (B, d)
            mask = torch.cat([mask, ones], dim=1)
            out = self.backbone(
                inputs_embeds=inputs[-1][:, None],
                attention_mask=mask,
                position_ids=nxt + j,
                past_key_values=cache,
                use_cache=True,
                output_hidden_states=True,
            )
            cache, h = out.past_key_values, out.last_hidden_state[:, -1]
            states.append(out.hidden_states[self.settings.layer][:, -1])
            finals.append(h.detach())
            if until_end and torch.sigmoid(self.heads.end(h)).item() > self.settings.end_threshold:
                break
        end_logits = self.heads.end(torch.stack(finals, dim=1)).squeeze(-1)  # (B, K)
        return Contemplation(torch.stack(inputs, 1), torch.stack(states, 1), end_logits)

    def decode_loss(
        self, batch: Sequence[tuple[Sequence[int], torch.Tensor, Sequence[int]]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """ψ's cross-entropy on the answer tokens of (prompt ids, contemplation (k, d),
        answer ids) rows: the sequence is [embed(prompt); c; embed(answer)], right-padded,
        and only the positions predicting an answer token count."""
        self.model.set_adapter(ADAPTERS[1])
        rows, labels = [], []
        for prompt, contemplation, answer in batch:
            ids = torch.tensor(list(prompt), device=self.device)
            ans = torch.tensor(list(answer), device=self.device)
            c = contemplation.to(self.device, self.embed(ids).dtype)
            rows.append(torch.cat([self.embed(ids), c, self.embed(ans)]))
            labels.append([-100] * (len(prompt) + len(c)) + list(answer))
        width = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), width, rows[0].shape[-1], device=self.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        target = torch.full((len(rows), width), -100, dtype=torch.long, device=self.device)
        for b, (row, lab) in enumerate(zip(rows, labels, strict=True)):
            embeds[b, : len(row)], mask[b, : len(row)] = row, 1
            target[b, : len(lab)] = torch.tensor(lab)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, T, V)
        loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), target[:, 1:].flatten(), ignore_index=-100
        )
        return loss, {CCOT_DECODE_LOSS: loss.item()}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def answer(self, prompt_ids: Sequence[int]) -> Inference:
        """prompt → contemplation until END (or the cap) → greedy answer with ψ."""
        started = time.perf_counter()
        c = self.contemplate([prompt_ids], self.settings.max_contemplation, until_end=True)
        self.model.set_adapter(ADAPTERS[1])
        prompt = self.embed(torch.tensor([list(prompt_ids)], device=self.device))
        embeds = torch.cat([prompt, c.inputs.to(prompt.dtype)], dim=1)
        eos = int(self.tokenizer.eos_token_id)
        ids, truncated = greedy_decode(self.lm, embeds, self.settings.answer_max_tokens, eos)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Inference(text, ids, c.inputs.shape[1], truncated, time.perf_counter() - started)


# -------------------------------------------------------------------- the base model alone


@torch.no_grad()
def teacher_states(
    lm: Any, layer: int, prompt_ids: Sequence[int], cot_ids: Sequence[int]
) -> torch.Tensor:
    """H (m, d): the frozen base's layer-l hidden states at the CoT positions of
    prompt + CoT (``lm`` a plain causal LM, no adapters)."""
    device = next(lm.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(cot_ids)], device=device)
    out = lm.get_decoder()(input_ids=ids, output_hidden_states=True)
    return out.hidden_states[layer][0, len(prompt_ids) :].float().cpu()


@torch.no_grad()
def full_cot_decode(
    lm: Any,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int] | None,
    max_tokens: int,
    eos: int,
) -> tuple[list[int], bool, float]:
    """The full-CoT way on the base model: decode ``response_ids`` token by token (the
    reference CoT), or greedily up to ``max_tokens`` when None; (ids, truncated, seconds)."""
    started = time.perf_counter()
    device = next(lm.parameters()).device
    embeds = lm.get_input_embeddings()(torch.tensor([list(prompt_ids)], device=device))
    ids, truncated = greedy_decode(lm, embeds, max_tokens, eos, forced=response_ids)
    return ids, truncated, time.perf_counter() - started


# -------------------------------------------------------------------- training


def _phase_log(name: str, loss: str, postfix: Callable[[dict], dict]) -> StepLog:
    return StepLog(
        name=name,
        loss=loss,
        grad_norm=f"{name}/grad_norm",
        describe=lambda m: " ".join(f"{k} {v:.4f}" for k, v in m.items()),
        postfix=postfix,
        logger=logger,
    )


def train_phi(
    ccot: CCoTModel,
    items: Sequence[tuple[Sequence[int], torch.Tensor]],
    variance: torch.Tensor | None,
    phase: Phase,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train φ, P and END on (prompt ids, targets (k, d)) rows: contemplation loss + END
    BCE per mini-batch. Returns the per-epoch contemplation losses and the last metrics."""
    trainable = torch.nn.ModuleDict({"lm": ccot.lm, "heads": ccot.heads})
    var = None if variance is None else variance.to(ccot.device)

    def batch_loss(batch: list[tuple[Sequence[int], torch.Tensor]]):
        ks = [len(t) for _, t in batch]
        c = ccot.contemplate([p for p, _ in batch], max(ks))
        targets = torch.nn.utils.rnn.pad_sequence([t for _, t in batch], batch_first=True)
        mask = step_mask(ks, max(ks)).to(ccot.device)
        mse, metrics = contemplation_loss(c.states, targets.to(ccot.device), mask, var)
        bce, end_metrics = end_loss(c.end_logits, ks)
        return mse + bce, {**metrics, **end_metrics}

    ccot.model.set_adapter(ADAPTERS[0])
    log = _phase_log(
        "ccot",
        CCOT_LOSS,
        lambda m: {"loss": f"{m[CCOT_LOSS]:.4f}", "end": f"{m[CCOT_END_LOSS]:.3f}"},
    )
    step = AdamWStep(trainable, phase.lr, phase.weight_decay, phase.max_grad_norm)
    result = run_epochs(trainable, list(items), batch_loss, phase, log, on_step, step)
    return {"epoch_losses": result.epoch_losses, "steps": result.steps, "last": result.last}


@torch.no_grad()
def contemplations(
    ccot: CCoTModel, prompts: Sequence[Sequence[int]], ks: Sequence[int], batch_size: int
) -> list[torch.Tensor]:
    """φ's first k_b contemplation embeddings (k_b, d) of every prompt (φ frozen)."""
    out: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch_size):
        chunk, k = prompts[start : start + batch_size], ks[start : start + batch_size]
        inputs = ccot.contemplate(chunk, max(k)).inputs.cpu()
        out.extend(inputs[b, : k[b]] for b in range(len(chunk)))
    return out


def train_decode(
    ccot: CCoTModel,
    items: Sequence[tuple[Sequence[int], torch.Tensor, Sequence[int]]],
    phase: Phase,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train ψ on (prompt ids, contemplation (k, d), answer ids) rows (answer CE only)."""
    ccot.model.set_adapter(ADAPTERS[1])
    log = _phase_log("decode", CCOT_DECODE_LOSS, lambda m: {"loss": f"{m[CCOT_DECODE_LOSS]:.4f}"})
    step = AdamWStep(ccot.lm, phase.lr, phase.weight_decay, phase.max_grad_norm)
    result = run_epochs(ccot.lm, list(items), ccot.decode_loss, phase, log, on_step, step)
    return {"epoch_losses": result.epoch_losses, "steps": result.steps, "last": result.last}
