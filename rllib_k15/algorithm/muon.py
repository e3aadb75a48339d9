"""Muon for the learner: ``torch.optim.Muon`` with its Newton–Schulz iteration in a dtype the
hardware runs fast.

torch's Muon orthogonalises every update in bf16 (hard-coded). On a GPU or a CPU with native
bf16 (AVX512-BF16, AMX) that is the fast choice; on a CPU without it (AVX2-only) every bf16
matmul is emulated, ~40x slower than fp32, and the five Newton–Schulz steps over SmolLM2-135M's
210 hidden matrices took minutes per optimizer step. :class:`K15Muon` keeps torch's step
exactly where bf16 is native and runs the same iteration in fp32 elsewhere
(:func:`newton_schulz_dtype`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["K15Muon", "adjusted_lr", "muon_lr", "newton_schulz", "newton_schulz_dtype"]


def newton_schulz_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 (torch's choice) on CUDA and on CPUs with native bf16 dot products, else fp32."""
    from rllib_k15.hardware import cpu_has_fast_bf16

    if torch.device(device).type == "cpu" and not cpu_has_fast_bf16():
        return torch.float32
    return torch.bfloat16


def newton_schulz(
    grad: torch.Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Quintic Newton–Schulz orthogonalisation of a 2-D ``grad``, computed in ``dtype``.

    X₀ = G / max(‖G‖_F, eps) (transposed so that rows ≤ columns), then ``steps`` times
    A = X Xᵀ,  X ← a·X + (b·A + c·A²)·X,
    which drives the singular values of X towards ~1 (G ≈ U S Vᵀ ↦ ≈ U Vᵀ). The same iteration
    as torch's ``_zeropower_via_newtonschulz``, which fixes ``dtype`` to bf16."""
    a, b, c = coefficients
    x = grad.to(dtype, copy=True)  # never the caller's tensor (it may be the momentum)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def muon_lr(lr, update_rms: float):
    """Muon's learning rate for a step of RMS ``update_rms · lr`` per entry.

    torch's ``adjust_lr_fn="match_rms_adamw"`` scales the orthogonalised update O (RMS
    1/sqrt(max(A, B))) by 0.2 · sqrt(max(A, B)), so ΔW = lr_muon · 0.2 · sqrt(max(A, B)) · O
    has RMS 0.2 · lr_muon; lr_muon = lr · update_rms / 0.2 gives RMS update_rms · lr.
    ``lr`` may be RLlib's schedule ``[[timestep, lr], ...]``: every lr is scaled."""
    scale = update_rms / 0.2
    if isinstance(lr, (list, tuple)):
        return [[timestep, value * scale] for timestep, value in lr]
    return lr * scale


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix learning rate for an (A, B) weight: ``match_rms_adamw`` scales by
    0.2·sqrt(max(A, B)) (update RMS 0.2·lr, Kimi's match to AdamW), ``original`` (or None) by
    sqrt(max(1, A/B)) — torch's ``_adjust_lr``."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1.0, rows / cols))


class K15Muon(torch.optim.Muon):
    """``torch.optim.Muon`` whose Newton–Schulz iteration runs in ``ns_dtype``.

    ``ns_dtype=torch.bfloat16`` is torch's own step, unchanged; another dtype repeats torch's
    update (momentum, Nesterov, decoupled weight decay, adjusted lr) with
    :func:`newton_schulz` in that dtype. State and ``state_dict`` are torch's."""

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        if self.ns_dtype == torch.bfloat16:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = float(group["lr"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.ndim != 2:
                    raise ValueError(f"Muon needs 2-D parameters; got shape {tuple(param.shape)}")
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(param.grad, 1 - group["momentum"])
                update = param.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                ortho = newton_schulz(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                    self.ns_dtype,
                )  # fmt: skip
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(ortho.to(param.dtype),
                           alpha=-adjusted_lr(lr, group["adjust_lr_fn"], param.shape))  # fmt: skip
        return loss
