"""dreamjax.checkpoint: round trips, retention, atomicity, errors, tree_hash."""

import gc
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamjax import checkpoint
from dreamjax.errors import ArtifactError


def _state(seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {
        "dense": {"kernel": jax.random.normal(k1, (5, 3)), "bias": jnp.zeros(3)},
        "out": {"kernel": jax.random.normal(k2, (3, 1), dtype=jnp.float32)},
    }
    tx = optax.chain(optax.clip(1.0), optax.adam(1e-3))
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial mu/nu/count
    return {"params": params, "opt_state": opt_state}


def _assert_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_params_and_optax_state(tmp_path):
    state = _state()
    checkpoint.save(tmp_path, 7, state, {"note": "hi", "loss": 1.5})
    template = _state(seed=1)  # same structure, other values
    restored, meta = checkpoint.restore(tmp_path, template)
    _assert_equal(restored, state)
    assert meta == {"note": "hi", "loss": 1.5}
    assert checkpoint.latest_step(tmp_path) == 7


def test_restore_params_without_target(tmp_path):
    state = _state()
    checkpoint.save(tmp_path, 1, state)
    params = checkpoint.restore_params(tmp_path)
    _assert_equal(params, state["params"])
    assert checkpoint.tree_hash(params) == checkpoint.tree_hash(state["params"])
    assert checkpoint.restore_raw(tmp_path)[1] == {}  # no metadata given: an empty dict


def test_keeps_last_n(tmp_path):
    state = _state()
    for step in range(1, 6):
        checkpoint.save(tmp_path, step, state, max_to_keep=2)
    assert checkpoint.all_steps(tmp_path) == [4, 5]


def test_restore_older_step_and_existing_step_error(tmp_path):
    a, b = _state(0), _state(1)
    checkpoint.save(tmp_path, 1, a)
    checkpoint.save(tmp_path, 2, b)
    _assert_equal(checkpoint.restore(tmp_path, a, step=1)[0], a)
    _assert_equal(checkpoint.restore(tmp_path, a)[0], b)
    with pytest.raises(ValueError, match="step 2 already exists"):
        checkpoint.save(tmp_path, 2, a)


_KILL_MID_SAVE = """
import os, sys
import jax.numpy as jnp
import orbax.checkpoint as ocp
from dreamjax import checkpoint
from dreamjax.errors import ArtifactError

def die(*args, **kwargs):
    os._exit(9)  # a hard kill while orbax is writing the step

ocp.JsonCheckpointHandler.save = die
ocp.JsonCheckpointHandler.async_save = die
checkpoint.save(sys.argv[1], 3, {"params": {"w": jnp.full((50, 50), 7.0)}}, {"x": 1})
"""


def test_killed_save_is_ignored_and_previous_restores(tmp_path):
    """A process killed during a save (the metadata writer exits the interpreter) leaves only
    orbax's `<step>.orbax-checkpoint-tmp` folder; the previous step stays the latest."""
    good = {"params": {"w": jnp.ones((50, 50))}}
    checkpoint.save(tmp_path, 2, good, {"x": 0})
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_SAVE, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert any(".orbax-checkpoint-tmp" in p.name for p in tmp_path.iterdir())
    assert checkpoint.latest_step(tmp_path) == 2
    restored, meta = checkpoint.restore(tmp_path, good)
    _assert_equal(restored, good)
    assert meta == {"x": 0}
    newer = {"params": {"w": jnp.zeros((50, 50))}}
    checkpoint.save(tmp_path, 3, newer)  # the torn step can then be written for real
    _assert_equal(checkpoint.restore(tmp_path, good)[0], newer)


def test_missing_and_corrupt_checkpoint_errors(tmp_path):
    missing = tmp_path / "nope"
    assert checkpoint.latest_step(missing) is None
    with pytest.raises(FileNotFoundError, match="nope: checkpoint folder does not exist"):
        checkpoint.restore(missing, _state())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no finished checkpoint"):
        checkpoint.restore_params(empty)
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    with pytest.raises(NotADirectoryError, match="file: checkpoint folder is not a directory"):
        checkpoint.latest_step(not_dir)

    ck = tmp_path / "ck"
    checkpoint.save(ck, 4, _state())
    with pytest.raises(checkpoint.CheckpointError, match=r"ck/4: cannot restore") as err:
        checkpoint.restore(ck, {"params": _state()["params"]})  # another structure
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_checkpoint_error(tmp_path):
    """Orbax/tensorstore may finish failed reads after their event loop closed ("Event loop is
    closed", ignored); we wait for that here so it is not reported under the next test."""
    ck = tmp_path / "ck"
    checkpoint.save(ck, 4, _state())
    shutil.rmtree(ck / "4" / "state" / "d")
    shutil.rmtree(ck / "4" / "state" / "ocdbt.process_0")
    with pytest.raises(checkpoint.CheckpointError, match=r"ck/4: cannot restore") as err:
        checkpoint.restore(ck, _state())
    assert "\n" not in str(err.value)
    time.sleep(0.5)
    gc.collect()


def _scramble_files(folder):
    """Overwrite every file under `folder` with random bytes of the same length."""
    rng = np.random.default_rng(0)
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            f.write_bytes(rng.integers(0, 256, max(f.stat().st_size, 1), np.uint8).tobytes())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["missing-arrays", "random-bytes"])
def test_restore_params_of_corrupt_folder_is_one_line_artifact_error(tmp_path, damage):
    """The final-params loader on a corrupt folder: one short line, an ArtifactError, that
    starts with the step's folder (no kilobytes of tensorstore spec)."""
    ck = tmp_path / "params"
    checkpoint.save(ck, 5, {"params": _state()["params"]}, {"step": 5}, max_to_keep=1)
    if damage == "missing-arrays":
        shutil.rmtree(ck / "5" / "state" / "d")
    else:
        _scramble_files(ck / "5")
    with pytest.raises(ArtifactError) as err:
        checkpoint.restore_params(ck)
    msg = str(err.value)
    assert isinstance(err.value, checkpoint.CheckpointError)
    assert msg.startswith(f"{ck.absolute() / '5'}: cannot restore")
    assert "\n" not in msg and len(msg) < 400 and "tensorstore_spec" not in msg
    time.sleep(0.5)
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_restore_readable_skips_and_moves_aside_corrupt_newer_steps(tmp_path, capsys):
    a, b = _state(0), _state(1)
    checkpoint.save(tmp_path, 1, a, {"n": 1})
    checkpoint.save(tmp_path, 2, b, {"n": 2})
    checkpoint.save(tmp_path, 3, b, {"n": 3})
    _scramble_files(tmp_path / "3")
    shutil.rmtree(tmp_path / "2" / "state" / "d")
    state, meta, step = checkpoint.restore_readable(tmp_path, a)
    assert (step, meta) == (1, {"n": 1})
    _assert_equal(state, a)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines)
    assert "/3: cannot restore" in lines[0] and "/2: cannot restore" in lines[1]
    assert checkpoint.all_steps(tmp_path) == [1]
    assert (tmp_path / "2.corrupt").is_dir() and (tmp_path / "3.corrupt").is_dir()
    checkpoint.save(tmp_path, 2, b)  # the step can be written again
    assert checkpoint.restore_readable(tmp_path, a)[2] == 2
    time.sleep(0.5)
    gc.collect()


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        checkpoint.save(tmp_path, 0, _state(), {"a": np.zeros(2)})


def test_tree_hash_identifies_values():
    a = _state(0)["params"]
    h = checkpoint.tree_hash(a)
    assert len(h) == 64 and h == checkpoint.tree_hash(jax.tree.map(np.asarray, a))
    flipped = jax.tree.map(lambda x: x, a)
    flipped["dense"]["bias"] = flipped["dense"]["bias"].at[0].set(1e-30)
    assert checkpoint.tree_hash(flipped) != h
    assert checkpoint.tree_hash((1.0, 2.0)) == checkpoint.tree_hash([1.0, 2.0])
    assert checkpoint.tree_hash({"a": 1.0}) != checkpoint.tree_hash({"b": 1.0})
    assert checkpoint.tree_hash(np.zeros(2, np.float32)) != checkpoint.tree_hash(np.zeros(2))
