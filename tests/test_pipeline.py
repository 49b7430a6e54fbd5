"""Run-folder bookkeeping: validation, skip, resume and invalidation.

The stage runners here are test-only fakes that record calls; the real stages are exercised end
to end in test_experiment.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from dreamjax.config import STAGES, profile_config
from dreamjax.pipeline.run import FORMAT_VERSION, ConfigError, fingerprints, run_stages, validate


def _cfg(tmp_path, **kw):
    return dataclasses.replace(profile_config("smoke"), run_dir=str(tmp_path / "run"), **kw)


class Recorder:
    """Test-only runners: each appends its stage name; `fail_at` raises inside that stage."""

    def __init__(self, fail_at: str | None = None):
        self.calls: list[str] = []
        self.fail_at = fail_at

    def runners(self):
        def make(stage):
            def run(cfg, run_folder):
                self.calls.append(stage)
                run_folder.path(stage).mkdir(parents=True, exist_ok=True)
                if stage == self.fail_at:
                    raise KeyboardInterrupt
                return {"stage": stage}

            return run

        return {s: make(s) for s in STAGES}


def test_all_stages_run_then_skip(tmp_path):
    cfg = _cfg(tmp_path)
    rec = Recorder()
    run_stages(cfg, rec.runners(), log=lambda _: None)
    assert rec.calls == list(STAGES)
    rec2 = Recorder()
    run_stages(cfg, rec2.runners(), log=lambda _: None)
    assert rec2.calls == []
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert all(stages[s]["done"] for s in STAGES)


def test_interrupted_stage_resumes(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_stages(cfg, Recorder(fail_at="mdnrnn").runners(), log=lambda _: None)
    rec = Recorder()
    run_stages(cfg, rec.runners(), log=lambda _: None)
    assert rec.calls == ["mdnrnn", "controller", "evaluate", "report"]


def test_config_change_invalidates_stage_and_later(tmp_path):
    cfg = _cfg(tmp_path)
    run_stages(cfg, Recorder().runners(), log=lambda _: None)
    changed = dataclasses.replace(cfg, mdnrnn=dataclasses.replace(cfg.mdnrnn, steps=7))
    fp_old, fp_new = fingerprints(cfg), fingerprints(changed)
    assert [s for s in STAGES if fp_old[s] != fp_new[s]] == list(STAGES[STAGES.index("mdnrnn") :])
    assert (tmp_path / "run" / "mdnrnn").exists()
    rec = Recorder()
    msgs: list[str] = []
    run_stages(changed, rec.runners(), log=msgs.append)
    assert rec.calls == ["mdnrnn", "controller", "evaluate", "report"]
    assert any("changed" in m for m in msgs)


def test_subset_needs_upstream(tmp_path):
    cfg = _cfg(tmp_path, stages=("vae",))
    with pytest.raises(ConfigError, match="needs stage 'collect'"):
        run_stages(cfg, Recorder().runners(), log=lambda _: None)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"vae": {"batch_size": -1}}, "--vae.batch-size must be > 0"),
        ({"es": {"popsize": 7}}, "--es.popsize must be even"),
        ({"mdnrnn": {"reward_head": False}}, "needs M's reward and done heads"),
        ({"collect": {"episodes": 0}}, "--collect.episodes must be > 0"),
    ],
)
def test_bad_values_rejected(tmp_path, change, match):
    cfg = _cfg(tmp_path)
    for section, fields in change.items():
        cfg = dataclasses.replace(
            cfg, **{section: dataclasses.replace(getattr(cfg, section), **fields)}
        )
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_incompatible_run_folder_refused(tmp_path):
    cfg = _cfg(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ConfigError, match="run folder format"):
        run_stages(cfg, Recorder().runners(), log=lambda _: None)
    (tmp_path / "run" / "run.json").unlink()
    (tmp_path / "run" / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a dreamjax run folder"):
        run_stages(cfg, Recorder().runners(), log=lambda _: None)
