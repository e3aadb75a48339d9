"""Fixtures of the scale-out tests: Ray on this machine (one node, or a local cluster of
several nodes). The toy task and tiny models come from ``support`` (toy_env, l2s_tiny)."""

from __future__ import annotations

import pytest


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_one_node():
    """A fresh single-node Ray with room for 2 learner actors on 2 shared cores."""
    import ray

    _shutdown_ray()
    ray.init(include_dashboard=False, num_cpus=4, log_to_driver=False)
    yield
    _shutdown_ray()


@pytest.fixture
def ray_two_nodes():
    """A Ray cluster of two nodes on this machine (`ray.cluster_utils.Cluster`), one CPU
    each: two 1-CPU learner actors can only be placed one per node."""
    import ray
    from ray.cluster_utils import Cluster

    _shutdown_ray()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    _shutdown_ray()
    cluster.shutdown()
