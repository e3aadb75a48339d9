"""The precision decision (rllib_k15.hardware): settings, K15_PRECISION, CUDA, CPU flags, the
measured probe and its cache file."""

from __future__ import annotations

import json

import pytest

from rllib_k15 import hardware as hw
from rllib_k15.hardware import (
    PrecisionDecision,
    decide_precision,
    preferred_dtype,
    probe_cache_path,
    resolve_autocast,
)

pytestmark = pytest.mark.precision

FAKE_ENTRY = {
    "format": hw.PROBE_FORMAT,
    "dtype": "bfloat16",
    "fp32_gflops": 31.0,
    "bf16_gflops": 152.0,
    "speedup": 4.9,
    "margin": hw.PROBE_MARGIN,
    "shapes": ["256x576 @ 576x1536", "256x576 @ 576x576"],
    "threads": 1,
    "probed_at": "2026-12-01",
}


@pytest.fixture(autouse=True)
def _clean(monkeypatch, tmp_path):
    """No K15_PRECISION (the session exports one), a private probe cache, no CUDA, a CPU
    with native bf16 (each test says otherwise when it means to), fresh decisions."""
    monkeypatch.delenv(hw.ENV_VAR, raising=False)
    monkeypatch.setenv(hw.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(hw, "cuda_has_bf16", lambda: False)
    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: True)
    decide_precision.cache_clear()
    yield
    decide_precision.cache_clear()  # the session's decision is computed again, unpatched


@pytest.fixture
def measured(monkeypatch):
    """Replace the timing with FAKE_ENTRY and count the measurements."""
    calls = []

    def fake():
        calls.append(1)
        return dict(FAKE_ENTRY)

    monkeypatch.setattr(hw, "_measure", fake)
    return calls


def _no_probe(*args, **kwargs):
    raise AssertionError("the probe must not run")


@pytest.mark.parametrize(
    "value,dtype", [("fp32", "float32"), ("bf16", "bfloat16"), ("BF16", "bfloat16")]
)
def test_env_var_forces_either_precision(monkeypatch, value, dtype):
    monkeypatch.setattr(hw, "_measure", _no_probe)
    monkeypatch.setenv("K15_PRECISION", value)
    decision = decide_precision()
    assert (decision.dtype, decision.source) == (dtype, "K15_PRECISION")
    assert value in decision.reason
    assert preferred_dtype() == dtype
    assert resolve_autocast("auto") is (dtype == "bfloat16")


def test_env_var_auto_falls_through_to_the_hardware(monkeypatch, measured):
    monkeypatch.setenv("K15_PRECISION", "auto")
    assert decide_precision().source == "probe"
    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: False)
    decide_precision.cache_clear()
    assert decide_precision().source == "no-native-bf16"


@pytest.mark.parametrize("env", ["fp32", "bf16"])
@pytest.mark.parametrize(
    "setting,dtype",
    [("fp32", "float32"), ("float32", "float32"), ("bf16", "bfloat16"), ("bfloat16", "bfloat16")],
)
def test_explicit_setting_beats_the_env_var(monkeypatch, env, setting, dtype):
    monkeypatch.setenv("K15_PRECISION", env)
    decision = decide_precision(setting)
    assert (decision.dtype, decision.source) == (dtype, "setting")


def test_explicit_booleans_beat_the_env_var(monkeypatch):
    monkeypatch.setenv("K15_PRECISION", "bf16")
    assert resolve_autocast(False) is False
    monkeypatch.setenv("K15_PRECISION", "fp32")
    decide_precision.cache_clear()
    assert resolve_autocast(True) is True


@pytest.mark.parametrize("bad", ["float16", "", "fp-32", None, True])
def test_invalid_setting_is_named(bad):
    with pytest.raises(ValueError, match=rf"precision setting \({bad!r}\)"):
        decide_precision(bad)


def test_invalid_env_var_is_named(monkeypatch):
    monkeypatch.setenv("K15_PRECISION", "half")
    with pytest.raises(ValueError, match=r"\$K15_PRECISION \('half'\) must be one of"):
        decide_precision()
    assert decide_precision("fp32").dtype == "float32"  # an explicit setting never reads it


def test_resolve_autocast_rejects_other_values():
    with pytest.raises(ValueError, match=r"`autocast_bf16` \('yes'\)"):
        resolve_autocast("yes")


def test_cuda_with_bf16_means_bf16(monkeypatch):
    import torch

    monkeypatch.setattr(hw, "cuda_has_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(hw, "_measure", _no_probe)
    decision = decide_precision()
    assert (decision.dtype, decision.source) == ("bfloat16", "cuda")
    assert "Fake GPU" in decision.reason


def test_cpu_without_native_bf16_is_fp32_without_probing(monkeypatch):
    """AVX2-only x86 (or any CPU without avx512_bf16/amx_bf16): emulated bf16, no probe."""
    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(hw, "_measure", _no_probe)
    decision = decide_precision()
    assert (decision.dtype, decision.source) == ("float32", "no-native-bf16")
    assert "avx512_bf16" in decision.reason
    assert not probe_cache_path().exists()
    assert resolve_autocast("auto") is False


def test_probe_result_is_cached_in_a_file_and_reused(measured):
    decision = decide_precision()
    assert (decision.dtype, decision.source) == ("bfloat16", "probe")
    assert "bf16 152 vs fp32 31 GFLOP/s" in decision.reason
    assert str(probe_cache_path()) in decision.reason and "2026-12-01" in decision.reason
    assert decide_precision() is decision and len(measured) == 1  # in-process cache
    entries = json.loads(probe_cache_path().read_text())["entries"]
    assert list(entries.values()) == [FAKE_ENTRY]
    (key,) = entries
    assert "torch" in key and hw._cpuinfo()[0] in key  # CPU model + flags + torch version

    decide_precision.cache_clear()  # a new process: reads the file, does not measure
    assert decide_precision() == decision and len(measured) == 1


def test_an_entry_of_another_machine_is_kept_and_not_used(measured):
    other = {"Other CPU | flags 0 | torch 0": {**FAKE_ENTRY, "dtype": "float32"}}
    path = probe_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"entries": other}))
    assert decide_precision().dtype == "bfloat16" and len(measured) == 1
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == 2 and entries["Other CPU | flags 0 | torch 0"]["dtype"] == "float32"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        "[1, 2]",
        json.dumps({"entries": []}),
        "ENTRY_WITHOUT_NUMBERS",
    ],
)
def test_corrupt_cache_is_measured_again(measured, text):
    path = probe_cache_path()
    path.parent.mkdir(parents=True)
    if text == "ENTRY_WITHOUT_NUMBERS":
        text = json.dumps({"entries": {hw._probe_key(): {"dtype": "bfloat16"}}})
    path.write_text(text)
    decision = decide_precision()
    assert (decision.dtype, decision.source) == ("bfloat16", "probe") and len(measured) == 1
    assert list(json.loads(path.read_text())["entries"].values()) == [FAKE_ENTRY]


def test_unwritable_cache_dir_still_decides(monkeypatch, measured, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("K15_CACHE_DIR", str(blocker))  # a file where the directory should be
    assert decide_precision().dtype == "bfloat16" and len(measured) == 1


def test_the_real_probe_is_short_and_follows_the_margin(monkeypatch):
    entry = hw._measure()
    assert entry["fp32_gflops"] > 0 and entry["bf16_gflops"] > 0
    assert entry["dtype"] == ("bfloat16" if entry["speedup"] >= hw.PROBE_MARGIN else "float32")
    monkeypatch.setattr(hw, "PROBE_MARGIN", 1e9)  # bf16 never 1e9x faster: fp32
    decision = decide_precision()
    assert (decision.dtype, decision.source) == ("float32", "probe")
    assert "fp32 chosen" in decision.reason


def test_the_probe_stops_after_one_timed_round_past_its_budget(monkeypatch):
    """Short by construction, not by a wall-clock assertion: once PROBE_BUDGET_S has passed,
    the probe ends after the round it is in (warm-up + 1 timed round here)."""
    import torch

    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: (calls.append(a.dtype), real_mm(a, b))[1])
    monkeypatch.setattr(hw, "PROBE_BUDGET_S", 0.0)
    hw._measure()
    per_round = 2 * len(hw.PROBE_SHAPES)  # fp32 and bf16, every shape
    assert len(calls) == 2 * per_round
    assert calls.count(torch.bfloat16) == calls.count(torch.float32) == per_round


def test_as_dict_is_plain_json():
    d = PrecisionDecision("float32", "setting", "explicit", ("avx512_bf16",)).as_dict()
    assert json.loads(json.dumps(d)) == {
        "dtype": "float32",
        "source": "setting",
        "reason": "explicit",
        "cpu_flags": ["avx512_bf16"],
    }
