"""More ``k15 long2short`` subcommands, one module per compression method.

Each module defines ``add_subparser(sub) -> None`` (``sub`` is the ``k15 long2short``
subparsers object) and is found automatically, in name order, like the ``k15`` commands.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["discover_methods"]


def discover_methods() -> list[ModuleType]:
    """The method modules of this package (sorted by name) that define ``add_subparser``."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "add_subparser", None)):
            found.append(module)
    return found
