"""``k15 curate``: dedup, decontamination, the format rules, the easy-to-hack filter with a fake
engine, the resume cache, one end-to-end CLI run on the tiny model, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rllib_k15.commands.k15 import main
from rllib_k15.data.curate import (
    CurateRow,
    decontaminate,
    exact_dedup,
    exact_key,
    near_dedup,
    normalise,
    words,
)
from rllib_k15.data.curate_filters import (
    DEFAULT_FORMAT_RULES,
    HACK_INSTRUCTION,
    FormatRuleError,
    Grader,
    default_format_rules,
    difficulty_pass_rates,
    format_filter,
    hack_filter,
    load_format_rules,
)
from rllib_k15.data.curate_report import ResultCache, load_rows
from rllib_k15.engine import Completion

FARM = (
    "A farmer keeps 17 cows and 25 sheep on a large farm beside the river. Every morning "
    "he moves half of the sheep to the northern field, and in the evening he brings all "
    "of them back to the barn together with the cows. One day a storm breaks the fence "
    "of the northern field and four sheep run away into the forest. How many animals "
    "does the farmer bring back to the barn that evening?"
)
TRAIN = (
    "Two trains leave the same station at noon, one heading east at 60 kilometres per hour "
    "and the other heading west at 45 kilometres per hour. How far apart are they at 3 pm?"
)
DISTINCT = [
    "What is the remainder when $2^{100}$ is divided by 7?",
    "Find the area of a triangle with side lengths 13, 14 and 15.",
    # same setting as FARM, different question: shares many shingles but is not a duplicate
    FARM.replace(
        "How many animals does the farmer bring back to the barn that evening?",
        "What fraction of all the sheep is lost in the forest, and how many cows are left "
        "in the barn after the storm has passed over the farm?",
    ),
]


def _rows(texts: list[str], source: str = "train.jsonl") -> list[CurateRow]:
    return [
        CurateRow(source, i, f"r{i}", t, "1", "math", {"problem": t, "answer": "1"})
        for i, t in enumerate(texts)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------- steps 1-3


def test_exact_duplicates_differ_only_in_case_spacing_and_end_punctuation() -> None:
    assert normalise("  What IS 17 +\n 25?? ") == "what is 17 + 25"
    assert exact_key("What is 17 + 25?") == exact_key("what  is 17 + 25")
    assert exact_key("What is 17 + 25?") != exact_key("What is 17 + 26?")
    kept, drops = exact_dedup(_rows(["What is 17 + 25?", "what is  17 + 25", "What is 1 + 2?"]))
    assert [r.id for r in kept] == ["r0", "r2"]
    assert [(d.row.id, d.detail["duplicate_of"]) for d in drops] == [("r1", "r0")]


def test_near_duplicates_are_removed_and_distinct_problems_kept() -> None:
    texts = [
        FARM,
        FARM.replace("17 cows", "19 cows"),  # one number reworded
        FARM.replace("half of the sheep", "half  of the\n sheep").replace("river.", "river ."),
        TRAIN,
        TRAIN.replace(",", " ,").replace(" at ", "  at\t"),  # spacing: not an exact duplicate
        *DISTINCT,
    ]
    kept, drops = near_dedup(_rows(texts), threshold=0.8)
    assert [r.text for r in kept] == [FARM, TRAIN, *DISTINCT]
    assert {d.row.id: d.detail["duplicate_of"] for d in drops} == {
        "r1": "r0",
        "r2": "r0",
        "r4": "r3",
    }
    assert all(0.8 <= d.detail["jaccard"] <= 1.0 for d in drops)
    strict, _ = near_dedup(_rows(texts), threshold=0.97)  # a stricter threshold keeps rewordings
    assert "r1" in {r.id for r in strict} and "r2" not in {r.id for r in strict}


def test_decontamination_drops_exactly_the_leaked_rows() -> None:
    eval_long = (
        "Let $f(x) = x^2 - 5x + 6$ be a quadratic function defined for every real number x "
        "and let g be its inverse on the right branch. Compute g(12)."
    )
    eval_rows = [
        CurateRow("eval.jsonl", 0, "aime/1", eval_long, "7", "eval", {}),
        CurateRow("eval.jsonl", 1, "aime/2", "What is 17 + 25?", "42", "eval", {}),
    ]
    tokens = words(eval_long)  # the tokeniser's words: "$f(x) = x^2" is "f x x 2"
    train = [
        "Warm-up: " + " ".join(tokens[3:16]) + " and then stop.",  # 13 words of eval_long
        "Warm-up: " + " ".join(tokens[3:15]) + " and then stop.",  # only 12: not a leak
        "what is 17+25",  # the short eval problem, whole text (same words)
        "What is 17 + 26?",  # short and different
        FARM,
    ]
    kept, drops = decontaminate(_rows(train), eval_rows, n=13)
    assert [r.id for r in kept] == ["r1", "r3", "r4"]
    assert {d.row.id: d.detail["eval_id"] for d in drops} == {"r0": "aime/1", "r2": "aime/2"}
    kept12, _ = decontaminate(_rows(train), eval_rows, n=12)  # a smaller n catches r1 too
    assert "r1" not in {r.id for r in kept12}


# ---------------------------------------------------------------------------- step 4

RULE_EXAMPLES = {  # rule -> (problem, answer) it must catch
    "option_list": ("Which is prime? (A) 4 (B) 6 (C) 7 (D) 9", "7"),
    "option_lines": ("Which is prime?\nA. 4\nB. 6\nC. 7", "7"),
    "true_or_false": ("True or false: every prime number is odd.", "0"),
    "proof": ("Prove that the square root of 2 is irrational.", "0"),
    "answer_letter": ("Which of the listed numbers is the largest?", "\\textbf{(C)}"),
    "answer_true_false_yes_no": ("Is 91 a prime number?", "No"),
}
NORMAL = [  # must pass every default rule
    ("If P(A) = 0.3 and P(B) = 0.5 for independent A and B, find P(A and B).", "0.15"),
    ("How can the farmer improve his yield by 20 percent? Give the new yield.", "#### 120"),
    ("Compute $\\lim_{n\\to\\infty} (1 + 1/n)^n$.", "e"),
    ("Show your work: what is 6 times 7?", "\\boxed{42}"),
    (FARM, "38"),
]


def test_every_default_rule_has_an_example() -> None:
    assert set(RULE_EXAMPLES) == set(DEFAULT_FORMAT_RULES)


@pytest.mark.parametrize("rule_name", sorted(RULE_EXAMPLES))
def test_each_default_format_rule_catches_its_example(rule_name: str) -> None:
    problem, answer = RULE_EXAMPLES[rule_name]
    row = CurateRow("t.jsonl", 0, "x", problem, answer, "m", {})
    rule = next(r for r in default_format_rules() if r.name == rule_name)
    assert rule.matches(row)
    normal = [CurateRow("t.jsonl", i, f"n{i}", p, a, "m", {}) for i, (p, a) in enumerate(NORMAL)]
    kept, drops, matched = format_filter([*normal, row], default_format_rules())
    assert kept == normal, [(d.row.text, d.detail) for d in drops if d.row in normal]
    assert [d.row for d in drops] == [row] and rule_name in drops[0].detail["rules"]
    assert matched[rule_name] >= 1


def test_format_rules_file_replaces_the_defaults(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("integer_answer:\n  pattern: '^[0-9]+$'\n  field: answer\n")
    rules = load_format_rules(rules_file)
    rows = [
        CurateRow("t", 0, "proof", "Prove that 2 is prime.", "\\frac{1}{2}", "m", {}),
        CurateRow("t", 1, "int", "What is 6 times 7?", "#### 42", "m", {}),
    ]
    kept, drops, matched = format_filter(rows, rules)
    assert [r.id for r in kept] == ["proof"] and matched == {"integer_answer": 1}
    (tmp_path / "bad.yaml").write_text("broken: {pattern: '([a-z'}\n")
    with pytest.raises(FormatRuleError, match=r"bad.yaml: rule 'broken': bad regex"):
        load_format_rules(tmp_path / "bad.yaml")
    (tmp_path / "field.yaml").write_text("r: {pattern: 'x', field: solution}\n")
    with pytest.raises(FormatRuleError, match=r"rule 'r': field 'solution' must be one of"):
        load_format_rules(tmp_path / "field.yaml")


# ---------------------------------------------------------------------------- steps 5-6


class FakeEngine:
    """Replies by problem text: ``replies[text]`` (a list cycled over the n attempts); counts
    the prompts it is asked to generate for and remembers the sampling params."""

    def __init__(self, replies: dict[str, list[str]], default: str = "\\boxed{-1}") -> None:
        self.replies, self.default = replies, default
        self.messages: list[str] = []
        self.generated = 0
        self.params: list = []

    def encode_prompt(self, message: str) -> list[int]:
        self.messages.append(message)
        return [len(self.messages) - 1]

    def generate(self, prompt_token_ids, params) -> list[list[Completion]]:
        self.generated += len(prompt_token_ids)
        self.params.append(params)
        out = []
        for (i,) in prompt_token_ids:
            text = next((k for k in self.replies if self.messages[i].startswith(k)), None)
            replies = self.replies.get(text, [self.default])
            texts = [replies[j % len(replies)] for j in range(params.n)]
            out.append([Completion([1], [0.0], t, "stop") for t in texts])
        return out


@pytest.fixture
def math_rows(tmp_path: Path):
    import gymnasium as gym
    import k15_envs  # noqa: F401

    path = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "easy", "problem": "What is 17 + 25?", "answer": "42"},
            {"id": "lucky", "problem": "What is 3 * 14?", "answer": "42"},
            {"id": "hard", "problem": "Find the 10th prime.", "answer": "29"},
        ],
    )
    rows = load_rows(path)
    env = gym.make("k15/Math-v0", dataset=str(path))
    yield rows, [Grader(env.unwrapped, r.index) for r in rows]
    env.close()


def test_easy_to_hack_filter_drops_rows_answered_without_reasoning(math_rows) -> None:
    rows, graders = math_rows
    engine = FakeEngine(
        {
            "What is 17 + 25?": ["\\boxed{42}"],  # always right
            "What is 3 * 14?": ["\\boxed{41}"] * 7 + ["\\boxed{42}"],  # right once in 8
            "Find the 10th prime.": ["\\boxed{31}", "the answer is 23"],  # never right
        }
    )
    kept, drops = hack_filter(rows, graders, engine, attempts=8, progress=False)
    assert [r.id for r in kept] == ["hard"]
    assert {d.row.id: d.detail["correct_attempts"] for d in drops} == {"easy": 8, "lucky": 1}
    assert all("without reasoning within 8 attempts" in d.reason for d in drops)
    (params,) = engine.params
    assert (params.n, params.temperature, params.max_tokens) == (8, 1.0, 24)
    assert all(m.endswith(HACK_INSTRUCTION) for m in engine.messages)
    # fewer attempts: the lucky guess (8th attempt) is no longer found
    kept4, _ = hack_filter(rows, graders, FakeEngine(engine.replies), attempts=4, progress=False)
    assert [r.id for r in kept4] == ["lucky", "hard"]


def test_resume_cache_skips_finished_rows(math_rows, tmp_path: Path) -> None:
    rows, graders = math_rows
    cache_path = tmp_path / "report" / "curate_cache.jsonl"
    replies = {"What is 17 + 25?": ["\\boxed{42}", "\\boxed{1}"]}  # 1 of 2 right

    class Killed(BaseException):
        pass

    class KilledAfterOneBatch(FakeEngine):
        def generate(self, prompt_token_ids, params):
            if self.generated:
                raise Killed  # the kill, after the first batch was cached
            return super().generate(prompt_token_ids, params)

    kw = {"samples": 2, "settings": {"model": "m"}, "batch_problems": 2, "progress": False}
    with pytest.raises(Killed):
        difficulty_pass_rates(
            rows, graders, KilledAfterOneBatch(replies), cache=ResultCache(cache_path), **kw
        )
    assert len(ResultCache(cache_path)) == 2
    resumed = FakeEngine(replies)
    rates = difficulty_pass_rates(rows, graders, resumed, cache=ResultCache(cache_path), **kw)
    assert rates == [0.5, 0.0, 0.0] and resumed.generated == 1  # only the unfinished row
    again = FakeEngine(replies)
    assert difficulty_pass_rates(rows, graders, again, cache=ResultCache(cache_path), **kw) == rates
    assert again.generated == 0  # a second run makes no engine calls
    other = FakeEngine(replies)  # other settings are other results
    difficulty_pass_rates(
        rows, graders, other, cache=ResultCache(cache_path), **{**kw, "samples": 3}
    )
    assert other.generated == 3


# ---------------------------------------------------------------------------- the command


def _curate_inputs(tmp_path: Path) -> tuple[list[str], Path]:
    eval_text = (
        "A bag holds 5 red, 7 blue and 8 green marbles; two marbles are drawn without "
        "replacement. What is the probability that both are green?"
    )
    train_a = [
        {"id": "farm", "problem": FARM, "answer": "38", "subject": "arithmetic"},
        {"id": "farm2", "problem": FARM.replace("17 cows", "19 cows"), "answer": "40",
         "subject": "arithmetic"},
        {"id": "farm3", "problem": FARM.upper() + " ", "answer": "38", "subject": "arithmetic"},
        {"id": "leak", "problem": "Warm-up. " + eval_text, "answer": "14/95", "subject": "prob"},
        {"id": "mc", "problem": "Which is prime? (A) 4 (B) 6 (C) 7", "answer": "C",
         "subject": "number theory"},
        {"id": "tf", "problem": "True or false: 91 is prime.", "answer": "False",
         "subject": "number theory"},
        {"id": "remainder", "problem": DISTINCT[0], "answer": "2", "subject": "number theory"},
        {"id": "heron", "problem": DISTINCT[1], "answer": "84", "subject": "geometry"},
        {"id": "trains", "problem": TRAIN, "answer": "315", "subject": "arithmetic"},
    ]  # fmt: skip
    a = _write_jsonl(tmp_path / "train_a.jsonl", train_a)
    b = tmp_path / "train_b.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"problem": "What is $\\gcd(84, 126)$?", "answer": "42"},
                {"problem": "Solve $2x + 3 = 11$ for $x$.", "answer": "4"},
            ]
        ),
        str(b),
    )
    evals = _write_jsonl(tmp_path / "eval.jsonl", [{"id": "marbles", "problem": eval_text}])
    return [str(a), str(b)], evals


def test_cli_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path: Path, monkeypatch) -> None:
    import gymnasium as gym
    import matplotlib.image

    from rllib_k15.sampling.problem_buffer import ProblemBuffer
    from rllib_k15.sampling.strategies import SamplingConfig

    data, evals = _curate_inputs(tmp_path)
    out = tmp_path / "out" / "curated.jsonl"
    argv = ["curate", *data, "--out", str(out), "--eval-sets", str(evals),
            "--model", str(tiny_model_dir), "--engine", "hf", "--dtype", "float32",
            "--hack-attempts", "2", "--hack-max-tokens", "6", "--difficulty-samples", "2",
            "--max-tokens", "6"]  # fmt: skip
    assert main(argv) == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r.get("id", r["problem"][:5]) for r in kept]
    assert ids == ["farm", "remainder", "heron", "trains", "What ", "Solve"]
    assert {r["source"] for r in kept} == set(data)
    assert all(0.0 <= r["difficulty"] <= 1.0 for r in kept)  # the random model: ~1
    assert kept[0]["subject"] == "arithmetic" and kept[0]["answer"] == "38"  # rows unchanged

    report = json.loads((out.parent / "curate_report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["exact_dedup", "near_dedup", "decontaminate", "format_filter",
                           "hack_filter", "difficulty"]  # fmt: skip
    assert [(s["in"], s["dropped"], s["out"]) for s in report["steps"]] == [
        (11, 1, 10), (10, 1, 9), (9, 1, 8), (8, 2, 6), (6, 0, 6), (6, 0, 6)
    ]  # fmt: skip
    assert steps["exact_dedup"]["dropped_rows"][0]["duplicate_of"] == "farm"
    assert steps["decontaminate"]["dropped_rows"][0]["eval_id"] == "marbles"
    assert {r["id"] for r in steps["format_filter"]["dropped_rows"]} == {"mc", "tf"}
    assert steps["format_filter"]["rules"]["option_list"]["matched"] == 1
    assert report["domains"] == {"arithmetic": 2, "number theory": 1, "geometry": 1, "train_b": 2}
    assert (
        "| easy-to-hack filter | ran | 6 | 0 | 6 |" in (out.parent / "curate_report.md").read_text()
    )
    image = matplotlib.image.imread(out.parent / "curate_report.png")
    assert image.shape[0] > 300 and image.shape[1] > 800

    # the loaders accept the curated file: the env reads `difficulty`, the buffer samples by it
    env = gym.make("k15/Math-v0", dataset=str(out))
    difficulty = [env.unwrapped.problem(i).difficulty for i in range(len(env.unwrapped))]
    env.close()
    assert difficulty == [r["difficulty"] for r in kept]
    buffer = ProblemBuffer(difficulty, SamplingConfig(strategy="curriculum"), seed=0)
    assert len(buffer.sample(3, iteration=200)) == 3

    # a rerun finds every model result in the cache: the engine is never even built
    def no_engine(*args, **kwargs):
        raise AssertionError("the rerun must not build an engine")

    monkeypatch.setattr("rllib_k15.engine.make_engine", no_engine)
    assert main(argv) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == kept


def test_cli_without_model_skips_steps_5_and_6_and_writes_parquet(tmp_path: Path, capsys) -> None:
    data, _ = _curate_inputs(tmp_path)
    out = tmp_path / "c.parquet"
    assert main(["curate", *data, "--out", str(out), "--report-dir", str(tmp_path / "r")]) == 0
    assert "need --model: skipped" in capsys.readouterr().out
    table = pq.read_table(str(out)).to_pylist()
    assert len(table) == 7 and "difficulty" not in table[0]  # the leak is kept: no eval sets
    report = json.loads((tmp_path / "r" / "curate_report.json").read_text())
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert status == {"exact_dedup": "ran", "near_dedup": "ran", "decontaminate": "skipped",
                      "format_filter": "ran", "hack_filter": "skipped",
                      "difficulty": "skipped"}  # fmt: skip
    assert main(["curate", *data, "--out", str(out), "--no-dedup", "--no-format-filter"]) == 0
    assert len(pq.read_table(str(out))) == 11


@pytest.mark.parametrize(
    "rows,message",
    [
        (
            [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"},
             {"problem": "3+3?"}],
            r"bad.jsonl: row 2.*field 'answer': missing or null",
        ),
        (
            [{"problem": "1+1?", "answer": "2"}, {"problem": "  ", "answer": "4"}],
            r"bad.jsonl: row 1.*field 'problem': empty text",
        ),
        (
            [{"question_text": "1+1?", "answer": "2"}],
            r"bad.jsonl: row 0.*field 'problem': missing",
        ),
        (
            [{"problem": "1+1?", "solution": "2"}],
            r"bad.jsonl: field 'answer': missing column.*first row without it: row 0",
        ),
        ([], r"bad.jsonl: no rows \(empty dataset\)"),
    ],
)  # fmt: skip
def test_bad_input_names_file_row_and_field(tmp_path: Path, rows, message) -> None:
    bad = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SystemExit, match=message):
        main(["curate", str(bad), "--out", str(tmp_path / "c.jsonl")])
    assert not (tmp_path / "c.jsonl").exists()


def test_bad_flags_are_refused(tmp_path: Path) -> None:
    data = _write_jsonl(tmp_path / "d.jsonl", [{"problem": "1+1?", "answer": "2"}])
    cases = [
        (["--out", str(tmp_path / "c.csv")], r"--out .* must end in .jsonl or .parquet"),
        (["--out", "c.jsonl", "--near-dup-threshold", "1.5"], r"--near-dup-threshold \(1.5\)"),
        (["--out", "c.jsonl", "--near-dup-threshold", "0.99"], r"\(0.99\) is too high"),
        (["--out", "c.jsonl", "--hack-attempts", "0"], r"--hack-attempts \(0\) must be >= 1"),
        (["--out", "c.jsonl", "--env-kwargs", '{"split": "train"}'], "must not set"),
        ([str(data), "--out", "c.jsonl"], "more than once"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit, match=message):
            main(["curate", str(data), *extra])
