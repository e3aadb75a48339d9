"""K15Muon: torch's Muon step where bf16 is native, the same update with an fp32 Newton–Schulz
where bf16 would be emulated (AVX2-only CPUs: minutes per step otherwise)."""

from __future__ import annotations

import pytest
import torch

from rllib_k15.algorithm.muon import K15Muon, adjusted_lr, newton_schulz, newton_schulz_dtype

COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch's defaults


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(48, 16), (16, 40), (24, 24)]  # tall, wide, square
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def test_bf16_newton_schulz_is_torchs_own():
    from torch.optim._muon import _zeropower_via_newtonschulz

    for p in _params(0):
        ours = newton_schulz(p.grad, COEFFICIENTS, 5, 1e-7, torch.bfloat16)
        theirs = _zeropower_via_newtonschulz(p.grad, COEFFICIENTS, 5, 1e-7)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_fp32_newton_schulz_orthogonalises_and_leaves_its_input_alone():
    grad = _params(1)[0].grad  # 48 x 16
    before = grad.clone()
    ortho = newton_schulz(grad, COEFFICIENTS, 5, 1e-7, torch.float32)
    assert ortho.dtype == torch.float32 and ortho.shape == grad.shape
    torch.testing.assert_close(grad, before, rtol=0, atol=0)
    sigma = torch.linalg.svdvals(ortho.double())
    assert 0.5 < sigma.min().item() and sigma.max().item() < 1.5  # the quintic's band


@pytest.mark.parametrize("nesterov", [True, False])
def test_fp32_step_matches_torchs_bf16_step_up_to_bf16_rounding(nesterov):
    kwargs = {"lr": 0.02, "weight_decay": 0.1, "nesterov": nesterov,
              "adjust_lr_fn": "match_rms_adamw"}  # fmt: skip
    ours, theirs = _params(2), _params(2)
    starts = [p.detach().clone() for p in ours]
    opt_ours = K15Muon(ours, ns_dtype=torch.float32, **kwargs)
    opt_theirs = torch.optim.Muon(theirs, **kwargs)
    for _ in range(3):  # momentum carries over steps
        opt_ours.step()
        opt_theirs.step()
    for p, q, start in zip(ours, theirs, starts):
        step_ours, step_theirs = p.detach() - start, q.detach() - start
        relative = (step_ours - step_theirs).norm() / step_theirs.norm()
        assert relative.item() < 0.03  # bf16 has 8 bits of mantissa
        assert not torch.equal(step_ours, step_theirs)  # it really ran in fp32
        assert set(opt_ours.state[p]) == {"momentum_buffer"}


def test_bf16_ns_dtype_is_torchs_step_bit_for_bit():
    ours, theirs = _params(3), _params(3)
    K15Muon(ours, lr=0.02, ns_dtype=torch.bfloat16).step()
    torch.optim.Muon(theirs, lr=0.02).step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_adjusted_lr_is_torchs():
    from torch.optim._muon import _adjust_lr

    for shape in [(48, 16), (16, 40)]:
        for fn in [None, "original", "match_rms_adamw"]:
            assert adjusted_lr(0.02, fn, torch.Size(shape)) == pytest.approx(
                _adjust_lr(0.02, fn, torch.Size(shape))
            )


def test_the_dtype_follows_the_cpus_bf16(monkeypatch):
    import rllib_k15.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert newton_schulz_dtype("cpu") == torch.float32
    assert newton_schulz_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert newton_schulz_dtype("cpu") == torch.bfloat16
