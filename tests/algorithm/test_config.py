"""K15Config validation and strict experiment files: bad input fails early, naming the field."""

import dataclasses
import inspect
import textwrap

import pytest
from ray.rllib.algorithms.algorithm_config import NotProvided

from rllib_k15.algorithm.config import K15_FIELDS, K15Config
from rllib_k15.algorithm.k15_fields import K15Fields
from rllib_k15.runs.experiment import apply_sections, load_experiment_file, resolve_algorithm


def _config(**training):
    return (
        K15Config()
        .environment("k15/Arithmetic-v0")
        .training(**{"hf_model": "tiny-random-llama", **training})
    )


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("tau", 0.0, "`tau` (0.0) must be a number > 0"),
        ("baseline", "median", "`baseline` ('median') must be one of ['mean', 'logsumexp']"),
        ("loss", "ppo", "`loss` ('ppo') must be one of"),
        ("logprob_reduction", "max", "`logprob_reduction` ('max')"),
        ("samples_per_problem", 0, "`samples_per_problem` (0) must be an integer >= 1"),
        ("samples_per_problem", 1, "`samples_per_problem` (1) gives a zero advantage"),
        ("minibatch_size", 1000, "`minibatch_size` (1000) must be <= problems_per_iteration"),
        ("top_p", 1.5, "`top_p` (1.5) must be in (0, 1]"),
        ("length_penalty_warmup_iters", -1, "`length_penalty_warmup_iters` (-1)"),
        ("engine", "sglang", "`engine` ('sglang') must be 'vllm' or 'hf'"),
        ("hf_model", "/no/such/model", "`hf_model` ('/no/such/model')"),
    ],
)
def test_validate_quotes_bad_values(field, value, message, tiny_model_dir):
    with pytest.raises(ValueError) as err:
        _config(**{field: value}).validate()
    assert message in str(err.value)


def test_every_field_is_documented_and_settable():
    config = K15Config()
    for name, (default, help_text) in K15_FIELDS.items():
        assert len(help_text) > 20, name
        assert getattr(config, name) == default
    assert config.training(tau=0.5).tau == 0.5


def test_fields_are_declared_once_on_the_dataclass_and_typed_on_the_config():
    """K15Fields declares each field; K15_FIELDS, K15Config's annotations and the keywords
    of ``training()`` follow it name for name and type for type."""
    declared = dataclasses.fields(K15Fields)
    assert [f.name for f in declared] == list(K15_FIELDS)
    defaults = K15Fields()
    for f in declared:
        assert K15_FIELDS[f.name] == (getattr(defaults, f.name), f.metadata["help"]), f.name
        assert K15Config.__annotations__[f.name] == f.type, f.name
    params = inspect.signature(K15Config.training).parameters
    for f in declared:
        param = params[f.name]
        assert param.kind is param.KEYWORD_ONLY, f.name
        assert param.default is NotProvided, f.name
        assert param.annotation == f"{f.type} | NotProvidedType", f.name
    assert params["kwargs"].kind is inspect.Parameter.VAR_KEYWORD  # RLlib's own fields
    assert K15Config.extra_training_fields() == tuple(K15_FIELDS)


def test_fresh_config_has_each_default_and_owns_its_mutable_defaults():
    first, second = K15Config(), K15Config()
    for name, (default, _) in K15_FIELDS.items():
        assert getattr(first, name) == default, name
    mutable = [name for name, (default, _) in K15_FIELDS.items() if isinstance(default, dict)]
    assert "sampling" in mutable and "engine_options" in mutable
    for name in mutable:
        assert getattr(first, name) is not getattr(second, name), name
        assert getattr(first, name) is not K15_FIELDS[name][0], name
    first.sampling["strategy"] = "curriculum"
    assert second.sampling == {} and K15Config().sampling == {}


def test_training_skips_not_provided_and_rejects_unknown_keywords():
    config = K15Config().training(tau=0.3, num_epochs=2, minibatch_size=8, lr=1e-5)
    assert (config.tau, config.num_epochs, config.minibatch_size, config.lr) == (0.3, 2, 8, 1e-5)
    assert config.training(tau=NotProvided).tau == 0.3
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_field'"):
        K15Config().training(no_such_field=1)


def test_experiment_file_maps_onto_builder(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        textwrap.dedent("""
        algo: K15MirrorDescent
        environment: {env: k15/Arithmetic-v0, env_config: {difficulty: 1}}
        training: {tau: 0.3, samples_per_problem: 4, lr: 1.0e-5}
        debugging: {seed: 7}
        stop: {training_iteration: 3}
    """)
    )
    spec = load_experiment_file(path)
    config = apply_sections(K15Config(), spec["sections"], spec["source"])
    assert (config.tau, config.samples_per_problem, config.lr, config.seed) == (0.3, 4, 1e-5, 7)
    assert config.env_config == {"difficulty": 1}
    assert spec["stop"] == {"training_iteration": 3}


def test_resolve_algorithm_falls_back_to_rllib_registry():
    assert resolve_algorithm("K15MirrorDescent").__name__ == "K15MirrorDescent"
    assert resolve_algorithm("PPO").__name__ == "PPO"
    with pytest.raises(ValueError, match="unknown algorithm"):
        resolve_algorithm("NoSuchAlgo")


def test_relative_model_and_stats_paths_become_absolute_in_the_driver(tmp_path, monkeypatch):
    """Ray actors need not share the driver's cwd: local paths are fixed when configured."""
    (tmp_path / "models" / "long").mkdir(parents=True)
    (tmp_path / "models" / "long" / "config.json").write_text("{}")
    (tmp_path / "ref.json").write_text("{}")
    (tmp_path / "smollm2-135m-instruct").mkdir()  # a same-named dir without config.json
    monkeypatch.chdir(tmp_path)
    config = K15Config().training(hf_model="models/long", o1_pruner_reference_stats="ref.json")
    assert config.hf_model == str(tmp_path / "models" / "long")
    assert config.o1_pruner_reference_stats == str(tmp_path / "ref.json")
    for name in ("smollm2-135m-instruct", "missing/dir"):  # names and typos are left alone
        assert K15Config().training(hf_model=name).hf_model == name
