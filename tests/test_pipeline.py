"""Run-folder bookkeeping and the experiment CLI's front: validation, planning, skip, resume,
invalidation, the run-folder lock, profiles through tyro and one-line errors.

The stage runners here are test-only fakes that record calls and leave each stage's products
(empty files); the real stages are exercised end to end in test_experiment.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dreamjax.config import DEFAULT_PROFILE, PROFILES, STAGES, profile_config
from dreamjax.errors import ArtifactError, ConfigError, NonFiniteLossError
from dreamjax.experiments import cli
from dreamjax.pipeline.run import (
    FORMAT_VERSION,
    HOLDER_FILE,
    LOCK_FILE,
    RunFolder,
    fingerprints,
    plan,
    preflight,
    run_stages,
    stage_products,
    validate,
)


def _cfg(tmp_path, **kw):
    return dataclasses.replace(profile_config("smoke"), run_dir=str(tmp_path / "run"), **kw)


class Recorder:
    """Test-only runners: each appends its stage name and leaves its stage's products (empty
    files); `fail_at` raises inside that stage."""

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
                for rel in stage_products(cfg, stage):
                    path = run_folder.root / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                return {"stage": stage}

            return run

        return {s: make(s) for s in STAGES}


def _quiet(cfg, runners, **kw):
    return run_stages(cfg, runners, log=lambda _: None, **kw)


def _calls_and_log(cfg) -> tuple[list[str], list[str]]:
    """Run with fresh recording runners: (stages called, log lines)."""
    rec, msgs = Recorder(), []
    run_stages(cfg, rec.runners(), log=msgs.append)
    return rec.calls, msgs


def test_all_stages_run_then_skip(tmp_path):
    cfg = _cfg(tmp_path)
    rec = Recorder()
    _quiet(cfg, rec.runners())
    assert rec.calls == list(STAGES)
    rec2 = Recorder()
    _quiet(cfg, rec2.runners())
    assert rec2.calls == []
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert all(stages[s]["done"] for s in STAGES)
    assert not (tmp_path / "run" / HOLDER_FILE).exists()


def test_interrupted_stage_resumes(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _quiet(cfg, Recorder(fail_at="mdnrnn").runners())
    rec = Recorder()
    _quiet(cfg, rec.runners())
    assert rec.calls == ["mdnrnn", "controller", "evaluate", "report"]


def test_config_change_invalidates_stage_and_later(tmp_path):
    cfg = _cfg(tmp_path)
    _quiet(cfg, Recorder().runners())
    changed = dataclasses.replace(cfg, mdnrnn=dataclasses.replace(cfg.mdnrnn, steps=7))
    fp_old, fp_new = fingerprints(cfg), fingerprints(changed)
    assert [s for s in STAGES if fp_old[s] != fp_new[s]] == list(STAGES[STAGES.index("mdnrnn") :])
    assert (tmp_path / "run" / "mdnrnn").exists()
    calls, msgs = _calls_and_log(changed)
    assert calls == ["mdnrnn", "controller", "evaluate", "report"]
    assert any("changed" in m for m in msgs)


def test_subset_needs_upstream(tmp_path):
    cfg = _cfg(tmp_path, stages=("vae",))
    with pytest.raises(ConfigError, match="needs stage 'collect'"):
        _quiet(cfg, Recorder().runners())


def test_subset_with_a_gap_fails_before_any_stage_runs(tmp_path):
    """`--stages collect encode` used to run collect and then fail at encode."""
    rec = Recorder()
    with pytest.raises(ConfigError, match="stage 'encode' needs stage 'vae' first"):
        _quiet(_cfg(tmp_path, stages=("collect", "encode")), rec.runners())
    assert rec.calls == []
    assert not (tmp_path / "run" / "episodes").exists()


def test_preflight_reads_only(tmp_path):
    """The CLI's check before it imports the runners: the same refusals, nothing created."""
    with pytest.raises(ConfigError, match="stage 'encode' needs stage 'vae' first"):
        preflight(_cfg(tmp_path, stages=("collect", "encode")))
    assert not (tmp_path / "run").exists()
    assert preflight(_cfg(tmp_path)).run == STAGES


def test_refused_plan_deletes_nothing(tmp_path):
    """A changed M config with `--stages evaluate` would delete M, C and the evaluation and then
    find M missing: it is refused before anything is deleted."""
    cfg = _cfg(tmp_path)
    _quiet(cfg, Recorder().runners())
    changed = dataclasses.replace(
        cfg, stages=("evaluate",), mdnrnn=dataclasses.replace(cfg.mdnrnn, steps=7)
    )
    with pytest.raises(ConfigError, match="stage 'evaluate' needs stage 'mdnrnn' first"):
        _quiet(changed, Recorder().runners())
    assert all(json.loads((tmp_path / "run" / "stages.json").read_text())[s]["done"]
               for s in STAGES)
    assert (tmp_path / "run" / "mdnrnn" / "DONE.json").exists()


def test_missing_product_of_an_unrequested_stage_is_one_line(tmp_path):
    cfg = _cfg(tmp_path)
    _quiet(cfg, Recorder().runners())
    (tmp_path / "run" / "vae" / "DONE.json").unlink()
    later = dataclasses.replace(
        cfg, stages=("encode",), encode=dataclasses.replace(cfg.encode, batch_size=32)
    )
    rec = Recorder()
    with pytest.raises(ArtifactError, match=r"vae/DONE\.json: missing \(1 file.*add 'vae'"):
        _quiet(later, rec.runners())
    assert rec.calls == []


def test_missing_product_of_a_requested_stage_redoes_it(tmp_path):
    """A finished stage whose files are gone runs again (it resumes) when it is requested; the
    later stages, same config and seed, stay done."""
    cfg = _cfg(tmp_path)
    _quiet(cfg, Recorder().runners())
    (tmp_path / "run" / "series" / "initial_latents.npz").unlink()
    changed = dataclasses.replace(cfg, es=dataclasses.replace(cfg.es, dream_generations=2))
    calls, msgs = _calls_and_log(changed)
    assert calls == ["encode", "controller", "evaluate", "report"]
    assert any("encode: redoing" in m for m in msgs)


def test_verifier_flags_damaged_files(tmp_path):
    """A stage's verifier (e.g. collect checking its episode files) runs only when a stage that
    will run reads from it (`STAGE_READS`); what it reports is redone, or refused when the stage
    is not requested."""
    cfg = _cfg(tmp_path)
    _quiet(cfg, Recorder().runners())
    calls: list[str] = []

    bad = [f"{tmp_path}/run/episodes/ep_000000.npz: corrupt"]

    def verify(cfg, run):
        calls.append("verify")
        return bad

    rec = Recorder()
    _quiet(cfg, rec.runners(), verifiers={"collect": verify})
    assert rec.calls == [] and calls == []  # nothing runs, nothing is verified
    new_c = dataclasses.replace(cfg, es=dataclasses.replace(cfg.es, dream_generations=2))
    assert plan(new_c, RunFolder(cfg.run_dir), {"collect": verify}).redo == {}
    assert calls == []  # C's training does not read the episodes
    changed = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, batch_size=16))
    todo = plan(changed, RunFolder(changed.run_dir), {"collect": verify})
    assert todo.run == ("collect", *STAGES[1:]) and todo.redo == {"collect": bad}
    assert todo.invalidate == "vae"
    only_vae = dataclasses.replace(changed, stages=("vae",))
    with pytest.raises(ArtifactError, match=r"ep_000000\.npz: corrupt .*add 'collect'"):
        plan(only_vae, RunFolder(changed.run_dir), {"collect": verify})


def test_locked_run_folder_is_refused(tmp_path):
    """flock locks belong to an open file description, so two opens in one process exclude each
    other just as two processes do."""
    cfg = _cfg(tmp_path)
    with RunFolder(cfg.run_dir).lock():
        holder = json.loads((tmp_path / "run" / HOLDER_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        rec = Recorder()
        with pytest.raises(ConfigError, match=rf"in use by pid {os.getpid()} on "):
            _quiet(cfg, rec.runners())
        assert rec.calls == []
    rec = Recorder()
    _quiet(cfg, rec.runners())
    assert rec.calls == list(STAGES)


def test_hard_linked_copy_of_a_locked_run_folder_has_its_own_lock(tmp_path):
    """`cp -al RUN COPY` links COPY/.lock to RUN's: COPY gets a lock file of its own, so a run
    in the copy does not wait for RUN's (and RUN stays locked)."""
    run, copy = RunFolder(tmp_path / "run"), tmp_path / "copy"
    with run.lock():
        copy.mkdir()
        for name in (LOCK_FILE, HOLDER_FILE):
            os.link(run.root / name, copy / name)
        with RunFolder(copy).lock():
            assert (copy / LOCK_FILE).stat().st_nlink == 1
            assert (run.root / LOCK_FILE).stat().st_nlink == 1
            with pytest.raises(ConfigError, match="in use by"), run.lock():
                pass
            with pytest.raises(ConfigError, match="in use by"), RunFolder(copy).lock():
                pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    """A process that took the lock and was killed (its lock.json left behind) blocks nothing."""
    run_dir = tmp_path / "run"
    code = textwrap.dedent(f"""
        import sys, time
        from dreamjax.pipeline.run import RunFolder
        with RunFolder({str(run_dir)!r}).lock():
            print("locked", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"in use by pid {proc.pid}"), \
                RunFolder(run_dir).lock():
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run_dir / HOLDER_FILE).exists()  # stale record of the killed holder
    with RunFolder(run_dir).lock():
        assert json.loads((run_dir / HOLDER_FILE).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"vae": {"batch_size": -1}}, "--vae.batch-size must be > 0"),
        ({"es": {"popsize": 7}}, "--es.popsize must be even"),
        ({"mdnrnn": {"reward_head": False}}, "needs M's reward and done heads"),
        ({"collect": {"episodes": 0}}, "--collect.episodes must be > 0"),
        ({"es": {"strategy": "NoSuchES"}}, "--es.strategy: unknown strategy 'NoSuchES'"),
        ({"es": {"sigma_init": 0.0}}, "--es.sigma-init must be > 0"),
        ({"dream": {"temperature": 0.0}}, "--dream.temperature must be > 0"),
        ({"dream": {"temperature": float("nan")}}, "--dream.temperature must be > 0"),
        ({"dream": {"dropout": 1.0}}, "--dream.dropout must be < 1"),
        ({"dream": {"dropout": -0.1}}, "--dream.dropout must be >= 0"),
        ({"mdnrnn": {"reward_pessimism": 0.0}}, "--mdnrnn.reward-pessimism must be > 0"),
        ({"controller": {"kind": "zc"}}, "--controller.kind: unknown value 'zc'"),
        ({"collect": {"policy": "random"}}, "--collect.policy: unknown value 'random'"),
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


@pytest.mark.parametrize(
    ("top", "match"),
    [
        ({"stages": ("collect", "train")}, "--stages: unknown value 'train'"),
        ({"stages": ()}, "--stages: name at least one"),
        ({"train_in": "sim"}, "--train-in: unknown value 'sim'"),
        ({"envs_per_worker": 0}, "--envs-per-worker must be > 0"),
    ],
)
def test_bad_top_level_values_rejected(tmp_path, top, match):
    with pytest.raises(ConfigError, match=match):
        validate(_cfg(tmp_path, **top))


def test_every_profile_validates(tmp_path):
    for name in PROFILES:
        validate(dataclasses.replace(profile_config(name), run_dir=str(tmp_path)))


def test_the_laptop_default_trains_c_only_in_the_dream():
    """Issue 12: the main command's C never trains in the real game (the loop's real episodes
    only feed M and its checks), and every episode is CarRacing's 1000 frames."""
    cfg = profile_config(DEFAULT_PROFILE)
    assert cfg.profile == "laptop" and cfg.controller_phases == ("iterative",)
    assert cfg.iterate.rounds > 1 and cfg.dream.dropout > 0 and cfg.collect.policy != "paper"
    for steps in (cfg.collect.max_steps, cfg.es.max_steps, cfg.eval.max_steps):
        assert steps * cfg.action_repeat == 1000
    assert profile_config("laptop-real").controller_phases == ("real",)


def test_incompatible_run_folder_refused(tmp_path):
    cfg = _cfg(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ConfigError, match="run folder format"):
        _quiet(cfg, Recorder().runners())
    (tmp_path / "run" / "run.json").unlink()
    (tmp_path / "run" / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a dreamjax run folder"):
        _quiet(cfg, Recorder().runners())


# ---------------------------------------------------------------------------------------- CLI


def _parse(*argv):
    return cli.parse(PROFILES, list(argv), default=DEFAULT_PROFILE, prog="test", description="")


@pytest.mark.parametrize(
    "argv",
    [
        ("--profile", "smoke"),
        ("--profile=smoke",),
        ("smoke",),
        ("--seed", "3", "--profile", "smoke"),
    ],
)
def test_profile_picks_the_presets_defaults(argv):
    got = _parse(*argv).config
    want = profile_config("smoke")
    assert dataclasses.replace(got, seed=want.seed) == want


def test_flags_override_the_profile_and_default_profile():
    got = _parse("--vae.batch-size", "7", "--profile", "smoke", "--debug")
    assert got.debug
    assert got.config == dataclasses.replace(
        profile_config("smoke"), vae=dataclasses.replace(profile_config("smoke").vae, batch_size=7)
    )
    plain = _parse("--seed", "5")
    assert not plain.debug
    assert plain.config == dataclasses.replace(profile_config(DEFAULT_PROFILE), seed=5)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--profile", "nope"], "--profile: unknown profile 'nope'; choose one of smoke, laptop"),
        (["--profile"], "--profile needs a value"),
        (["smoke", "--profile", "paper"], "--profile given 2 times"),
    ],
)
def test_bad_profile_is_one_config_error(argv, match):
    with pytest.raises(ConfigError, match=match):
        cli.profile_args(argv, PROFILES)


def test_help_lists_every_field_with_the_profiles_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        _parse("--profile", "smoke", "--help")
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    cfg = profile_config("smoke")
    for flag in ("--run-dir", "--mdnrnn.seq-len", "--es.dream-generations",
                 "--dream.temperature", "--controller.kind", "--debug"):
        assert flag in out
    assert f"(default: {cfg.run_dir})" in out
    assert f"(default: {cfg.mdnrnn.seq_len})" in out
    assert "Input steps per sequence" in out  # a field's docstring
    with pytest.raises(SystemExit):
        _parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: runs/carracing)" in out and "smoke" in out and "paper" in out


def _main(body, *argv):
    return cli.main(list(argv), body, profiles=PROFILES, default=DEFAULT_PROFILE, prog="test",
                    description="")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("--es.strategy: unknown"), 2),
        (ArtifactError("run/episodes/ep_000000.npz: corrupt\n(second line)"), 1),
        (NonFiniteLossError("vae: loss nan at step 3"), 1),
    ],
)
def test_dreamjax_errors_are_one_line(capsys, monkeypatch, error, code):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def body(cfg):
        raise error

    assert _main(body, "--profile", "smoke") == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    with pytest.raises(type(error)):
        _main(body, "--profile", "smoke", "--debug")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(type(error)):
        _main(body, "--profile", "smoke")


def test_other_exceptions_keep_their_traceback(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def body(cfg):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _main(body, "--profile", "smoke")


def test_main_passes_the_parsed_config(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    seen = []
    assert _main(lambda cfg: seen.append(cfg) or 0, "smoke", "--seed", "9") == 0
    assert seen == [dataclasses.replace(profile_config("smoke"), seed=9)]


def test_the_estimate_counts_every_iterative_round():
    """The banner's estimate of `--train-in iterative`: round 0 is the dream run, and every
    later round adds its dream generations, its M fine-tuning and its real episodes (its
    selection episodes included); a τ grid adds each round's calibration dreams."""
    from dreamjax.pipeline.carracing import CARRACING, estimate_seconds
    from dreamjax.pipeline.iterate import TEMPERATURE_DREAMS

    base = profile_config("laptop")
    rate, e, it, m = CARRACING.rates, base.es, base.iterate, base.mdnrnn
    dream = estimate_seconds(dataclasses.replace(base, train_in="dream"))["controller"]

    def iterative(rounds: int) -> float:
        cfg = dataclasses.replace(base, train_in="iterative",
                                  iterate=dataclasses.replace(it, rounds=rounds))
        return estimate_seconds(cfg)["controller"]

    step = 1 + (base.action_repeat - 1) * rate["undrawn_frame_cost"]  # game frames a step
    real = (it.episodes + it.select_episodes) * e.max_steps * rate.get(
        "real_episode_frac", 0.8) * step / rate["real_steps_s"]
    assert iterative(1) == pytest.approx(dream + real)
    fine_tune = it.mdnrnn_steps * m.batch_size * m.seq_len / rate["mdn_seq_steps_s"]
    dreams = it.dream_generations * e.popsize * e.rollouts * e.max_steps / rate["dream_steps_s"]
    assert iterative(3) - iterative(2) >= real + fine_tune + dreams
    more = dataclasses.replace(base, train_in="iterative", iterate=dataclasses.replace(
        it, rounds=1, select_episodes=it.select_episodes + 10))
    assert estimate_seconds(more)["controller"] - iterative(1) == pytest.approx(
        real * 10 / (it.episodes + it.select_episodes))
    grid = dataclasses.replace(base, train_in="iterative", iterate=dataclasses.replace(
        it, rounds=2, temperatures=(1.0, 2.0)))
    calibration = 2 * 2 * 3 * TEMPERATURE_DREAMS * e.max_steps / rate["dream_steps_s"]
    assert estimate_seconds(grid)["controller"] - iterative(2) == pytest.approx(calibration)


def test_the_estimate_scales_on_a_cpu_without_avx512():
    """The rates are an AVX-512 CPU's: on an x86 CPU whose flags lack avx512f each stage's
    estimate is multiplied by its measured factor, and the banner says so; with avx512f, or
    with no flags line (not x86), nothing changes."""
    import re

    from dreamjax.pipeline.carracing import (
        NO_AVX512_SLOWDOWN,
        cpu_flags,
        cpu_slowdown,
        describe,
        estimate_seconds,
    )

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert cpu_flags(avx2) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_slowdown(avx2) == NO_AVX512_SLOWDOWN
    assert cpu_slowdown(avx2.replace("avx2", "avx2 avx512f")) == {}
    assert cpu_slowdown("processor\t: 0\nFeatures\t: fp asimd\n") == {}
    assert cpu_slowdown() in ({}, NO_AVX512_SLOWDOWN)  # this machine's /proc/cpuinfo

    cfg = profile_config("laptop")

    def minutes(banner: str) -> dict[str, int]:
        line = banner.splitlines()[-1]
        return {s: int(m) for s, m in re.findall(r"(\w+) (\d+)m", line)}

    est = estimate_seconds(cfg)
    plain, slow = describe(cfg, slowdown={}), describe(cfg, slowdown=NO_AVX512_SLOWDOWN)
    assert minutes(plain) == {s: round(t / 60) for s, t in est.items() if s in cfg.stages}
    assert minutes(slow) == {s: round(t * NO_AVX512_SLOWDOWN[s] / 60) for s, t in est.items()
                             if s in cfg.stages}
    assert "without AVX-512" in slow and "AVX-512" not in plain


def test_the_banner_counts_only_the_stages_that_will_run(tmp_path):
    """A rerun's banner estimates the stages `preflight` plans (a finished stage is named "done
    already", not counted); a run folder that `--reopen` will fill plans without the stages it
    takes from OLD (`reopen.KEPT`)."""
    import re

    from dreamjax.pipeline.carracing import describe, estimate_seconds
    from dreamjax.pipeline.reopen import KEPT

    def minutes(banner: str) -> dict[str, int]:
        return {s: int(m) for s, m in re.findall(r"(\w+) (\d+)m", banner.splitlines()[-1])}

    cfg = dataclasses.replace(profile_config("laptop"), run_dir=str(tmp_path / "run"))
    est = estimate_seconds(cfg)
    _quiet(dataclasses.replace(cfg, stages=("collect", "vae")), Recorder().runners())
    todo = preflight(cfg)
    assert todo.run == STAGES[2:]
    banner = describe(cfg, slowdown={}, pending=todo.run)
    assert minutes(banner) == {s: round(est[s] / 60) for s in STAGES[2:]}
    assert banner.endswith("; done already: collect, vae")
    assert f"{sum(est[s] for s in STAGES[2:]) / 60:.0f} min (" in banner
    assert "done already" not in describe(cfg, slowdown={})
    assert describe(cfg, pending=()).endswith(
        "[dreamjax] nothing to run, done already: " + ", ".join(STAGES))

    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text("{}")
    reopened = dataclasses.replace(cfg, run_dir=str(tmp_path / "new"), reopen=str(old))
    assert preflight(reopened).run == tuple(s for s in STAGES if s not in KEPT)
    assert not (tmp_path / "new").exists()


def test_the_estimate_counts_game_frames_under_action_repeat():
    """With `action_repeat` k the real env plays k frames a step and draws one: collection and
    evaluation cost 1 + (k - 1) x the undrawn frame's share of a drawn one per step (CarRacing's
    `FastCarRacing` skips drawing; stock CarRacing and Doom draw every frame, k times as much);
    V and M see one frame per step."""
    from dreamjax.pipeline.carracing import CARRACING, estimate_seconds
    from dreamjax.pipeline.doom import DOOM

    for game, cost in ((CARRACING, 1 + 3 * CARRACING.rates["undrawn_frame_cost"]), (DOOM, 4.0)):
        base = dataclasses.replace(profile_config("laptop"), action_repeat=1)
        one = estimate_seconds(base, game)
        four = estimate_seconds(dataclasses.replace(base, action_repeat=4), game)
        for stage in ("collect", "evaluate"):
            assert four[stage] == pytest.approx(cost * one[stage])
        for stage in ("vae", "encode", "mdnrnn"):
            assert four[stage] == one[stage]
    stock = dataclasses.replace(profile_config("laptop"), fast_env=False, action_repeat=1)
    stock_four = estimate_seconds(dataclasses.replace(stock, action_repeat=4))
    assert stock_four["collect"] == pytest.approx(4 * estimate_seconds(stock)["collect"])
