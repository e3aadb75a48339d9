"""The ``k15`` command line: a thin argparse front over the modules in ``rllib_k15.commands``.

Subcommands are discovered, not listed: every module in the ``rllib_k15/commands/``
package (names not starting with ``_``; this front end and ``rllib.py`` aside) that
defines ``add_parser(subparsers) -> None`` contributes its subcommand(s); each parser
sets ``func`` (``args -> int | None``) with ``set_defaults``. Adding a command means dropping
a file there — this one never changes.
Command modules must stay import-light (import heavy libraries inside ``func``), because
all of them are imported on every ``k15`` invocation.

Launch::

    k15 --help
    k15 model prepare smollm2-135m-instruct
    python -m rllib_k15 eval --help
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["build_parser", "discover_commands", "main"]

COMMANDS_PACKAGE = "rllib_k15.commands"
FRONT_ENDS = {"k15", "rllib"}  # the two console scripts live beside their subcommands


def discover_commands(package: str = COMMANDS_PACKAGE) -> list[ModuleType]:
    """The command modules of ``package`` (sorted by name) that define ``add_parser``."""
    pkg = importlib.import_module(package)
    modules = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in FRONT_ENDS:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if callable(getattr(module, "add_parser", None)):
            modules.append(module)
    return modules


def build_parser(package: str = COMMANDS_PACKAGE) -> argparse.ArgumentParser:
    from rllib_k15 import __version__

    parser = argparse.ArgumentParser(
        prog="k15",
        description="rllib-k15: Kimi k1.5-style RL from verifiable rewards on Ray RLlib.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v info, -vv debug); `k15 train` then also shows vLLM's and "
        "Ray's logs in the terminal (by default they go to its run's engine.log)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in discover_commands(package):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``k15`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:  # vLLM logs every engine detail at INFO; keep the terminal readable
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from rllib_k15.runs.memory import bound_onednn_primitive_cache

    bound_onednn_primitive_cache()  # before any torch work: oneDNN reads it once
    func = getattr(args, "func", None)
    if func is None:  # a command group called without its subcommand
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    from rllib_k15.models import ModelNotFoundError

    try:
        code = func(args)
    except ModelNotFoundError as err:
        print(f"k15 {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
