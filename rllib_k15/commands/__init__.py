"""Subcommands of the ``k15`` CLI, one module each, discovered by ``rllib_k15.commands.k15``.

A command module defines ``add_parser(subparsers) -> None``, which adds its parser(s) to
the argparse ``subparsers`` and sets ``func`` (``argparse.Namespace -> int | None``, the
exit code) with ``set_defaults``. Keep module-level imports light; import heavy
dependencies inside ``func``.
"""
