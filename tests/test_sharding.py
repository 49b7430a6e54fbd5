"""Device sharding: a dream generation with its population sharded over 8 (forced CPU) devices,
and a sweep sharded over members x candidates, equal the one-device results; a checkpoint is
restored with its sharding. The 8-device side runs in a subprocess, since this process has
already initialised JAX with one device."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_evolve import known_reward_dream

from dreamjax import checkpoint, io
from dreamjax.config import ControllerConfig, ESConfig
from dreamjax.dream.env import DreamEnv
from dreamjax.errors import ConfigError
from dreamjax.es.dream import DreamFitness, dream_evaluate, train_controller_dream
from dreamjax.es.loop import INIT_KEY_TAG
from dreamjax.es.sharding import (
    check_divides,
    local_mesh,
    place,
    population_mesh,
    shard_population,
)
from dreamjax.es.sweep import es_grid, run_es_sweep
from dreamjax.models.controller import controller_spec

DEVICES = 8
ES = ESConfig(popsize=8, rollouts=2, eval_episodes=2, chunk=1, max_steps=10)
"""The pipeline's CMA-ES; one generation."""
SPEC = controller_spec("zh", 2, 4, action_dim=3)
SWEEP = es_grid([3, 4], [0.2], [1.0, 1.5])
LOOP = dataclasses.replace(ES, eval_every=1, strategy="Sep_CMA_ES")
"""The ES loop of the pipeline's controller stage: 2 generations, the mean checked after each.
Sep-CMA-ES: with full CMA-ES only the first generation is bit-equal (`eigh`'s basis of the
identity's repeated eigenvalue follows 1e-9 roundings; README, Scaling out)."""


def _train(out: Path, mesh=None):
    """The pipeline's dream C training (`train_controller_dream`), 2 generations."""
    return train_controller_dream(jax.random.key(5), known_reward_dream(max_steps=10), out, LOOP,
                                  ControllerConfig("zh"), generations=2, progress=False,
                                  mesh=mesh)


def _generation(fitness, seed: int):
    """One generation of the ES loop's fitness from its initial state: (records, mean)."""
    key = jax.random.key(seed)
    state = fitness.strategy.init(jax.random.fold_in(key, INIT_KEY_TAG), SPEC.zeros(),
                                  fitness.es_params)
    state, records = fitness.run(key, state, 0, 1)
    return records[0], np.asarray(state.mean)


def device_side(out: str) -> None:
    """The 8-device runs (in the subprocess): results and shardings into `out`."""
    assert len(jax.devices()) == DEVICES
    dp = known_reward_dream(max_steps=10)
    mesh = local_mesh(1, DEVICES)
    fitness = DreamFitness.build(dp, ES, SPEC, mesh=mesh)
    record, mean = _generation(fitness, 3)
    evaluate = jax.jit(shard_population(
        dream_evaluate(DreamEnv(), SPEC.controller.apply, ES.rollouts, 10), mesh))
    population = jax.vmap(SPEC.unravel)(jnp.zeros((ES.popsize, SPEC.num_params)))
    fit, _ = evaluate(jax.random.key(0), population, fitness.dream_params)
    sweep_mesh = local_mesh(2, DEVICES // 2)
    res = run_es_sweep(dp, ES, ControllerConfig("zh"), SWEEP, generations=1, mesh=sweep_mesh)
    _train(Path(out) / "loop", population_mesh(0, ES.popsize))
    meshes = {str(p): None if m is None else dict(m.shape) for p, m in
              ((p, population_mesh(0, p)) for p in (8, 12, 6))}
    meshes["explicit 4"] = dict(population_mesh(4, 8).shape)
    meshes["explicit 1"] = population_mesh(1, 8)
    x = place(jnp.arange(16.0).reshape(8, 2), mesh, P("pop"))
    checkpoint.save(Path(out) / "ckpt", 0, {"x": x})
    target = NamedSharding(mesh, P("pop"))
    back, _ = checkpoint.restore(Path(out) / "ckpt", {"x": np.zeros((8, 2), np.float32)},
                                 sharding=target)
    io.save_npz(Path(out) / "arrays.npz", mean=mean, sweep_means=res.means,
                sweep_best=res.metrics["best_fitness"], sweep_mean=res.metrics["mean_fitness"],
                restored=np.asarray(back["x"]))
    io.write_json(Path(out) / "info.json", {
        "record": record,
        "fitness_spec": str(fit.sharding.spec),
        "fitness_shards": sorted(int(sh.data.shape[0]) for sh in fit.addressable_shards),
        "restored_sharding_ok": back["x"].sharding.is_equivalent_to(target, 2),
        "restored_devices": len(back["x"].sharding.device_set),
        "dream_params_devices": len(jax.tree.leaves(fitness.dream_params)[0].sharding.device_set),
        "meshes": meshes,
    })


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", f"import test_sharding as t; t.device_side({str(out)!r})"],
        cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "info.json").read_text()), io.load_npz(out / "arrays.npz"), out


def test_generation_on_8_devices_equals_one_device(eight_devices):
    info, arrays, _ = eight_devices
    assert len(jax.devices()) == 1 and info["dream_params_devices"] == DEVICES
    # the population's fitness lives as 8 shards of one candidate each
    assert info["fitness_spec"] == str(P("pop")) and info["fitness_shards"] == [1] * DEVICES
    dp = known_reward_dream(max_steps=10)
    record, mean = _generation(DreamFitness.build(dp, ES, SPEC), 3)
    for k in ("best_fitness", "mean_fitness", "worst_fitness", "sigma", "mean_length"):
        assert info["record"][k] == pytest.approx(record[k], rel=1e-5, abs=1e-6), k
    np.testing.assert_allclose(arrays["mean"], mean, rtol=1e-5, atol=1e-6)


def test_sweep_over_members_and_candidates_equals_one_device(eight_devices):
    _, arrays, _ = eight_devices
    dp = known_reward_dream(max_steps=10)
    for k, member in enumerate(SWEEP):
        cfg = dataclasses.replace(ES, sigma_init=member.sigma_init)
        fitness = DreamFitness.build(dp.replace(temperature=jnp.float32(member.temperature)),
                                     cfg, SPEC)
        record, mean = _generation(fitness, member.seed)
        assert arrays["sweep_best"][k, 0] == pytest.approx(record["best_fitness"], abs=1e-5)
        assert arrays["sweep_mean"][k, 0] == pytest.approx(record["mean_fitness"], abs=1e-5)
        np.testing.assert_allclose(arrays["sweep_means"][k], mean, rtol=1e-5, atol=1e-6)


def test_checkpoint_restored_with_its_sharding(eight_devices):
    info, arrays, out = eight_devices
    assert info["restored_sharding_ok"] and info["restored_devices"] == DEVICES
    np.testing.assert_array_equal(arrays["restored"], np.arange(16.0).reshape(8, 2))
    here, _ = checkpoint.restore(out / "ckpt", {"x": np.zeros((8, 2), np.float32)},
                                 sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    np.testing.assert_array_equal(here["x"], arrays["restored"])  # 8 devices' file, 1 device


def test_pipeline_dream_training_on_8_devices_equals_one_device(eight_devices, tmp_path):
    """`--devices`: the controller stage's ES loop (logs, checks of the mean, best C) with the
    population over 8 devices is the one-device run (full CMA-ES: the generation test above)."""
    _, _, out = eight_devices
    _train(tmp_path / "loop")
    for name in ("log.jsonl", "evals.jsonl"):
        ours, theirs = (io.read_jsonl(d / name) for d in (out / "loop", tmp_path / "loop"))
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs, strict=True):
            for k, v in b.items():
                if k not in ("wall_s", "dream_steps_per_s"):
                    assert a[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (name, k)
    best = [io.load_npz(d / "best.npz")["paper_flat"] for d in (out / "loop", tmp_path / "loop")]
    np.testing.assert_allclose(best[0], best[1], rtol=1e-5, atol=1e-6)


def test_population_mesh_uses_the_devices_that_divide_the_population(eight_devices):
    meshes = eight_devices[0]["meshes"]
    assert meshes["8"] == {"sweep": 1, "pop": 8}
    assert meshes["12"] == {"sweep": 1, "pop": 6} and meshes["6"] == {"sweep": 1, "pop": 6}
    assert meshes["explicit 4"] == {"sweep": 1, "pop": 4} and meshes["explicit 1"] is None
    assert population_mesh(0, 8) is None  # this process: one device
    with pytest.raises(ConfigError, match="--devices 2: only 1 local devices"):
        population_mesh(2, 8)


def test_mesh_sizes_are_checked():
    with pytest.raises(ConfigError, match="does not fit the 1 local devices"):
        local_mesh(2, 1)
    shape_only = types.SimpleNamespace(shape={"sweep": 2, "pop": 4})  # a stand-in: sizes only
    check_divides(shape_only, 8, 4)
    with pytest.raises(ConfigError, match="popsize 6 is not a multiple of the 4"):
        check_divides(shape_only, 6)
    with pytest.raises(ConfigError, match="sweep of 3 members"):
        check_divides(shape_only, 8, 3)
