"""``k15 serve --watch``: follow a training run and swap each new checkpoint in place.

Every ``poll_s`` the watcher reads ``RUN/checkpoints/latest`` (read-only). A new iteration
is verified against its manifest, exported into the server's staging directory and loaded
into the running engine with vLLM's in-place reload (the route the EnvRunners' weight sync
uses, here from the exported directory because the engine lives in another process):

    pause(mode="wait")   in-flight requests finish on the old weights, new ones queue
    collective_rpc("reload_weights", weights_path=DIR)   every worker, in place
    reset_prefix_cache() cached KV was computed by the old weights
    resume()             queued requests run on the new weights

so no response mixes two weight versions. The ingress then reports the new iteration in
``/v1/models``. A damaged or vanished checkpoint (training rotates old ones away) is logged
and retried at the next poll; the server keeps serving what it has.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from rllib_k15.serving.sources import ServedWeights, newest_checkpoint, weights_from_checkpoint

__all__ = ["CheckpointWatcher", "swap_weights"]

log = logging.getLogger(__name__)


class CheckpointWatcher:
    """Finds and exports a run's newest checkpoint when it changes.

    keep: exported weight directories kept in ``staging_dir`` (the served one included).
    """

    def __init__(
        self,
        run_dir: Path,
        staging_dir: Path,
        dtype: str,
        served: ServedWeights,
        keep: int = 2,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.staging_dir = Path(staging_dir)
        self.dtype = dtype
        self.served = served
        self.keep = keep
        self._failed: dict[int, str] = {}  # iteration -> why it could not be served

    def poll(self) -> ServedWeights | None:
        """Exported weights of a checkpoint newer than the served one, else None."""
        from rllib_k15.runs.integrity import CheckpointCorruptError, verify_checkpoint

        newest = newest_checkpoint(self.run_dir, verify=False)
        if newest is None:
            return None
        iteration, checkpoint = newest
        if iteration == self.served.iteration or iteration in self._failed:
            return None
        try:
            verify_checkpoint(checkpoint)
            return weights_from_checkpoint(checkpoint, iteration, self.staging_dir, self.dtype)
        except CheckpointCorruptError as err:
            self._failed[iteration] = str(err)
            log.warning("not serving checkpoint %s (iteration %d): %s", checkpoint, iteration, err)
        except FileNotFoundError as err:  # rotated away while we read it; try what comes next
            log.warning("checkpoint %s vanished while exporting (%s); will retry", checkpoint, err)
        return None

    def accept(self, weights: ServedWeights) -> None:
        """``weights`` are now served: forget older exports beyond ``keep``."""
        self.served = weights
        exported = sorted(p for p in self.staging_dir.glob("iter_*") if p.is_dir())
        for old in exported[: -self.keep]:
            if old != weights.model_dir:
                shutil.rmtree(old, ignore_errors=True)


def swap_weights(weights: ServedWeights, *, app_name: str, model_id: str) -> float:
    """Load ``weights`` into the running app's engine in place; returns the seconds taken."""
    from ray import serve

    started = time.perf_counter()
    llm = serve.get_deployment_handle(f"LLMServer:{model_id}", app_name=app_name)
    llm.pause.remote(mode="wait", clear_cache=True).result()
    try:
        llm.collective_rpc.remote(
            "reload_weights",
            kwargs={"weights_path": str(weights.model_dir), "is_checkpoint_format": True},
        ).result()
        llm.reset_prefix_cache.remote().result()
    finally:
        llm.resume.remote().result()
    ingress = serve.get_deployment_handle("K15Ingress", app_name=app_name)
    ingress.set_weights.remote(weights.describe()).result()
    return time.perf_counter() - started
