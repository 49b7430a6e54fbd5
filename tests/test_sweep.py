"""Sweeps as one program: a vmapped ES member equals its single run, a vmapped M equals its
single run, the grid and its settings, and the CLI's files (one row per member)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_evolve import known_reward_dream
from test_train import _write_series

from dreamjax import checkpoint, io
from dreamjax.config import ControllerConfig, ESConfig, MDNRNNConfig
from dreamjax.errors import ConfigError
from dreamjax.es.dream import DreamFitness
from dreamjax.es.loop import train_controller
from dreamjax.es.strategies import make_strategy
from dreamjax.es.sweep import ESMember, es_grid, member_es_params, run_es_sweep
from dreamjax.experiments import sweep as sweep_cli
from dreamjax.models.controller import controller_spec, ravel_params
from dreamjax.pipeline.training import train_mdnrnn

ES = ESConfig(strategy="Sep_CMA_ES", popsize=8, rollouts=2, dream_generations=6, eval_every=6,
              eval_episodes=3, chunk=6, max_steps=10)
"""Sep-CMA-ES: no eigendecomposition, whose arbitrary basis of a repeated eigenvalue would
turn float32 rounding into another population (see `dreamjax.es.sweep`)."""
M_CFG = MDNRNNConfig(hidden=4, n_mix=2, reward_head=True, done_head=True, batch_size=2,
                     seq_len=6, steps=2, checkpoint_every=2, log_every=1)
"""known_reward_dream's M shape, so that the CLI's ES sweep reuses the compiled programs."""
GRID = {"seeds": [0, 1], "sigmas": [0.1, 0.5], "temperatures": [1.0, 1.5],
        "strategy_settings": ["", "c_mean=0.5"]}


def _single(tmp_path, dp, member: ESMember, es: ESConfig):
    """The member run alone by the one ES loop, with its sigma_0, τ and settings."""
    spec = controller_spec("zh", 2, 4, action_dim=3)
    cfg = dataclasses.replace(es, sigma_init=member.sigma_init)
    dream = dp.replace(temperature=jnp.float32(member.temperature))

    def make_fitness():
        fit = DreamFitness.build(dream, cfg, spec)
        return dataclasses.replace(fit, es_params=member_es_params(fit.strategy, member))

    out = tmp_path / f"single_{hash(member) & 0xFFFF:x}"
    res = train_controller(jax.random.key(member.seed), make_fitness, out, cfg,
                           generations=cfg.dream_generations, progress=False)
    return res, io.read_jsonl(out / "log.jsonl")


def test_vmapped_es_members_equal_their_single_runs(tmp_path):
    dp = known_reward_dream(max_steps=10)
    members = es_grid(GRID["seeds"], GRID["sigmas"], GRID["temperatures"],
                      [sweep_cli.parse_settings(s) for s in GRID["strategy_settings"]])
    assert len(members) == 16 and members[1] == ESMember(0, 0.1, 1.0, (("c_mean", 0.5),))
    res = run_es_sweep(dp, ES, ControllerConfig("zh"), members)
    assert res.metrics["best_fitness"].shape == (16, 6) and res.means.shape == (16, 21)
    rows = res.rows()
    assert [r["member"] for r in rows] == list(range(16)) and rows[1]["c_mean"] == 0.5
    for k in (0, 6, 11):  # both seeds, sigmas, temperatures and settings
        single, log = _single(tmp_path, dp, members[k], ES)
        for name in ("best_fitness", "mean_fitness", "sigma", "mean_return"):
            np.testing.assert_allclose(res.metrics[name][k], [r[name] for r in log],
                                       rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(res.means[k], ravel_params(single.params), atol=1e-5)
        assert rows[k]["eval_return"] == pytest.approx(single.best_return, abs=1e-4)
        assert rows[k]["final_best_return"] == pytest.approx(log[-1]["best_return"], abs=1e-5)
    assert rows[0]["eval_return"] > 4.0  # it learns: the zero controller scores 0, optimum 7.59


def test_grid_settings_are_checked():
    es = make_strategy("CMA_ES", 8, jnp.zeros(4))
    p = member_es_params(es, ESMember(0, 0.3, 1.0, (("c_mean", 0.5), ("c_1", 0.01))))
    assert float(p.std_init) == pytest.approx(0.3) and float(p.c_mean) == 0.5
    with pytest.raises(ConfigError, match="'weights' is not a scalar setting"):
        member_es_params(es, ESMember(0, 0.3, 1.0, (("weights", 1.0),)))
    with pytest.raises(ConfigError, match="not a scalar setting"):
        member_es_params(es, ESMember(0, 0.3, 1.0, (("no_such", 1.0),)))
    assert sweep_cli.parse_settings("c_mean=0.5, c_1=1e-2") == (("c_mean", 0.5), ("c_1", 0.01))
    assert sweep_cli.parse_settings("") == ()
    with pytest.raises(ConfigError, match="not name=number"):
        sweep_cli.parse_settings("c_mean")
    with pytest.raises(ConfigError, match="grid is empty"):
        run_es_sweep(known_reward_dream(), ES, ControllerConfig("zh"), [])


def test_cli_rows_and_the_vmapped_ms_equal_their_single_runs(tmp_path):
    """The CLI on a folder that already has an M (the single run of M-sweep member 0) and a
    latent bank, in the shapes of the test above so that its compiled programs are reused."""
    run = tmp_path / "run"
    _write_series(run / "series", [30, 25, 40], z_dim=2)
    single = train_mdnrnn(jax.random.key(0), run / "series", run / "mdnrnn", M_CFG, z_dim=2,
                          progress=False)
    io.save_npz(run / "series" / "initial_latents.npz", mu=np.zeros((3, 2), np.float32),
                logvar=np.zeros((3, 2), np.float32))
    grid = [a for k, v in GRID.items() for a in (f"--{k.replace('_', '-')}", *map(str, v))]
    m_flags = [a for f in ("hidden", "n_mix", "batch_size", "seq_len", "steps", "checkpoint_every",
                           "log_every")
               for a in (f"--mdnrnn.{f.replace('_', '-')}", str(getattr(M_CFG, f)))]
    argv = ["--profile", "smoke", "--run-dir", str(run), *grid, "--es.strategy", "Sep_CMA_ES",
            "--es.popsize", "8", "--es.rollouts", "2", "--es.max-steps", "10", "--es.chunk",
            "6", "--es.eval-episodes", "3", "--generations", "6", "--mdnrnn-seeds", "0", "1",
            "--mdnrnn-learning-rates", "1e-3", "3e-3", *m_flags]
    assert sweep_cli.main(argv) == 0
    rows = json.loads((run / "sweep.json").read_text())
    assert len(rows) == 16 and rows[3] == {**rows[3], "seed": 0, "sigma_init": 0.1,
                                           "temperature": 1.5, "c_mean": 0.5}
    assert all(np.isfinite(r["final_best_return"]) and "eval_return" in r for r in rows)
    curves = json.loads((run / "sweep" / "curves.json").read_text())
    assert len(curves["members"]) == 16 and len(curves["members"][0]["best_return"]) == 6
    assert (run / "sweep.png").stat().st_size > 0
    md = (run / "sweep.md").read_text()
    assert "Sweep of 16 dream CMA-ES runs" in md and "Sweep of 4 Ms" in md
    m_rows = json.loads((run / "sweep" / "mdnrnn.json").read_text())
    assert [(r["seed"], r["learning_rate"]) for r in m_rows] == [(0, 1e-3), (0, 3e-3), (1, 1e-3),
                                                                  (1, 3e-3)]
    member0 = checkpoint.restore_params(run / "sweep" / "mdnrnn" / "members" / "0")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 member0, single.params)
    assert m_rows[0]["final_loss"] == pytest.approx(single.history[-1]["loss"], rel=1e-6)
    assert m_rows[1]["final_loss"] != m_rows[0]["final_loss"]
    assert checkpoint.tree_hash(member0) == m_rows[0]["mdnrnn_id"]
    assert sweep_cli.main(["--run-dir", str(run), "--strategy-settings", "c_mean"]) == 2
