"""`k15 train` on image problems with a VLM through the real vLLM engine: the run samples
from the images, the learner trains with the image in the forward, and the exported model's
vision tower, connector and language model all moved; the tuned example file is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import toy_env

from rllib_k15.commands.k15 import main

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "tuned_examples" / "rendered_arithmetic_vlm.yaml"

pytestmark = pytest.mark.slow


def _parts(state: dict) -> dict[str, list[str]]:
    return {
        "vision": [k for k in state if k.startswith("model.vision_model.")],
        "connector": [k for k in state if k.startswith("model.connector.")],
        "language": [k for k in state if k.startswith("model.text_model.")],
    }


def test_k15_train_on_image_problems_trains_every_part_of_the_vlm(
    tiny_vlm_dir, tmp_path, monkeypatch
):
    """The toy first-letter task with an image per problem (the random model solves it about
    a third of the time, so the rewards carry a signal); vLLM engine, OPMD, 2 iterations."""
    experiment = toy_env.write_toy_experiment(
        tmp_path / "vlm.yaml", tiny_vlm_dir, iterations=2, env_id=toy_env.IMAGE_ENV_ID,
        engine="vllm", max_response_tokens=4, lr=1.0e-3, eval_interval=0,
        engine_options={"dtype": "float32", "kv_cache_gib": 0.1, "max_model_len": 512,
                        "enforce_eager": True},
    )  # fmt: skip
    monkeypatch.setenv("K15_PRECISION", "fp32")  # learner and engine both fp32: gaps compare
    out = tmp_path / "run"
    assert main(["train", "--config", experiment, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(r["tokens"] > 0 for r in rows)
    assert any(0.0 < r["accuracy"] < 1.0 for r in rows)  # a signal to learn from
    # the learner scored the responses with their images: its log-probs are the engine's
    # (mean gap per token; bf16 rounding alone would give ~0.04 here)
    assert all(r["logp_gap"] < 1e-3 for r in rows), rows

    from safetensors.torch import load_file

    from rllib_k15.runs.export import export_checkpoint

    exported = export_checkpoint(out / "checkpoint", tmp_path / "hf", dtype="float32")
    assert (exported / "processor_config.json").is_file()  # the processor travels along
    before = load_file(tiny_vlm_dir / "model.safetensors")
    after = load_file(exported / "model.safetensors")
    for part, names in _parts(after).items():
        assert names, part
        moved = max((after[n].float() - before[n].float()).abs().max().item() for n in names)
        assert moved > 1e-5, f"{part} did not change"


def test_the_tuned_vision_example_is_a_valid_experiment():
    """tuned_examples/rendered_arithmetic_vlm.yaml builds a config and its env (the preflight
    `k15 train` runs), with whole-response rollouts, which images need."""
    from rllib_k15 import K15Config
    from rllib_k15.runs.experiment import apply_sections, load_experiment_file
    from rllib_k15.runs.trainer import preflight

    spec = load_experiment_file(EXPERIMENT)
    config = apply_sections(K15Config(), spec["sections"], str(EXPERIMENT))
    assert config.env == "k15/RenderedArithmetic-v0" and config.hf_model == "tiny-random-idefics3"
    assert config.partial_rollout_max_tokens is None
    preflight(config)
