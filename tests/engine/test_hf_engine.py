"""The engine contract on the transformers reference engine (tiny model, fp32, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rllib_k15.engine import SamplingParams
from rllib_k15.engine.hf_engine import HFEngine

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Count to three."]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(tiny_model_dir, seed=0, dtype="float32")


def _ids(groups: list) -> list[list[list[int]]]:
    return [[c.token_ids for c in group] for group in groups]


def test_sampling_params_validation() -> None:
    with pytest.raises(ValueError, match=r"n \(0\)"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    assert SamplingParams(stop="\n").stop == ("\n",)  # not split into characters


def test_shapes_order_and_lengths(engine: HFEngine) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_tokens=6)
    groups = engine.generate_text(PROMPTS, params)
    assert [len(g) for g in groups] == [3, 3, 3]
    for group in groups:
        for c in group:
            assert 1 <= len(c.token_ids) <= 6
            assert len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0.0 for lp in c.logprobs)
            assert c.finish_reason in {"stop", "length"}
            # 'length' exactly when the cap was hit without an end token
            assert (c.finish_reason == "length") == (
                len(c.token_ids) == 6 and c.token_ids[-1] != engine.tokenizer.eos_token_id
            )


def test_prompt_order_is_kept(engine: HFEngine) -> None:
    greedy = SamplingParams(n=2, temperature=0.0, max_tokens=5)
    together = engine.generate_text(PROMPTS, greedy)
    alone = [engine.generate_text([p], greedy)[0] for p in PROMPTS]
    assert _ids(together) == _ids(alone)
    assert together[0][0].token_ids == together[0][1].token_ids  # greedy: n copies agree


def test_max_tokens_gives_length(engine: HFEngine) -> None:
    (group,) = engine.generate_text(["Tell me a long story."], SamplingParams(n=4, max_tokens=3))
    assert all(len(c.token_ids) <= 3 for c in group)
    # a random model essentially never ends within 3 tokens (eos is 1 of 49152 ids)
    assert all(c.finish_reason == "length" for c in group)


def test_same_seed_same_samples_and_caller_rng_untouched(tiny_model_dir: Path) -> None:
    params = SamplingParams(n=2, temperature=1.0, max_tokens=8)
    a = HFEngine(tiny_model_dir, seed=7, dtype="float32")
    b = HFEngine(tiny_model_dir, seed=7, dtype="float32")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = _ids(a.generate_text(PROMPTS, params))
    assert torch.equal(torch.get_rng_state(), before)  # the engine has its own stream
    torch.manual_seed(999)  # ...so the caller's seed doesn't change the engine's samples
    assert _ids(b.generate_text(PROMPTS, params)) == first
    assert _ids(a.generate_text(PROMPTS, params)) != first  # the stream moved on
    a.reseed(7)
    assert _ids(a.generate_text(PROMPTS, params)) == first
    a.reseed(8)
    assert _ids(a.generate_text(PROMPTS, params)) != first


def test_temperature_zero_is_deterministic_argmax(engine: HFEngine) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=6)
    first = engine.generate_text(PROMPTS, greedy)
    assert _ids(engine.generate_text(PROMPTS, greedy)) == _ids(first)
    prompt = engine.encode_prompt(PROMPTS[0])
    c = first[0][0]
    with torch.no_grad():
        logits = engine.model(torch.tensor([prompt + c.token_ids])).logits[0]  # (T, V)
    predicted = logits[len(prompt) - 1 : -1].argmax(-1).tolist()
    assert predicted == c.token_ids


def test_sampling_logprobs_equal_teacher_forced_scores(engine: HFEngine) -> None:
    """At temperature 1 the engine's log-probs are the model's own (fp32: to 1e-4)."""
    prompts = [engine.encode_prompt(p) for p in PROMPTS]
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_tokens=10))
    flat = [(p, c) for p, g in zip(prompts, groups, strict=True) for c in g]
    scores = engine.score([p for p, _ in flat], [c.token_ids for _, c in flat])
    for (_, c), s in zip(flat, scores, strict=True):
        assert c.logprobs == pytest.approx(s, abs=1e-4)


def test_temperature_changes_the_reported_logprobs(engine: HFEngine) -> None:
    """Log-probs are of the sampling distribution: at T=0.5 they are sharper than the model's."""
    prompt = engine.encode_prompt(PROMPTS[0])
    (group,) = engine.generate([prompt], SamplingParams(n=4, temperature=0.5, max_tokens=6))
    scores = engine.score([prompt] * 4, [c.token_ids for c in group])
    assert sum(map(sum, (c.logprobs for c in group))) > sum(map(sum, scores))


def test_stop_string(engine: HFEngine) -> None:
    (group,) = engine.generate_text(["Hi"], SamplingParams(n=4, max_tokens=12, stop=("e",)))
    for c in group:
        assert "e" not in c.text
        if c.finish_reason == "stop" and c.token_ids[-1] != engine.tokenizer.eos_token_id:
            assert "e" in engine.tokenizer.decode(c.token_ids)  # the stop string ended it


def test_load_weights_changes_outputs_and_restores(engine: HFEngine) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=6)
    original = {k: v.clone() for k, v in engine.model.state_dict().items()}
    before = _ids(engine.generate_text(PROMPTS, greedy))
    g = torch.Generator().manual_seed(0)
    perturbed = {
        k: v + 0.5 * v.std() * torch.randn(v.shape, generator=g) for k, v in original.items()
    }
    engine.load_weights(perturbed)
    assert _ids(engine.generate_text(PROMPTS, greedy)) != before
    engine.load_weights(original)
    assert _ids(engine.generate_text(PROMPTS, greedy)) == before
    with pytest.raises(KeyError, match="missing"):
        engine.load_weights({"model.norm.weight": original["model.norm.weight"]})
