"""Weight merging: average, CoT-Valve extrapolation, sharded streaming, refusals."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.l2s_tiny import save_tiny
from transformers import AutoModelForCausalLM

from rllib_k15.long2short.merge import MergeError, interpolate, merge_models


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


@pytest.fixture
def long_short(tmp_path):
    return save_tiny(tmp_path / "long", seed=1), save_tiny(tmp_path / "short", seed=2)


def test_interpolate_formula():
    short, long = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    assert interpolate(short, long, 0.5).tolist() == [2.0, 0.0]
    assert interpolate(short, long, 0.0).tolist() == short.tolist()
    assert interpolate(short, long, 1.0).tolist() == long.tolist()
    assert interpolate(short, long, 1.5).tolist() == [4.0, -4.0]  # s + 1.5 (l - s)
    assert interpolate(short.bfloat16(), long.bfloat16(), 0.5).dtype == torch.bfloat16


def test_merge_default_is_elementwise_average(long_short, tmp_path):
    long_dir, short_dir = long_short
    report = merge_models(long_dir, short_dir, tmp_path / "merged")
    wl, ws, wm = _weights(long_dir), _weights(short_dir), _weights(tmp_path / "merged")
    assert set(wm) == set(wl) and report.num_tensors == len(
        load_file(long_dir / "model.safetensors")
    )
    for name in wl:
        torch.testing.assert_close(wm[name], (wl[name] + ws[name]) / 2, rtol=0, atol=1e-7)
    assert not torch.equal(wm["model.embed_tokens.weight"], wl["model.embed_tokens.weight"])
    # a loadable plain HF dir: tokenizer and config copied, provenance recorded
    out = tmp_path / "merged"
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "k15_merge.json").read_text())["alpha"] == 0.5


def test_merge_extrapolation_alpha_1_5(long_short, tmp_path):
    long_dir, short_dir = long_short
    merge_models(long_dir, short_dir, tmp_path / "x", alpha=1.5)
    wl, ws, wm = _weights(long_dir), _weights(short_dir), _weights(tmp_path / "x")
    for name in wl:
        torch.testing.assert_close(
            wm[name], ws[name] + 1.5 * (wl[name] - ws[name]), rtol=0, atol=1e-6
        )


def test_merge_streams_sharded_checkpoints(tmp_path):
    # LONG in several shards, SHORT in one file: output mirrors LONG's shards + index.
    long_dir = save_tiny(tmp_path / "long", seed=1, max_shard_size="20KB")
    short_dir = save_tiny(tmp_path / "short", seed=2)
    n_shards = len(list(long_dir.glob("*.safetensors")))
    assert n_shards > 2
    report = merge_models(long_dir, short_dir, tmp_path / "merged", alpha=0.25)
    out = tmp_path / "merged"
    assert len(report.shards) == n_shards
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(
        p.name for p in long_dir.glob("*.safetensors")
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(_weights(long_dir))
    wl, ws, wm = _weights(long_dir), _weights(short_dir), _weights(out)
    for name in wl:
        torch.testing.assert_close(
            wm[name], ws[name] + 0.25 * (wl[name] - ws[name]), rtol=0, atol=1e-6
        )


def test_merge_refuses_different_architecture(tmp_path):
    long_dir = save_tiny(tmp_path / "long", seed=1)
    short_dir = save_tiny(tmp_path / "short", seed=2, num_hidden_layers=3)
    with pytest.raises(MergeError, match=r"`num_hidden_layers` is 2 in LONG but 3 in SHORT"):
        merge_models(long_dir, short_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


def test_merge_reports_non_architecture_config_differences(tmp_path):
    long_dir = save_tiny(tmp_path / "long", seed=1, rope_theta=50000.0)
    short_dir = save_tiny(tmp_path / "short", seed=2)
    report = merge_models(long_dir, short_dir, tmp_path / "out")
    assert any(
        d.startswith("rope_parameters") or d.startswith("rope_theta")
        for d in report.config_differences
    ), report.config_differences
    # the output config is LONG's
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == json.loads(
        (long_dir / "config.json").read_text()
    )


def test_merge_names_the_mismatched_tensor_shape(tmp_path):
    # Same config, but one tensor edited to another shape: the error names it.
    long_dir = save_tiny(tmp_path / "long", seed=1)
    short_dir = save_tiny(tmp_path / "short", seed=2)
    weights = load_file(short_dir / "model.safetensors")
    weights["model.norm.weight"] = torch.ones(31)
    save_file(weights, short_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        MergeError, match=r"`model.norm.weight` has shape \[32\] in LONG but \[31\]"
    ):
        merge_models(long_dir, short_dir, tmp_path / "out")


def test_merge_names_missing_tensors(tmp_path):
    long_dir = save_tiny(tmp_path / "long", seed=1)
    short_dir = save_tiny(tmp_path / "short", seed=2)
    weights = load_file(short_dir / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, short_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MergeError, match=r"only in LONG \['lm_head.weight'\]"):
        merge_models(long_dir, short_dir, tmp_path / "out")


def test_merge_input_validation(long_short, tmp_path):
    long_dir, short_dir = long_short
    with pytest.raises(ValueError, match="alpha"):
        merge_models(long_dir, short_dir, tmp_path / "o", alpha=float("nan"))
    with pytest.raises(ValueError, match="must differ"):
        merge_models(long_dir, short_dir, long_dir)
    with pytest.raises(FileNotFoundError, match="SHORT"):
        merge_models(long_dir, tmp_path / "nope", tmp_path / "o")


def _rss_anon_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+)", text).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_merge_memory_stays_near_one_shard(tmp_path):
    """2 x 64 MB models in 8 MB shards: anonymous memory grows by well under one model's
    worth (loading both would take 128 MB); mmap'd input pages are clean page cache."""
    gen = torch.Generator().manual_seed(0)
    for name in ("long", "short"):
        out = tmp_path / name
        out.mkdir()
        weight_map = {}
        for s in range(8):
            tensors = {f"layer{s}.w{i}": torch.randn(1024, 1024, generator=gen) for i in range(2)}
            shard = f"model-{s + 1:05d}-of-00008.safetensors"
            save_file(tensors, out / shard, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, shard))
        index = {"metadata": {}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index))
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
    start, peak, done = _rss_anon_mb(), [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon_mb())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        merge_models(tmp_path / "long", tmp_path / "short", tmp_path / "out")
    finally:
        done.set()
        watcher.join()
    assert peak[0] - start < 64, f"anonymous memory grew by {peak[0] - start:.0f} MB"
