"""Where the libraries' log output goes during ``k15 train``: ``<run dir>/engine.log``.

vLLM logs every engine detail (and, at each weight sync, one warning per tensor whose
dtype differs), Ray and RLlib log their start-up and deprecation notes, transformers draws
progress bars. By default :class:`LibraryLogs` sends all of it to ``<run dir>/engine.log``
and keeps the terminal to the progress table, this package's own messages and the
libraries' *errors*. With ``verbose`` (``k15 -v train``) the libraries also log to the
terminal as they do by default.

How each library is routed:

- **vLLM** configures its ``vllm`` logger itself (``dictConfig``) when an engine is built,
  replacing any handler attached before. It reads ``VLLM_LOGGING_CONFIG_PATH`` then, so
  the route is a dictConfig JSON file (``<run dir>/.engine_logging.json``) named in the
  environment: it applies in this process and in Ray actors started afterwards on this
  machine, which inherit the environment (remote EnvRunners). A user's own
  ``VLLM_LOGGING_CONFIG_PATH`` or ``VLLM_CONFIGURE_LOGGING=0`` is left alone.
- **Ray, RLlib, transformers, DeepSpeed** (the ``ray``, ``transformers`` and ``DeepSpeed``
  logger trees): their console handlers are raised to ERROR and a handler writing to
  ``engine.log`` is added. Records logged before the run directory exists (config
  validation) are buffered and written once it does. Ray itself is started with
  ``log_to_driver=False`` (:func:`init_ray`): worker output stays in Ray's session logs.
- **Python warnings** raised from inside installed libraries (``site-packages``) go to
  ``engine.log``; warnings pointing at other code are shown as usual.
- transformers' progress bars are turned off. (vLLM's "Loading safetensors checkpoint
  shards" bar is drawn unless the engine gets ``use_tqdm_on_load=False``.)

Everything is restored by :meth:`LibraryLogs.close` (the CLI runs it in a ``with``), so a
test calling ``k15 train`` in-process leaves its process as it found it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "ENGINE_LOG",
    "LIBRARY_LOGGERS",
    "LibraryLogs",
    "init_ray",
    "refresh",
    "vllm_logging_config",
]

ENGINE_LOG = "engine.log"
VLLM_CONFIG_FILE = ".engine_logging.json"
LIBRARY_LOGGERS = ("ray", "transformers", "DeepSpeed")
FORMAT = "%(asctime)s %(levelname)s %(name)s (pid %(process)d): %(message)s"


def vllm_logging_config(log_file: str | os.PathLike[str], console_level: str) -> dict[str, Any]:
    """dictConfig for the ``vllm`` logger: everything from INFO (DEBUG when the console
    shows DEBUG) into ``log_file``, records at ``console_level`` and above also to the
    terminal (stdout, as vLLM does, for INFO/DEBUG; stderr for errors)."""
    file_level = "DEBUG" if console_level == "DEBUG" else "INFO"
    stream = "ext://sys.stdout" if console_level in ("DEBUG", "INFO") else "ext://sys.stderr"
    return {
        "version": 1,
        "disable_existing_loggers": False,  # leave every other logger alone
        "formatters": {"k15": {"format": FORMAT}},
        "handlers": {
            "k15_engine_log": {
                "class": "logging.FileHandler",
                "filename": str(Path(log_file).absolute()),
                "mode": "a",
                "encoding": "utf-8",
                "formatter": "k15",
                "level": file_level,
            },
            "k15_console": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "formatter": "k15",
                "level": console_level,
            },
        },
        "loggers": {
            "vllm": {
                "handlers": ["k15_engine_log", "k15_console"],
                "level": file_level,
                "propagate": False,
            }
        },
    }


class _Buffer(logging.handlers.BufferingHandler):
    """Holds records until the log file exists (bounded: a runaway logger cannot fill RAM)."""

    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__(capacity)
        self.dropped = 0

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802 (logging API)
        return False

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.buffer) < self.capacity:
            self.buffer.append(record)
        else:
            self.dropped += 1


class LibraryLogs:
    """Route library logs away from the terminal for one run (see the module docstring).

    ``start()`` (done by ``__enter__``) buffers; ``to_file(run_dir)`` opens
    ``<run_dir>/engine.log``, writes the buffered records and points vLLM at it;
    :meth:`refresh` (also :func:`refresh`) adopts loggers libraries created since;
    ``close()`` undoes everything. ``verbose`` > 0 keeps the libraries' terminal output
    (their records still also go to the file); 2 shows vLLM's DEBUG records.
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.path: Path | None = None
        self._handler: logging.Handler = _Buffer()
        self._handler.setFormatter(logging.Formatter(FORMAT))
        self._attached: list[logging.Logger] = []  # loggers that got self._handler
        self._saved_levels: dict[int, tuple[logging.Handler, int]] = {}
        self._saved_env: dict[str, str | None] = {}
        self._saved_showwarning = None
        self._progress_bars_were_on: bool | None = None
        self._vllm_propagate: bool | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LibraryLogs:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        global _ACTIVE
        if self._started:
            return
        self._started = True
        _ACTIVE = self
        try:  # Ray adds its console handlers when imported: import it first, then quiet them
            import ray  # noqa: F401
        except ImportError:  # pragma: no cover - ray is a dependency
            pass
        self.refresh()
        if not self.verbose:
            self._saved_showwarning = warnings.showwarning
            warnings.showwarning = self._showwarning

    def refresh(self) -> None:
        """Adopt the library loggers that exist now (idempotent). A library logger that
        stops propagation (``ray``, ``ray.rllib``, ``ray.data``, ``transformers``, ...) gets
        the file handler, and its console handlers are raised to ERROR (unless verbose)."""
        if not self._started:
            return
        self._handler.setFormatter(logging.Formatter(FORMAT))  # ray.init resets formatters
        for logger in _library_loggers():
            if logger.propagate and "." in logger.name:
                continue  # its records reach an adopted parent
            if self._handler not in logger.handlers:
                logger.addHandler(self._handler)
                self._attached.append(logger)
            if self.verbose:
                continue
            for handler in logger.handlers:
                if handler is self._handler or isinstance(handler, logging.FileHandler):
                    continue
                if id(handler) not in self._saved_levels:
                    self._saved_levels[id(handler)] = (handler, handler.level)
                    handler.setLevel(max(handler.level, logging.ERROR))

    def to_file(self, run_dir: str | os.PathLike[str]) -> Path:
        """Start writing ``<run_dir>/engine.log`` (appending: a resumed run continues it)."""
        run_dir = Path(run_dir).absolute()
        self.start()
        self.path = run_dir / ENGINE_LOG
        file_handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FORMAT))
        buffered, self._handler = self._handler, file_handler
        for logger in self._attached:
            logger.removeHandler(buffered)
            logger.addHandler(file_handler)
        if isinstance(buffered, _Buffer):
            for record in buffered.buffer:
                file_handler.handle(record)
            if buffered.dropped:
                file_handler.stream.write(f"... {buffered.dropped} early records dropped\n")
            buffered.buffer.clear()
        self.refresh()
        if not self.verbose:
            self._quiet_progress_bars()
        # vLLM logs through the root logger until an engine applies its own config (which
        # then replaces this handler with the route of _route_vllm: the same file)
        vllm_logger = logging.getLogger("vllm")
        self._vllm_propagate = vllm_logger.propagate
        vllm_logger.addHandler(file_handler)
        vllm_logger.propagate = bool(self.verbose)
        self._route_vllm(run_dir)
        return self.path

    def close(self) -> None:
        global _ACTIVE
        if not self._started:
            return
        self._started = False
        if _ACTIVE is self:
            _ACTIVE = None
        for logger in self._attached:
            logger.removeHandler(self._handler)
        self._attached.clear()
        vllm_logger = logging.getLogger("vllm")
        for handler in list(vllm_logger.handlers):  # ours, or vLLM's from our config file
            if handler is self._handler or (
                self.path is not None
                and isinstance(handler, logging.FileHandler)
                and Path(handler.baseFilename) == self.path
            ):
                vllm_logger.removeHandler(handler)
                handler.close()
        if self._vllm_propagate is not None:
            vllm_logger.propagate = self._vllm_propagate
            self._vllm_propagate = None
        self._handler.close()
        for handler, level in self._saved_levels.values():
            handler.setLevel(level)
        self._saved_levels.clear()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._saved_showwarning is not None:
            warnings.showwarning = self._saved_showwarning
            self._saved_showwarning = None
        if self._progress_bars_were_on:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()
        self._progress_bars_were_on = None

    # ------------------------------------------------------------------ helpers
    def _route_vllm(self, run_dir: Path) -> None:
        if (
            "VLLM_LOGGING_CONFIG_PATH" in os.environ
            or os.environ.get("VLLM_CONFIGURE_LOGGING") == "0"
        ):
            return  # the user configured vLLM's logging: respect it
        console = ("ERROR", "INFO", "DEBUG")[min(self.verbose, 2)]
        config_path = run_dir / VLLM_CONFIG_FILE
        config_path.write_text(json.dumps(vllm_logging_config(self.path, console), indent=2))
        self._setenv("VLLM_CONFIGURE_LOGGING", "1")
        self._setenv("VLLM_LOGGING_CONFIG_PATH", str(config_path))

    def _setenv(self, key: str, value: str) -> None:
        self._saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def _showwarning(self, message, category, filename, lineno, file=None, line=None):
        if "site-packages" in str(filename) or "dist-packages" in str(filename):
            text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
            record = logging.LogRecord(
                "py.warnings", logging.WARNING, str(filename), lineno, text, None, None
            )
            self._handler.handle(record)
            return
        assert self._saved_showwarning is not None
        self._saved_showwarning(message, category, filename, lineno, file, line)

    def _quiet_progress_bars(self) -> None:
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover - transformers is a dependency
            return
        self._progress_bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()


_ACTIVE: LibraryLogs | None = None


def _library_loggers() -> list[logging.Logger]:
    """The top-level library loggers and every existing logger below them."""
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and any(
            name.startswith(prefix + ".") for prefix in LIBRARY_LOGGERS
        ):
            loggers.append(logger)
    return loggers


def refresh() -> None:
    """Let the active :class:`LibraryLogs` (if any) adopt loggers created since it started
    (libraries imported while an Algorithm is built add their own handlers)."""
    if _ACTIVE is not None:
        _ACTIVE.refresh()


def init_ray(verbose: int = 0, *, dashboard: bool = False) -> bool:
    """Start a Ray of this process's own (or join ``$RAY_ADDRESS``) unless Ray is up, with
    worker output not echoed to the terminal (``verbose``: echoed as usual). Environment
    variables set before this (vLLM's log route) reach every actor started on this
    machine. Returns whether it started Ray.

    ``dashboard``: start Ray's dashboard with a Ray of our own. Off by default: on a small
    machine its ten processes hold ~0.5 GB (proportional set size, measured by
    ``bench.soak``), and its module processes' forkserver, killed at shutdown, leaves a
    ``pymp-*`` directory in the temp dir after every run. A cluster joined through
    ``RAY_ADDRESS`` keeps the dashboard its head started."""
    import ray

    if ray.is_initialized():
        return False
    # "local": a Ray of our own, not whichever instance another process on this machine
    # started last (ray.init()'s default); RAY_ADDRESS still selects a cluster
    address = os.environ.get("RAY_ADDRESS") or "local"
    options: dict[str, Any] = {}
    if address == "local":
        options["include_dashboard"] = bool(dashboard)
    # configure_logging=False would clear the "ray" logger's handlers: Python's last-resort
    # handler then prints its warnings to the terminal. Ray's own setup keeps ours.
    context = ray.init(
        address=address, log_to_driver=bool(verbose), logging_level=logging.INFO, **options
    )
    if dashboard and getattr(context, "dashboard_url", None):
        print(f"Ray dashboard: http://{context.dashboard_url}")
    refresh()
    return True
