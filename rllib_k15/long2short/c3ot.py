"""C3oT: conditioned compressed chain of thought (``k15 long2short c3ot``).

C3oT (Kang et al. 2024) compresses each long CoT into a short one that keeps the key steps,
then trains on **both**, each behind a condition marker: the prompt is prefixed ``[LONG]``
for the long CoT and ``[SHORT]`` for the compressed one. At inference the prompt carries
``[SHORT]``: the model answers with the short chain it learned from the pair. The paper's
baseline trains on the compressed CoTs alone (``--short-only``).

Here:

* **Data**: per problem, the longest correct response sampled from ``--model`` (or read from
  a ``--save-samples`` parquet) is the long CoT (``--per-problem`` more, distinct).
* **Compressors** (the paper used GPT-4; none is available offline):
  ``rule`` — :func:`rule_compress`, a deterministic condenser for arithmetic CoTs: the final
  answer line, plus the equations connected to it through the numbers they share, walking
  back from the answer; filler sentences, unconnected checks and repeats are dropped.
  ``model`` — :func:`model_compress`, the model itself prompted to condense its CoT; the
  shortest candidate that the env's verifier grades correct and that is shorter than the
  original is kept, else the problem is dropped. A rule output the verifier does not grade
  correct is dropped too.
* **Conditioning markers** are plain text, ``"[SHORT] " + prompt`` (:func:`condition_prompt`),
  not new special tokens: the vocabulary and the embedding matrix stay as they are, so the
  output loads anywhere the base model does (vLLM included), and the few tokens of each
  marker already have trained embeddings (a new special token would start from an
  untrained row, which the small SFT sets here barely move).
* **Inference condition, env-independent**: the output's chat template prepends the marker
  to every user message that carries none (:func:`conditioned_chat_template`), so
  ``k15 eval --model OUT`` evaluates the ``[SHORT]`` mode unchanged; a prompt that starts
  with a marker keeps its own. Rendering a message through that template gives exactly
  the tokens training saw (the base template on the marked prompt). ``--condition long``
  also writes ``OUT/long_mode``: the same weights with a ``[LONG]`` template.

CLI::

    k15 long2short c3ot --model smollm2-135m-instruct --env k15/Arithmetic-v0 \\
        --env-kwargs '{"difficulty": 4, "split": "train", "size": 256}' --out runs/c3ot
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rllib_k15.long2short.selection import (
    ProblemSamples,
    Sample,
    SFTExample,
    shortest_correct_index,
)

if TYPE_CHECKING:
    from rllib_k15.long2short.method_run import MethodSettings

__all__ = [
    "COMPRESSORS",
    "CONDITIONS",
    "CompressedCoT",
    "apply_condition",
    "c3ot_examples",
    "compression_prompt",
    "condition_prompt",
    "conditioned_chat_template",
    "export_condition",
    "longest_correct",
    "model_compress",
    "rule_compress",
    "run_c3ot",
    "split_segments",
]

CONDITIONS: dict[str, str] = {"long": "[LONG]", "short": "[SHORT]"}
COMPRESSORS = ("rule", "model")
LONG_MODE_DIR = "long_mode"
_BEGIN, _END = "{# k15 c3ot condition #}", "{# /k15 c3ot condition #}"

# ------------------------------------------------------------------ conditioning


def _marker(condition: str) -> str:
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose one of {sorted(CONDITIONS)}")
    return CONDITIONS[condition]


def condition_prompt(prompt: str, condition: str) -> str:
    """``"[SHORT] " + prompt`` (or ``[LONG]``); a prompt already marked is left alone."""
    marker = _marker(condition)
    return prompt if prompt.startswith(tuple(CONDITIONS.values())) else f"{marker} {prompt}"


def strip_condition(template: str) -> str:
    """``template`` without a preamble added by :func:`conditioned_chat_template`."""
    if template.startswith(_BEGIN) and _END in template:
        return template[template.index(_END) + len(_END) :]
    return template


def conditioned_chat_template(template: str, condition: str) -> str:
    """A Jinja preamble + ``template``: each user message with string content gets
    :func:`condition_prompt` applied before the original template renders the chat. The
    preamble emits no text; re-conditioning replaces an earlier preamble."""
    marker = _marker(condition)
    markers = "(" + ", ".join(f"'{m}'" for m in CONDITIONS.values()) + ")"
    preamble = (
        f"{_BEGIN}{{% set ns = namespace(messages=[]) %}}{{% for m in messages %}}"
        f"{{% if m['role'] == 'user' and m['content'] is string "
        f"and not m['content'].startswith({markers}) %}}"
        f"{{% set ns.messages = ns.messages + [dict(m, content='{marker} ' + m['content'])] %}}"
        "{% else %}{% set ns.messages = ns.messages + [m] %}{% endif %}{% endfor %}"
        f"{{% set messages = ns.messages %}}{_END}"
    )
    return preamble + strip_condition(template)


def apply_condition(tokenizer: Any, condition: str) -> None:
    """Make ``tokenizer``'s chat template prepend ``condition``'s marker (in place)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        raise ValueError(
            "c3ot puts the inference condition in the chat template, but the tokenizer has "
            f"no single chat template (got {type(template).__name__})"
        )
    tokenizer.chat_template = conditioned_chat_template(template, condition)


def export_condition(model_dir: str | Path, dest: str | Path, condition: str) -> Path:
    """A copy of ``model_dir`` (weights hard-linked where possible) whose chat template
    prepends ``condition``'s marker."""
    from rllib_k15.models import load_tokenizer

    src, dest = Path(model_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and (path.suffix == ".safetensors" or path.name in (
            "config.json", "generation_config.json", "model.safetensors.index.json",
        )):  # fmt: skip
            target = dest / path.name
            target.unlink(missing_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    tokenizer = load_tokenizer(src)
    apply_condition(tokenizer, condition)
    tokenizer.save_pretrained(dest)
    return dest


# ------------------------------------------------------------------ rule compressor

_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_OPERATION = re.compile(
    r"\d\s*(?:[-+*/×÷·^−]|\\times|\\cdot|\\div)\s*[($]?\s*[-−]?\d"
    r"|\d\s+(?:plus|minus|times|divided by|multiplied by)\s+\d",
    re.IGNORECASE,
)
_RESULT = re.compile(r"(?:=|\bequals?\b|\bis\b|\bgives\b|\bmakes\b)\s*\$?\s*[-−]?\d", re.I)
_ANSWER_MARK = re.compile(r"\\boxed|\\fbox|<answer>|\banswer\b|^\s*####", re.IGNORECASE)
_LEAD = re.compile(
    r"^(?:so|therefore|thus|hence|now|first|firstly|next|then|finally|okay|ok|well|"
    r"and|also|step \d+)\b[,:]?\s+",
    re.IGNORECASE,
)


def split_segments(text: str) -> list[str]:
    """Lines, each split into sentences at ``. ! ?`` followed by whitespace (a decimal
    point has none); empty pieces dropped."""
    out = []
    for line in text.splitlines():
        out.extend(p.strip() for p in re.split(r"(?<=[.!?])\s+", line) if p.strip())
    return out


def _numbers(text: str) -> set[str]:
    """Magnitudes of the numbers in ``text``: ``"1,234.50"`` -> ``"1234.5"``, signs dropped."""
    out = set()
    for raw in _NUMBER.findall(text):
        number = raw.replace(",", "")
        out.add(number.rstrip("0").rstrip(".") if "." in number else number)
    return out


def _is_equation(segment: str) -> bool:
    """A step that computes something: ``a op b = c``, ``= c``, ``a op b is c``."""
    return bool(_RESULT.search(segment)) and ("=" in segment or bool(_OPERATION.search(segment)))


def _trim(segment: str) -> str:
    """Drop a leading discourse marker, and a lead-in before ``": "`` when the rest is the
    equation (``"Then add the tens: 4 + 2 = 6."`` -> ``"4 + 2 = 6."``)."""
    segment = _LEAD.sub("", segment, count=1)
    head, sep, tail = segment.rpartition(": ")
    return tail if sep and _is_equation(tail) and not _is_equation(head) else segment


def _final_index(segments: Sequence[str], answer_numbers: set[str]) -> int | None:
    """The segment that states the answer: the last with an answer marker, else the last
    holding the answer's number."""
    for mark in (
        lambda s: bool(_ANSWER_MARK.search(s)),
        lambda s: bool(_numbers(s) & answer_numbers),
    ):
        found = [i for i, s in enumerate(segments) if mark(s)]
        if found:
            return found[-1]
    return None


def rule_compress(cot: str, answer: str) -> str:
    """Condense an arithmetic CoT whose final answer is ``answer``.

    Keep the answer segment (:func:`_final_index`; everything after it is dropped) and walk
    back from it: an equation (:func:`_is_equation`) that shares a number with the kept
    steps is kept and its numbers join them. If no equation connects, segments sharing a
    needed number are kept instead. Kept steps lose leading filler (:func:`_trim`); exact
    repeats, and checks (an equation whose result, :func:`_result`, already appears in an
    earlier kept step), are dropped; one step per line. A CoT with no anchor comes back stripped."""
    segments = split_segments(cot)
    needed = _numbers(answer)
    final = _final_index(segments, needed)
    if final is None:
        return cot.strip()
    for equations_only in (True, False):
        kept, have = [final], needed | _numbers(segments[final])
        for i in range(final - 1, -1, -1):
            numbers = _numbers(segments[i])
            if numbers & have and (_is_equation(segments[i]) or not equations_only):
                kept.append(i)
                have |= numbers
        if len(kept) > 1:
            break
    lines: list[str] = []
    known: set[str] = set()
    for i in sorted(kept):
        line = segments[i] if i == final else _trim(segments[i])
        result = _result(line) if i != final else None
        if line in lines or (result is not None and result in known):
            continue  # a repeat, or a check that derives a number already on the page
        known |= _numbers(line)
        lines.append(line)
    return "\n".join(lines)


def _result(segment: str) -> str | None:
    """The value a step derives: the first number after its last ``=``, if any."""
    if "=" not in segment:
        return None
    found = _NUMBER.search(segment.rsplit("=", 1)[1])
    return next(iter(_numbers(found.group()))) if found else None


# ------------------------------------------------------------------ model compressor

COMPRESS_INSTRUCTION = (
    "Rewrite the solution below as briefly as possible. Keep only the calculations that lead "
    "to the answer, drop everything else, and end with the final answer in the same format."
)


def compression_prompt(problem_prompt: str, cot: str) -> str:
    """The user message asking the model to condense ``cot``."""
    return f"{COMPRESS_INSTRUCTION}\n\nProblem:\n{problem_prompt}\n\nSolution:\n{cot}"


class _CompressionView:
    """The env as :func:`~rllib_k15.long2short.collect.sample_groups` sees it: problem ``i``
    asks to condense long CoT ``i`` and is graded as the original problem ``i``."""

    def __init__(self, env: Any, problems: Sequence[Any], prompts: Sequence[str]) -> None:
        self.env, self.problems, self.prompts = env, list(problems), list(prompts)

    def __len__(self) -> int:
        return len(self.problems)

    def problem(self, i: int) -> Any:
        return replace(self.problems[i], prompt=self.prompts[i])

    def verify_batch(self, problems: Sequence[Any], responses: Sequence[str], truncated=None):
        return self.env.verify_batch(problems, responses, truncated)


def model_compress(
    engine: Any,
    env: Any,
    problems: Sequence[Any],
    cots: Sequence[Sample],
    *,
    n: int = 4,
    temperature: float = 0.7,
    max_tokens: int = 512,
    problems_per_call: int = 16,
    progress: bool = True,
) -> list[str | None]:
    """Per long CoT, the shortest of ``n`` condensed candidates that is graded correct and
    has fewer tokens than the CoT (``Sample.token_length``), or None."""
    from rllib_k15.long2short.collect import sample_groups

    prompts = [
        compression_prompt(p.prompt, c.response) for p, c in zip(problems, cots, strict=True)
    ]
    view = _CompressionView(env, problems, prompts)
    groups = sample_groups(engine, view, range(len(view)), n, temperature, max_tokens,
                           problems_per_call, progress=progress)  # fmt: skip
    out: list[str | None] = []
    for group, cot in zip(groups, cots, strict=True):
        ok = [
            s._replace(correct=s.correct and s.token_length < cot.token_length)
            for s in group.samples
        ]
        best = shortest_correct_index(ok)
        out.append(None if best is None else ok[best].response.strip())
    return out


# ------------------------------------------------------------------ data


@dataclass(frozen=True)
class CompressedCoT:
    """One long CoT and its compression (tokens as the trainer encodes the response)."""

    problem_id: str
    prompt: str
    long: str
    short: str
    long_tokens: int
    short_tokens: int
    num_samples: int
    num_correct: int


def longest_correct(groups: Sequence[ProblemSamples], per_problem: int = 1) -> list[tuple]:
    """``(group, sample)`` for up to ``per_problem`` distinct correct samples per problem,
    longest first (ties: earliest sample)."""
    if per_problem < 1:
        raise ValueError(f"`per_problem` ({per_problem}) must be >= 1")
    chosen = []
    for group in groups:
        order = sorted(range(len(group.samples)), key=lambda i: (-group.samples[i].token_length, i))
        texts: list[str] = []
        for i in order:
            sample = Sample(*group.samples[i])
            if sample.correct and sample.response not in texts and len(texts) < per_problem:
                texts.append(sample.response)
                chosen.append((group, sample))
    return chosen


def c3ot_examples(items: Sequence[CompressedCoT], short_only: bool = False) -> list[SFTExample]:
    """C3oT's training set: each item twice, ``[LONG] prompt -> long`` and ``[SHORT] prompt ->
    short``; ``short_only`` (the baseline): ``prompt -> short`` alone, unmarked."""
    out = []
    for it in items:
        pairs = [(it.prompt, it.short, it.short_tokens)] if short_only else [
            (condition_prompt(it.prompt, "long"), it.long, it.long_tokens),
            (condition_prompt(it.prompt, "short"), it.short, it.short_tokens),
        ]  # fmt: skip
        out.extend(SFTExample(it.problem_id, p, r, t, it.num_samples, it.num_correct)
                   for p, r, t in pairs)  # fmt: skip
    return out


def _stats(num_problems: int, num_long: int, items: Sequence[CompressedCoT]) -> dict[str, Any]:
    long = sum(it.long_tokens for it in items)
    short = sum(it.short_tokens for it in items)
    return {
        "num_problems": num_problems,
        "num_long_cots": num_long,
        "num_compressed": len(items),
        "num_dropped": num_long - len(items),
        "num_unchanged": sum(it.short == it.long.strip() for it in items),
        "mean_long_tokens": long / len(items) if items else None,
        "mean_short_tokens": short / len(items) if items else None,
        "compression_ratio": short / long if long else None,
    }


def run_c3ot(
    settings: MethodSettings,
    *,
    compressor: str = "rule",
    short_only: bool = False,
    condition: str = "short",
    per_problem: int = 1,
    compress_samples: int = 4,
    compress_temperature: float = 0.7,
    log: Callable = print,
) -> dict[str, Any]:
    """The whole method on ``settings`` (:class:`~rllib_k15.long2short.method_run.MethodSettings`):
    samples -> long CoTs -> compression -> conditioned data -> base eval -> SFT ->
    ``[SHORT]`` eval (and ``[LONG]`` with ``condition="long"``) -> ``<out>/report.json``."""
    from rllib_k15.long2short.method_run import MethodError, MethodRun
    from rllib_k15.long2short.training import encode_response

    if compressor not in COMPRESSORS:
        raise MethodError(f"--compressor {compressor!r}: choose one of {list(COMPRESSORS)}")
    if short_only and condition == "long":
        raise MethodError("--condition long needs the conditioned model; --short-only has none")
    _marker(condition)
    data_settings = {"compressor": compressor, "per_problem": per_problem, "short_only": short_only}
    if compressor == "model":
        data_settings |= {"compress_samples": compress_samples, "temperature": compress_temperature}
    with MethodRun(settings, "c3ot", log) as run:
        groups, _ = run.groups()

        def build() -> tuple[list[SFTExample], dict[str, Any]]:
            chosen = longest_correct(groups, per_problem)
            env, problems = run.env(), run.problems([g for g, _ in chosen])
            cots = [s for _, s in chosen]
            if compressor == "rule":
                texts = [rule_compress(c.response, p.answer)
                         for c, p in zip(cots, problems, strict=True)]  # fmt: skip
                verdicts = env.verify_batch(problems, texts) if texts else []
                shorts: list[str | None] = [
                    t if v.correct else None for t, v in zip(texts, verdicts, strict=True)
                ]
            else:
                shorts = model_compress(
                    run.engine(settings.model), env, problems, cots, n=compress_samples,
                    temperature=compress_temperature, max_tokens=settings.max_tokens,
                    problems_per_call=settings.problems_per_call, progress=settings.progress,
                )  # fmt: skip
            tok, items = run.tokenizer(), []
            for (group, cot), short in zip(chosen, shorts, strict=True):
                if short is not None:
                    items.append(CompressedCoT(
                        group.problem_id, group.prompt, cot.response, short,
                        len(encode_response(tok, cot.response)), len(encode_response(tok, short)),
                        len(group.samples), sum(bool(s.correct) for s in group.samples),
                    ))  # fmt: skip
            return c3ot_examples(items, short_only), _stats(len(groups), len(chosen), items)

        examples, stats = run.data(build, data_settings)
        tokens = [f"{t:.1f}" if t is not None else "n/a"
                  for t in (stats["mean_long_tokens"], stats["mean_short_tokens"])]  # fmt: skip
        log(f"c3ot: {stats['num_compressed']} of {stats['num_long_cots']} long CoTs compressed "
            f"({compressor}), {tokens[0]} -> {tokens[1]} mean tokens")  # fmt: skip
        if not examples:
            raise MethodError(
                f"no compressed CoT to train on ({stats['num_long_cots']} correct long CoTs from "
                f"{stats['num_problems']} problems, {stats['num_dropped']} dropped)"
            )
        evals = {"base": run.evaluate("base", settings.model)}
        label = "c3ot-short-only" if short_only else "c3ot-short"
        finish = None if short_only else (lambda tok: apply_condition(tok, "short"))
        sft = run.train(examples, {**data_settings, "template": None if short_only else "short"},
                        finish)  # fmt: skip
        evals[label] = run.evaluate(label, run.out, after=("model",))
        if condition == "long":
            long_dir = run.out / LONG_MODE_DIR
            if "model" in run.steps.ran or not (long_dir / "config.json").exists():
                export_condition(run.out, long_dir, "long")
            evals["c3ot-long"] = run.evaluate("c3ot-long", long_dir, after=("model",))
        report = {"method": "c3ot", **data_settings, "condition": condition,
                  "markers": CONDITIONS, "data": stats, "sft": sft, "eval": evals}  # fmt: skip
        return run.write_report(report)
