r"""``k15 gen-tests``: test cases for code problems from their ground-truth solutions (the Kimi
k1.5 report, §2.2) -> ``k15/Code-v0`` stdin/stdout rows and a report.

    k15 gen-tests problems.jsonl --out code_rl.jsonl [--cases 20] [--case-agreement 0.7] \
        [--problem-pass 0.9] [--min-cases 5] [--seed 0] [--report report.json] [--resume] \
        [--time-limit 10] [--workers 2] [--generator-timeout 60]

Example (a CYaRon generator module and one problem with 10 solutions, then the command)::

    cat > /tmp/demo_gen.py <<'EOF'
    import cyaron

    def generate(case_index: int) -> str:
        n = 1 + case_index % 10
        numbers = cyaron.Vector.random(n, [(-99, 99)])
        return f"{n}\n" + " ".join(str(v[0]) for v in numbers) + "\n"
    EOF
    python - <<'EOF'
    import json
    solution = "input()\nprint(sum(map(int, input().split())))"
    row = {"id": "sum", "prompt": "Print the sum of the n numbers on line 2.",
           "solutions": [solution] * 10, "generator_function": "demo_gen:generate"}
    open("/tmp/problems.jsonl", "w").write(json.dumps(row) + "\n")
    EOF
    k15 gen-tests /tmp/problems.jsonl --out /tmp/code_rl.jsonl --cases 8

Input rows: ``id``, ``prompt`` (the statement), ``solutions`` (ground-truth Python programs,
stdin -> stdout) and either ``generator`` (Python source defining ``generate(case_index) ->
str``; may ``import cyaron``) or ``generator_function`` (``"module:function"``, importable
from the input file's folder or the current one). A case is kept when at least
``--case-agreement`` of the solutions print the same output (it becomes the expected one);
a problem when at least ``--problem-pass`` of them pass every kept case and it has
``--min-cases`` kept cases. ``--resume`` skips the problems the report (and ``--out``)
already hold; it refuses a report written with other settings. See docs/data_gen_tests.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gen-tests",
        help="test cases for code problems from ground-truth solutions (Code-v0 rows)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("problems", help="input rows (.jsonl / .parquet): id, prompt, solutions, generator")
    add("--out", required=True, help="Code-v0 stdin/stdout rows (.jsonl), kept problems only")
    add("--cases", type=int, default=20, help="inputs generated per problem (default: 20)")
    add("--case-agreement", type=float, default=0.7, help="keep a case: fraction (default: 0.7)")
    add("--problem-pass", type=float, default=0.9, help="keep a problem: fraction (default: 0.9)")
    add("--min-cases", type=int, default=5, help="kept cases a problem needs (default: 5)")
    add("--seed", type=int, default=0, help="generator seed (default: 0)")
    add("--report", help="report .json (default: <out stem>.report.json)")
    add("--resume", action="store_true", help="continue into an existing --out")
    add("--time-limit", type=float, default=10.0, help="seconds per solution run (default: 10)")
    add("--workers", type=int, default=2, help="sandbox runs at once, 1 or 2 (default: 2)")
    add("--generator-timeout", type=float, default=60.0, help="seconds per generator (default: 60)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    """Validate the flags; the messages name the flag."""
    if not str(args.out).endswith(".jsonl"):
        raise SystemExit(f"--out ({args.out}) must end in .jsonl")
    if args.report is not None and not str(args.report).endswith(".json"):
        raise SystemExit(f"--report ({args.report}) must end in .json")
    for name in ("cases", "min_cases"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be >= 1")
    if args.min_cases > args.cases:
        raise SystemExit(f"--min-cases ({args.min_cases}) must be <= --cases ({args.cases})")
    for name in ("case_agreement", "problem_pass"):
        if not 0.0 < getattr(args, name) <= 1.0:
            raise SystemExit(
                f"--{name.replace('_', '-')} ({getattr(args, name)}) must be in (0, 1]"
            )
    if args.workers not in (1, 2):
        raise SystemExit(f"--workers ({args.workers}) must be 1 or 2")
    for name in ("time_limit", "generator_timeout"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be > 0")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from k15_envs.datasets import DatasetError
    from k15_envs.sandbox import CODE_DEFAULTS

    from rllib_k15.data.gen_tests import GenTestsSettings, gen_tests
    from rllib_k15.data.gen_tests_files import ResumeError

    _check(args)
    settings = GenTestsSettings(
        cases=args.cases,
        case_agreement=args.case_agreement,
        problem_pass=args.problem_pass,
        min_cases=args.min_cases,
        seed=args.seed,
        sandbox=dataclasses.replace(
            CODE_DEFAULTS, wall_time_s=args.time_limit, cpu_time_s=args.time_limit
        ),
        workers=args.workers,
        generator_timeout_s=args.generator_timeout,
    )
    try:
        report = gen_tests(
            args.problems, args.out, settings, report=args.report, resume=args.resume
        )
    except DatasetError as err:
        raise SystemExit(str(err)) from None
    except FileExistsError as err:
        raise SystemExit(f"--out: {err}: pass --resume to continue it, or remove it") from None
    except ResumeError as err:
        raise SystemExit(f"--resume: {err}") from None
    summary = report["summary"]
    print(
        f"{summary['kept']} of {summary['problems']} problems kept "
        f"({summary['cases_kept']} test cases), {summary['dropped']} dropped; "
        f"rows in {Path(args.out)}, report in {report['report']}"
    )
    return 0
