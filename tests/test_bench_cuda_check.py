"""bench/cuda_learner_check.py (the GPU learner check) runs its checks on CPU too."""

import pytest


@pytest.mark.precision
def test_the_learner_check_passes_on_cpu():
    from bench.cuda_learner_check import run

    report = run("cpu")
    assert report["autocast_device"] == "cpu"
    assert report["logits_dtype"] == "torch.bfloat16"
    assert report["dithered_on_bf16_grid"]
    assert report["changed_tensors"] == report["total_tensors"]
    assert report["metrics"]["kl_ref"] == 0.0  # first step: π_θ = π_θi
    assert report["packing_rows"] < 8 and report["packing_max_abs_err"] < 1e-4
