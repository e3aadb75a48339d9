"""fp32 -> bf16 rounding (rllib_k15.core.rounding): nearest vs dithered, and why it matters.

Weights that start on the bf16 grid (every bf16 checkpoint, the embedded SmolLM2) and move
by less than half a bf16 step must stay visible to a bf16 forward: nearest rounding hides
them, dithered rounding shows them on average.
"""

import pytest
import torch

from rllib_k15.core.rounding import dither_noise, round_to_bf16, version_seed

pytestmark = pytest.mark.precision


def _grid_weights(n: int, seed: int = 0) -> torch.Tensor:
    """fp32 weights exactly on the bf16 grid, |w| ~ 0.05 like an LM's."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.05).bfloat16().float()


def _bf16_step(w: torch.Tensor) -> torch.Tensor:
    """Distance to the next bf16 value away from zero (one unit in the last place)."""
    up = (w.view(torch.int32) + (1 << 16)).view(torch.float32)
    return (up - w).abs()


def test_without_noise_it_is_round_to_nearest():
    x = torch.randn(10_000) * 3
    assert torch.equal(round_to_bf16(x), x.to(torch.bfloat16))


def test_dithered_rounding_lands_on_one_of_the_two_neighbours():
    x = torch.randn(10_000) * 0.05
    y = round_to_bf16(x, dither_noise(x.shape, seed=1)).float()
    down = (x.view(torch.int32) & -(1 << 16)).view(torch.float32)  # truncated toward zero
    up = (down.view(torch.int32) + (1 << 16)).view(torch.float32)
    assert torch.all((y == down) | (y == up))


def test_dithered_rounding_is_the_truncated_sum_bit_for_bit():
    """round_u(x) = trunc_16(bits(x) + u), written out in fp32 bits, on both signs, zeros,
    subnormals, the largest finite values and the whole range of u (incl. 0 and 2^16 - 1)."""
    x = torch.randn(200_000) * torch.logspace(-40, 38, 200_000)
    x[:8] = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 3.3e38, -3.3e38, 2.0**-126, -(2.0**-126)])
    noise = dither_noise(x.shape, seed=3)
    noise[:2] = torch.tensor([0, -1], dtype=torch.int16)  # u = 0 and u = 2^16 - 1
    unsigned = noise.to(torch.int32) & 0xFFFF
    expected = ((x.view(torch.int32) + unsigned) & -(1 << 16)).view(torch.float32)
    got = round_to_bf16(x, noise)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got.float().view(torch.int32), expected.view(torch.int32))


def test_dithered_rounding_is_unbiased():
    """Mean over N independent dithers -> x. One draw errs by at most one step s (std
    <= s/2), so the mean of N = 400 draws is within 4 standard errors, 4·s/(2·20) = s/10."""
    x = torch.randn(2_000) * 0.05
    draws = torch.stack(
        [round_to_bf16(x, dither_noise(x.shape, seed=s)).float() for s in range(400)]
    )
    step = _bf16_step(x)
    assert torch.all((draws.mean(0) - x).abs() <= step / 10)
    nearest_error = (round_to_bf16(x).float() - x).abs().mean()
    assert (draws.mean(0) - x).abs().mean() < nearest_error / 5


def test_a_sub_step_update_is_invisible_to_nearest_but_not_to_dithered_rounding():
    """An RL step: Δ = 1e-5 on weights on the grid with |w| >= 0.01 (most of an LM's), where
    half a bf16 step is >= 3e-5."""
    w0 = _grid_weights(300_000)
    w0 = w0[w0.abs() >= 0.01]
    delta = torch.full_like(w0, 1e-5)
    nearest = round_to_bf16(w0 + delta).float() - round_to_bf16(w0).float()
    assert torch.count_nonzero(nearest) == 0  # the update is lost entirely
    noise = dither_noise(w0.shape, seed=3)
    dithered = round_to_bf16(w0 + delta, noise).float() - round_to_bf16(w0, noise).float()
    # the mean change is Δ up to sampling noise: each element moves 0 or one step s with
    # P = Δ/s, so std(mean) = sqrt(E[Δ·s] / n) ≈ 1e-7 here; 10 % of Δ is > 10 standard errors
    assert dithered.mean().item() == pytest.approx(1e-5, rel=0.1)


def test_the_same_seed_gives_the_same_dither_in_every_process():
    a = dither_noise((64, 32), version_seed(0, 3, "model.layers.0.mlp.up_proj.weight"))
    b = dither_noise((64, 32), version_seed(0, 3, "model.layers.0.mlp.up_proj.weight"))
    c = dither_noise((64, 32), version_seed(0, 4, "model.layers.0.mlp.up_proj.weight"))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bf16_input_passes_through_unchanged():
    x = torch.randn(100).bfloat16()
    assert torch.equal(round_to_bf16(x, dither_noise(x.shape, 0)), x)
