"""``k15 serve SOURCE``: an OpenAI-compatible API for a policy (Ray Serve LLM + vLLM).

    k15 serve runs/k15                    # a run: its newest checkpoint
    k15 serve runs/k15/checkpoints/iter_000006
    k15 serve smollm2-135m-instruct       # a registered model or any HF directory
    k15 serve --watch runs/k15            # follow a training run, swapping weights in place

Then ``http://127.0.0.1:8000/v1`` answers ``/v1/chat/completions``, ``/v1/completions``
(streaming or not), ``/v1/models`` (with the served checkpoint's iteration under
``metadata.k15``) and ``/health``; any OpenAI client works:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="k15", messages=[{"role": "user", "content": "17 + 25?"}])

GPU: the same command with ``--accelerator gpu`` (and ``--replicas``,
``--tensor-parallel-size``). On an existing Ray cluster, set ``RAY_ADDRESS``. Ctrl-C (or
SIGTERM) shuts the application down.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

APP_NAME = "k15"
log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a run, checkpoint or model with an OpenAI-compatible API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="run directory, RLlib checkpoint, registered model or HF dir")
    p.add_argument(
        "--watch", action="store_true", help="SOURCE is a run: swap in each new checkpoint"
    )
    p.add_argument("--poll-s", type=float, default=5.0, help="--watch poll interval (s)")
    p.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument("--model-id", default="k15", help="the `model` clients send (default: k15)")
    p.add_argument("--replicas", type=int, default=1, help="engine replicas (default: 1)")
    p.add_argument("--max-tokens", type=int, default=1024, help="cap on a request's max_tokens")
    p.add_argument("--max-model-len", type=int, default=2048, help="prompt + response tokens")
    p.add_argument("--dtype", default="auto", help="auto (the machine's best), bfloat16, float32")
    p.add_argument("--kv-cache-gib", type=float, default=1.0, help="CPU KV cache per replica")
    p.add_argument("--accelerator", choices=("cpu", "gpu"), default=None, help="default: auto")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per replica")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Any:
    from rllib_k15.serving.app import ServeSettings

    accelerator = args.accelerator
    if accelerator is None:
        import torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    return ServeSettings(
        model_id=args.model_id, max_model_len=args.max_model_len, max_tokens=args.max_tokens,
        replicas=args.replicas, accelerator=accelerator, dtype=args.dtype,
        kv_cache_gib=args.kv_cache_gib, tensor_parallel_size=args.tensor_parallel_size,
    )  # fmt: skip


def _start_ray(replicas: int) -> None:
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return
    # a CPU replica holds 2 logical CPUs (its actor + the engine's placement bundle)
    ray.init(num_cpus=max(os.cpu_count() or 1, 2 * replicas), include_dashboard=False)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from rllib_k15.serving.sources import SourceError, is_run_dir, resolve_source

    try:
        settings = _settings(args)
    except ValueError as err:
        raise SystemExit(f"k15 serve: {err}") from None
    source = Path(args.source).expanduser()
    if args.watch and not is_run_dir(source):
        raise SystemExit(f"k15 serve --watch: {args.source} is not a k15 run directory")
    if args.watch and settings.replicas != 1:
        raise SystemExit("k15 serve --watch swaps one replica's weights; use --replicas 1")
    staging = Path(tempfile.mkdtemp(prefix="k15-serve-"))
    try:
        weights = resolve_source(args.source, staging, settings.engine_dtype())
    except SourceError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"k15 serve: {err}") from None
    try:
        return _serve(args, settings, weights, staging)
    except KeyboardInterrupt:
        print("k15 serve: shutting down", flush=True)
        return 0
    finally:
        _shutdown()
        shutil.rmtree(staging, ignore_errors=True)


def _serve(args: argparse.Namespace, settings: Any, weights: Any, staging: Path) -> int:
    from ray import serve

    from rllib_k15.serving.app import build_app
    from rllib_k15.serving.watch import CheckpointWatcher, swap_weights

    _start_ray(settings.replicas)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # after ray.init, which sets its own
    started = time.perf_counter()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(weights, settings), name=APP_NAME, route_prefix="/", blocking=False)
    print(
        f"k15 serve: OpenAI API on http://{args.host}:{args.port}/v1 (model {settings.model_id!r},"
        f" weights {weights.model_dir}, iteration {weights.iteration}) ready in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    watcher = (
        CheckpointWatcher(Path(args.source), staging, settings.engine_dtype(), weights)
        if args.watch
        else None
    )
    while True:
        time.sleep(args.poll_s)
        if watcher is None:
            continue
        new = watcher.poll()
        if new is None:
            continue
        seconds = swap_weights(new, app_name=APP_NAME, model_id=settings.model_id)
        watcher.accept(new)
        print(
            f"k15 serve: now serving iteration {new.iteration} ({new.checkpoint}); "
            f"swapped in {seconds:.1f} s",
            flush=True,
        )


def _shutdown() -> None:
    try:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
    except Exception as err:  # noqa: BLE001 - best effort at exit; say what went wrong
        print(f"k15 serve: shutdown: {err}", file=sys.stderr)
