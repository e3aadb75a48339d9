"""The resumable ``k15 long2short ccot`` run: data, teacher targets, the three training
phases per compression ratio, evaluation on the test split and the report (each step keyed by
its settings and skipped when done). The model and its training live in
:mod:`rllib_k15.long2short.ccot_model`, the pure parts in :mod:`rllib_k15.long2short.ccot`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rllib_k15.long2short.ccot import (
    CCoTRun,
    CoTExample,
    ccot_eval_result,
    cost_summary,
    examples_from_samples,
    num_contemplation,
    procedural_example,
    subsample_indices,
    target_variance,
)
from rllib_k15.long2short.ccot_model import (
    CCoTModel,
    CCoTSettings,
    contemplations,
    full_cot_decode,
    teacher_states,
    train_decode,
    train_phi,
)
from rllib_k15.long2short.step_records import fingerprint, read_result, write_json, write_result

__all__ = ["encode_examples", "load_data", "run_ccot"]

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------- the run (resumable)


@dataclass(frozen=True)
class _Encoded:
    """Token ids of one example: prompt (chat template), CoT, answer + EOS."""

    prompt: list[int]
    cot: list[int]
    answer: list[int]


def _fingerprint(*parts: Any) -> str:
    """The key a step's output is stored under (:func:`read_result`): a short sha256 of
    the JSON of ``parts``."""
    return fingerprint(parts, length=20)


def _bar(items: Sequence[Any], desc: str, run: CCoTRun) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not run.progress)


def load_data(run: CCoTRun) -> dict[str, Any]:
    """Training examples, test problems (the env's ``test`` split), their reference CoTs
    (procedural runs only), the test env and what to record about the data."""
    from rllib_k15.env_factory import make_unwrapped_env
    from rllib_k15.long2short.data import read_parquet_info, read_samples_parquet

    env_id, kwargs, groups = run.env, dict(run.env_kwargs), None
    if run.from_samples:
        groups = read_samples_parquet(run.from_samples)
        stored = read_parquet_info(run.from_samples)
        env_id = env_id or stored.get("env")
        drop = ("split", "size")
        kwargs = kwargs or {
            k: v for k, v in (stored.get("env_kwargs") or {}).items() if k not in drop
        }
    if not env_id:
        raise ValueError(f"--env is needed: {run.from_samples} names no env")
    for key in ("split", "size"):
        if key in kwargs:
            raise ValueError(
                f"--env-kwargs must not set {key!r}: the run uses the env's train "
                "and test splits with --train-problems / --test-problems"
            )
    test_kwargs = {**kwargs, "split": "test", "size": run.test_problems}
    test_env = make_unwrapped_env(env_id, test_kwargs)
    test = [test_env.problem(i) for i in range(len(test_env))]
    if groups is not None:
        train, dropped = examples_from_samples(groups, {p.prompt for p in test})
        references, source = None, {"from_samples": str(run.from_samples), "dropped": dropped}
    else:
        train_env = make_unwrapped_env(
            env_id, {**kwargs, "split": "train", "size": run.train_problems}
        )
        train = [procedural_example(train_env.problem(i)) for i in range(len(train_env))]
        references, source = [procedural_example(p) for p in test], {"procedural": True}
    if not train:
        raise ValueError(f"no training example (dropped: {source.get('dropped')})")
    return {
        "train": train[: run.train_problems],
        "test": test,
        "references": references,
        "test_env": test_env,
        "env": env_id,
        "test_kwargs": test_kwargs,
        "source": source,
    }


def encode_examples(
    tokenizer: Any, examples: Sequence[CoTExample], run: CCoTRun
) -> tuple[list[CoTExample], list[_Encoded]]:
    """The examples whose prompt + CoT fit ``max_length`` tokens, and their ids."""
    from rllib_k15.long2short.training import encode_prompt, encode_response

    kept, encoded = [], []
    for ex in examples:
        prompt = encode_prompt(tokenizer, ex.prompt, run.use_chat_template)
        cot = list(tokenizer(ex.cot, add_special_tokens=False)["input_ids"])
        if cot and len(prompt) + len(cot) <= run.max_length:
            kept.append(ex)
            encoded.append(_Encoded(prompt, cot, encode_response(tokenizer, ex.answer)))
    return kept, encoded


def _targets(
    run: CCoTRun, out: Path, base: Any, encoded: list[_Encoded], layer: int, data_key: str
) -> dict[float, list[torch.Tensor]]:
    """z* per ratio (``<out>/r<r>/targets.pt``): one teacher pass serves every ratio."""
    targets, missing = {}, []
    for r in run.ratios:
        path = out / f"r{r}" / "targets.pt"
        stored = torch.load(path) if path.is_file() else {}
        if stored.get("key") == _fingerprint(data_key, layer, r):
            targets[r] = stored["targets"]
        else:
            missing.append(r)
    if missing:
        fresh: dict[float, list[torch.Tensor]] = {r: [] for r in missing}
        for e in _bar(encoded, "ccot targets", run):
            states = teacher_states(base, layer, e.prompt, e.cot)  # (m, d)
            for r in missing:
                idx = subsample_indices(len(e.cot), num_contemplation(len(e.cot), r))
                fresh[r].append(states[idx].clone())
        for r in missing:
            path = out / f"r{r}" / "targets.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": _fingerprint(data_key, layer, r), "targets": fresh[r]}, path)
        targets.update(fresh)
    return targets


def _full_cot(
    run: CCoTRun,
    out: Path,
    base: Any,
    tokenizer: Any,
    data: dict[str, Any],
    prompts: list[list[int]],
) -> dict[str, Any]:
    """Decoding cost of the full CoT on every test problem (``<out>/full_cot.json``): the
    reference CoT decoded token by token (procedural runs), else the base model's own
    greedy CoT, graded (its Pass@1 is then recorded too)."""
    from rllib_k15.long2short.training import encode_response

    refs = data["references"]
    responses = (
        None if refs is None else [encode_response(tokenizer, f"{e.cot}\n{e.answer}") for e in refs]
    )
    key = _fingerprint(run.model, prompts, responses, run.full_cot_max_tokens)
    stored = read_result(out / "full_cot.json", key)
    if stored is not None:
        return stored
    eos, tokens, seconds, texts, cut = int(tokenizer.eos_token_id), [], [], [], []
    for i, prompt in enumerate(_bar(prompts, "full CoT", run)):
        forced = None if responses is None else responses[i]
        ids, truncated, sec = full_cot_decode(base, prompt, forced, run.full_cot_max_tokens, eos)
        tokens.append(len(ids)), seconds.append(sec), cut.append(truncated)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    result: dict[str, Any] = {
        "tokens": tokens,
        "seconds": seconds,
        "mode": "reference" if refs is not None else "greedy",
    }
    if refs is None:
        verdicts = data["test_env"].verify_batch(data["test"], texts, truncated=cut)
        result["pass_at_1"] = statistics.fmean(bool(v.correct) for v in verdicts)
    return write_result(out / "full_cot.json", key, result)


def _evaluate(
    ccot: CCoTModel,
    run: CCoTRun,
    data: dict[str, Any],
    prompts: list[list[int]],
    full: dict[str, Any],
    rdir: Path,
) -> dict[str, Any]:
    """Greedy CCoT answers on the test problems: the eval row (appended to ``results``)
    and the decoding cost against the full CoT."""
    from rllib_k15.evaluation.evaluate import append_results, make_row

    started = time.perf_counter()
    answers = [ccot.answer(p) for p in _bar(prompts, f"ccot eval r={ccot.settings.ratio}", run)]
    wall = time.perf_counter() - started
    truncated = [a.truncated for a in answers]
    verdicts = data["test_env"].verify_batch(data["test"], [a.text for a in answers], truncated)
    lengths = [a.steps + len(a.answer_ids) for a in answers]
    seconds = [a.seconds for a in answers]
    result = ccot_eval_result(verdicts, lengths, truncated, seconds, wall)
    steps, answer_tokens = [a.steps for a in answers], [len(a.answer_ids) for a in answers]
    costs = cost_summary(steps, answer_tokens, full["tokens"], seconds, full["seconds"])
    row = make_row(
        result,
        label=f"{run.label}-r{ccot.settings.ratio}",
        model=str(rdir),
        engine="hf",
        env=data["env"],
        env_kwargs=data["test_kwargs"],
        max_tokens=run.answer_max_tokens,
        temperature=0.0,
        top_p=1.0,
        seed=run.seed,
        method="ccot",
        ratio=ccot.settings.ratio,
        layer=ccot.settings.layer,
        **costs,
    )
    if run.results:
        append_results(run.results, [row])
    examples = [
        {"problem_id": p.id, "answer": a.text, "steps": a.steps, "correct": v.correct}
        for p, a, v in list(zip(data["test"], answers, verdicts))[:5]
    ]
    return {"row": row, "costs": costs, "examples": examples}


def _train_ratio(
    run: CCoTRun,
    rdir: Path,
    ccot: CCoTModel,
    encoded: list[_Encoded],
    targets: list[torch.Tensor],
    keys: dict[str, str],
) -> dict[str, Any]:
    """φ+END then ψ for one ratio, each skipped when done with the same settings key."""
    from rllib_k15.long2short.training import JsonlLog

    phi = read_result(rdir / "phi.json", keys["phi"])
    decode = read_result(rdir / "decode.json", keys["decode"]) if phi is not None else None
    if phi is None:
        variance = target_variance(targets) if run.loss == "scaled_mse" else None
        items = [(e.prompt, t) for e, t in zip(encoded, targets, strict=True)]
        phi = train_phi(ccot, items, variance, run.phi, JsonlLog(rdir / "phi_metrics.jsonl"))
        ccot.save(rdir)
        write_result(rdir / "phi.json", keys["phi"], phi)
    if decode is None:
        ccot.reset_decode()
        ks = [len(t) for t in targets]
        cs = contemplations(ccot, [e.prompt for e in encoded], ks, run.decode.batch_size)
        items = [(e.prompt, c, e.answer) for e, c in zip(encoded, cs, strict=True)]
        log = JsonlLog(rdir / "decode_metrics.jsonl")
        decode = train_decode(ccot, items, run.decode, log)
        ccot.save(rdir)
        write_result(rdir / "decode.json", keys["decode"], decode)
    return {"phi": phi, "decode": decode}


def _model_ref(model: str) -> str:
    """How ``ccot.json`` names the base: a registered name as is, a directory absolute."""
    from rllib_k15.models import MODEL_REGISTRY

    return model if model in MODEL_REGISTRY else str(Path(model).expanduser().resolve())


def run_ccot(run: CCoTRun) -> dict[str, Any]:
    """``k15 long2short ccot``: the data, the full-CoT cost, then per ratio r targets →
    φ+END → ψ → eval in ``<out>/r<r>/`` — each step skipped when its output exists with
    the same settings — and ``<out>/report.json`` (returned)."""
    from rllib_k15.long2short.training import encode_prompt
    from rllib_k15.models import load_hf_model, load_tokenizer

    out = Path(run.out)
    data = load_data(run)
    tokenizer = load_tokenizer(run.model)
    base = load_hf_model(run.model, dtype="float32")
    num_layers = int(base.config.num_hidden_layers)
    layer = run.layer if run.layer is not None else max(1, num_layers // 2)
    if not 1 <= layer <= num_layers:
        raise ValueError(f"--layer ({layer}) must be in 1..{num_layers} for {run.model}")
    train, encoded = encode_examples(tokenizer, data["train"], run)
    if not train:
        raise ValueError(f"no training CoT fits --max-length ({run.max_length}) tokens")
    prompts = [encode_prompt(tokenizer, p.prompt, run.use_chat_template) for p in data["test"]]
    rows = [dataclasses.astuple(e) for e in train]
    data_key = _fingerprint(run.model, rows, run.use_chat_template)
    full = _full_cot(run, out, base, tokenizer, data, prompts)
    all_targets = _targets(run, out, base, encoded, layer, data_key)
    report: dict[str, Any] = {
        "method": "ccot",
        "model": run.model,
        "env": data["env"],
        "test_env_kwargs": data["test_kwargs"],
        "layer": layer,
        "data": {
            **data["source"],
            "num_train": len(train),
            "num_test": len(data["test"]),
            "skipped_too_long": len(data["train"]) - len(train),
            "mean_cot_tokens": statistics.fmean(len(e.cot) for e in encoded),
        },
        "full_cot": {k: v for k, v in full.items() if k not in ("tokens", "seconds")}
        | {"mean_tokens": statistics.fmean(full["tokens"])},
        "ratios": {},
    }
    for r in run.ratios:
        targets, rdir = all_targets[r], out / f"r{r}"
        lora = (run.lora_r, run.lora_alpha)
        phi_key = _fingerprint(data_key, layer, r, run.loss, lora, dataclasses.asdict(run.phi))
        keys = {"phi": phi_key, "decode": _fingerprint(phi_key, dataclasses.asdict(run.decode))}
        cap = run.max_contemplation or 2 * max(len(t) for t in targets)
        settings = CCoTSettings(
            _model_ref(run.model),
            layer,
            r,
            cap,
            run.end_threshold,
            run.answer_max_tokens,
            run.use_chat_template,
            run.lora_r,
            run.lora_alpha,
        )
        torch.manual_seed(run.seed)
        if read_result(rdir / "phi.json", keys["phi"]) is not None:
            ccot = CCoTModel.load(rdir, base=copy.deepcopy(base), tokenizer=tokenizer)
            ccot.settings = settings
        else:
            ccot = CCoTModel.create(copy.deepcopy(base), tokenizer, settings)
        trained = _train_ratio(run, rdir, ccot, encoded, targets, keys)
        ccot.save(rdir, settings_only=True)  # the eval settings of this run
        eval_key = _fingerprint(
            keys["decode"], cap, run.end_threshold, run.answer_max_tokens, prompts, full
        )
        evaluated = read_result(rdir / "eval.json", eval_key)
        if evaluated is None:
            evaluated = write_result(
                rdir / "eval.json", eval_key, _evaluate(ccot, run, data, prompts, full, rdir)
            )
        report["ratios"][str(r)] = {
            "dir": str(rdir),
            "k_mean": statistics.fmean(len(t) for t in targets),
            **trained,
            **evaluated,
        }
    write_json(out / "report.json", report)
    return report
