"""fp32 → bf16 rounding that keeps small updates visible: dithered (stochastic) rounding.

Why it is needed. Checkpoints are stored in bf16 (the embedded SmolLM2 dequantizes onto the
bf16 grid: 100 % of its fp32 weights are exactly bf16 values), so the learner's fp32 master
weights θ start ON the grid. An RL step at lr 1e-5 moves a weight by ~1e-5, while half a
bf16 step (8 mantissa bits) at |w| ≈ 0.1 is ~2.4e-4. Round-to-nearest maps θ_i + Δ back to
θ_i for almost every weight, so a bf16 engine — and a bf16-autocast learner, whose matmuls
round the same way — keeps seeing the OLD policy. Measured on SmolLM2-135M (32 responses,
4 Adam steps at lr 1e-5; ``python -m bench.bf16_visibility``, docs/precision.md): the bf16
forward saw 10 % of the fp32 change in log π (regression slope 0.10; 3 % for half the
update, 97 % only at 16×).
The quickstart in bf16 did not learn.

Dithered rounding. With the 16 low bits of the fp32 pattern dropped after adding a uniform
integer u ∈ {0, …, 2^16 − 1}:

    round_u(x) = trunc_16(bits(x) + u),   E_u[round_u(x)] = x   (for every finite x)

because x lies a fraction f of the way between its two bf16 neighbours and the sum carries
into the upper neighbour with probability f. An update Δ far below the bf16 step then moves
round_u(θ + Δ) − round_u(θ) by Δ on average. Measured the same way: slope 0.98–1.00,
correlation 0.996–0.999 with the fp32 change.

One dither per policy version. The engine's copy of θ_i and the learner's bf16 forward during
iteration i use the SAME u (seeded by ``(seed, version)``), so they hold identical bf16
weights: the engine samples from the policy the learner scores, the τ term sees the drift
θ − θ_i within the iteration, and a step that moves nothing moves nothing. Version 0 is plain
round-to-nearest, which is what an engine does when it loads the checkpoint itself.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["StraightThrough", "autocast_device", "dither_noise", "round_to_bf16", "version_seed"]

_LOW_BITS = 16
_LOW_MASK = (1 << _LOW_BITS) - 1


def version_seed(seed: int, version: int, name: str) -> int:
    """A 63-bit seed for tensor ``name`` at policy ``version`` (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}/{version}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def dither_noise(shape: torch.Size | tuple[int, ...], seed: int) -> torch.Tensor:
    """u ~ U{0, …, 2^16 − 1} i.i.d. per element, stored as int16 bit patterns (half the memory
    of int32); :func:`round_to_bf16` reads them back as unsigned."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-(1 << 15), 1 << 15, tuple(shape), dtype=torch.int16, generator=generator)


def round_to_bf16(x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 ``x`` as bf16: round-to-nearest-even when ``noise`` is None, else the dithered
    ``trunc_16(bits(x) + u)`` with u the unsigned value of ``noise`` (same shape as x).

    Non-fp32 input is returned cast (bf16 stays as is). NaN/inf are not expected in weights.
    """
    if x.dtype != torch.float32:
        return x.to(torch.bfloat16)
    if noise is None:
        return x.to(torch.bfloat16)
    # in place on one int32 buffer: bf16's bit pattern IS the upper half of fp32's, so
    # trunc_16 is an arithmetic shift and a narrowing (2.5x fewer passes than masking back
    # to fp32 and casting; the weight sync rounds every weight once per policy version)
    summed = noise.to(torch.int32)
    summed &= _LOW_MASK  # u as unsigned
    summed += x.detach().contiguous().view(torch.int32)
    summed >>= _LOW_BITS
    return summed.to(torch.int16).view(torch.bfloat16)


class StraightThrough(torch.autograd.Function):
    """``StraightThrough.apply(master, rounded)``: the rounded weight in the forward, the
    gradient to the fp32 master weight unchanged in the backward."""

    @staticmethod
    def forward(ctx, master: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return rounded

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ARG004
        return grad, None


def autocast_device(model: torch.nn.Module) -> str:
    """The device type autocast must name: the one the parameters live on (a CUDA learner
    autocasts on "cuda"; autocast on "cpu" would leave its matmuls in fp32)."""
    return next(model.parameters()).device.type
