"""Where the tests live, and how a child process or a script outside the packages gets there.

``tests/`` is on ``sys.path`` during pytest (the rootdir conftest; no ``tests/__init__.py``),
so a test imports these helpers as ``from support import toy_env``. A child process started
by a test finds them the same way through ``support_env`` (``tests/`` first on
``PYTHONPATH``) and runs a helper as a module: ``support_command("train_harness", ...)`` is
``python -m support.train_harness ...``. Ray workers need neither: the tests ship their
envs by value (``cloudpickle.register_pickle_by_value``), see ``toy_env``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
EXPERIMENTS_DIR = REPO_DIR / "experiments"


def support_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with ``tests/`` first on
    ``PYTHONPATH``, so that a child Python imports ``support`` as the tests do."""
    env = dict(os.environ if env is None else env)
    paths = [str(TESTS_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def support_command(module: str, *args: object) -> list[str]:
    """The argv that runs ``support/<module>.py`` as a script in a child (with
    ``support_env``): ``[python, -m, support.<module>, *args]``."""
    return [sys.executable, "-m", f"support.{module}", *map(str, args)]


def load_experiment(name: str) -> ModuleType:
    """``experiments/<name>.py`` executed afresh from its path as module ``name`` (the
    scripts are no package; registered in ``sys.modules``, where dataclasses look their
    module up)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
