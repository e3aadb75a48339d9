"""``k15 model``: list the registered models and materialise them into the cache.

    k15 model list [--cache-dir DIR]
    k15 model prepare smollm2-135m-instruct [--cache-dir DIR]

``prepare`` turns a registered name into a plain Hugging Face directory (bf16
safetensors + tokenizer with chat template) that vLLM, transformers and the learner all
load; it is idempotent and prints the directory. The cache is ``--cache-dir``, else
``$K15_CACHE_DIR``, else ``~/.cache/rllib_k15``.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "model",
        help="list / prepare the registered models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    prep = sub.add_parser("prepare", help="materialise a registered model into the cache")
    prep.add_argument("name", metavar="NAME", help="registered model name (see `k15 model list`)")
    prep.add_argument(
        "--cache-dir", help="cache root (default: $K15_CACHE_DIR or ~/.cache/rllib_k15)"
    )
    prep.set_defaults(func=run_prepare)
    lst = sub.add_parser("list", help="registered models and whether they are prepared")
    lst.add_argument(
        "--cache-dir", help="cache root (default: $K15_CACHE_DIR or ~/.cache/rllib_k15)"
    )
    lst.set_defaults(func=run_list)


def run_prepare(args: argparse.Namespace) -> int:
    from rllib_k15.models import prepare_model

    print(prepare_model(args.name, args.cache_dir))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rllib_k15.models import MODEL_REGISTRY, default_cache_dir, is_prepared

    root = default_cache_dir(args.cache_dir) / "models"
    print(f"cache: {root}")
    for name, spec in sorted(MODEL_REGISTRY.items()):
        path = root / name
        state = f"prepared  {path}" if is_prepared(path) else "not prepared"
        print(f"  {name:24s} {state}\n  {'':24s} {spec.description}")
    return 0
