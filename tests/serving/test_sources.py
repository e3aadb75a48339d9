"""What `k15 serve SOURCE` resolves to, the watcher's choices, and the settings' checks (no
server: the live server is tests/serving/test_serve.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.serving import write_policy_checkpoint

from rllib_k15.serving.app import ServeSettings
from rllib_k15.serving.sources import SourceError, newest_checkpoint, resolve_source
from rllib_k15.serving.watch import CheckpointWatcher


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(next(model_dir.glob("*.safetensors")))


def test_a_model_name_or_directory_is_served_as_is(tiny_model_dir, tmp_path):
    assert resolve_source("tiny-random-llama", tmp_path, "float32").model_dir == tiny_model_dir
    served = resolve_source(str(tiny_model_dir), tmp_path, "float32")
    assert served.model_dir == tiny_model_dir and served.iteration is None
    assert not any(tmp_path.iterdir())  # nothing exported


def test_a_run_serves_its_newest_checkpoint_exported_with_the_tokenizer(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    write_policy_checkpoint(run, tiny_model_dir, iteration=1)
    write_policy_checkpoint(run, tiny_model_dir, iteration=3, noise_seed=0)
    served = resolve_source(str(run), tmp_path / "staging", "float32")
    assert served.iteration == 3 and served.checkpoint.name == "iter_000003"
    assert (served.model_dir / "tokenizer_config.json").is_file()
    base, exported = _weights(tiny_model_dir), _weights(served.model_dir)
    assert any(not torch.equal(base[k].float(), exported[k].float()) for k in base)
    # a checkpoint directory itself is a SOURCE too
    again = resolve_source(str(served.checkpoint), tmp_path / "staging", "float32")
    assert again.iteration == 3


def test_a_run_without_checkpoint_serves_its_base_model(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "experiment.yaml").write_text(f"training:\n  hf_model: {tiny_model_dir}\n")
    assert resolve_source(str(run), tmp_path, "float32").model_dir == tiny_model_dir


def test_an_unknown_source_names_what_it_tried(tmp_path):
    with pytest.raises(SourceError, match="not a k15 run directory.*not an RLlib checkpoint"):
        resolve_source(str(tmp_path / "nope"), tmp_path, "float32")


def test_the_watcher_skips_a_damaged_checkpoint_and_takes_the_next(tiny_model_dir, tmp_path):
    run, staging = tmp_path / "run", tmp_path / "staging"
    staging.mkdir()
    write_policy_checkpoint(run, tiny_model_dir, iteration=1)
    served = resolve_source(str(run), staging, "float32")
    watcher = CheckpointWatcher(run, staging, "float32", served)
    assert watcher.poll() is None  # nothing new

    damaged = write_policy_checkpoint(run, tiny_model_dir, iteration=2, noise_seed=1)
    victim = next(p for p in damaged.rglob("*") if p.is_file() and p.stat().st_size > 1000)
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    assert watcher.poll() is None and 2 in watcher._failed
    assert victim.name in watcher._failed[2]  # the reason names the file

    write_policy_checkpoint(run, tiny_model_dir, iteration=3, noise_seed=2)
    new = watcher.poll()
    assert new is not None and new.iteration == 3
    watcher.accept(new)
    assert watcher.poll() is None
    assert newest_checkpoint(run) == (3, new.checkpoint)


def test_describe_is_json_for_the_models_route(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    write_policy_checkpoint(run, tiny_model_dir, iteration=5)
    block = resolve_source(str(run), tmp_path, "float32").describe()
    assert json.loads(json.dumps(block))["iteration"] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 4096, "max_model_len": 2048}, "must be below `max_model_len`"),
        ({"replicas": 0}, "`replicas` \\(0\\) must be >= 1"),
        ({"accelerator": "tpu"}, "must be 'cpu' or 'gpu'"),
        ({"tensor_parallel_size": 2}, "needs accelerator='gpu'"),
    ],
)
def test_settings_reject_what_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServeSettings(**kwargs)
