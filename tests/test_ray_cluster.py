"""RayEnvPool on a Ray cluster of several nodes (`ray.cluster_utils.Cluster`: a head and worker
nodes, each its own raylet and object store, all on this machine, nothing outside it): the
actors spread over the nodes, the episodes equal the local pool's, and when a node goes away
its actor is replaced on a node that joined and its episodes re-run with the same seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_ray import SEEDS, _policy, _same
from test_vector import CAR_FN

from dreamjax.envs.pool import EnvPool, EpisodeSpec

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from dreamjax.envs.ray_pool import RayEnvPool  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
"""Every node: one CPU (so two one-CPU actors need two nodes) and a small object store."""


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node; the driver joins as a client of the head."""
    tests = str(Path(__file__).parent)
    path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    c.add_node(**NODE)
    ray.init(address=c.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_actors_on_two_nodes_equal_the_local_pool_and_survive_a_lost_node(cluster):
    specs = [EpisodeSpec(seed=s, tag=i % 2) for i, s in enumerate(SEEDS[:4])]
    with EnvPool(CAR_FN, num_workers=1, envs_per_worker=2) as local:
        want = local.run(specs, _policy(), steps=True)
    with RayEnvPool(CAR_FN, num_actors=2, envs_per_actor=1, address=cluster.address) as pool:
        nodes = pool.nodes()
        assert len(set(nodes)) == 2  # one CPU a node: the two actors live on two machines
        for a, b in zip(pool.run(specs, _policy(), steps=True), want, strict=True):
            _same(a, b)
        head = cluster.head_node.node_id
        lost = next(n for n in cluster.worker_nodes if n.node_id in nodes)
        cluster.remove_node(lost)
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        got = pool.run(specs, _policy(), steps=True)
        assert pool.restarts == 1
        after = pool.nodes()
        assert head in after and lost.node_id not in after and len(set(after)) == 2
    for a, b in zip(got, want, strict=True):
        _same(a, b)
    assert pool.env_steps == sum(r.length for r in want)
