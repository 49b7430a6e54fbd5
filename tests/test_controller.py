"""C: parameter counts of the paper's configurations, flat-vector round trips, the action map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamjax.models.controller import (
    Controller,
    controller_for,
    controller_spec,
    from_paper_vector,
    init_controller,
    make_obs,
    num_params,
    obs_dim,
    ravel_params,
    to_paper_vector,
    unravel_fn,
    zeros_params,
)

CASES = [  # kind, z_dim, hidden_size, obs_dim, params (PAPER.md §1.5, §2.6)
    ("zh", 32, 256, 288, 867),
    ("z", 32, 256, 32, 99),
    ("z-hidden", 32, 256, 32, 1443),
    ("zch", 64, 512, 1088, 1088),
]


@pytest.mark.parametrize(("kind", "z", "h", "o", "n"), CASES)
def test_paper_parameter_counts(kind, z, h, o, n):
    c = controller_for(kind)
    assert obs_dim(kind, z, h) == o
    assert num_params(c, o) == n
    spec = controller_spec(kind, z, h)
    assert (spec.controller, spec.obs_dim, spec.num_params) == (c, o, n)
    assert spec.obs_mode == {"z-hidden": "z"}.get(kind, kind)


def test_controller_spec_is_static_and_unravels_flat_vectors():
    """A spec built twice is equal and hashes equal (one jit cache entry); unravel inverts
    ravel_params; the action size follows M's when given."""
    spec = controller_spec("zh", 4, 8, action_dim=2)
    assert spec == controller_spec("zh", 4, 8, action_dim=2)
    assert hash(spec) == hash(controller_spec("zh", 4, 8, action_dim=2))
    assert spec.controller.action_dim == 2 and spec.obs_dim == 12 and spec.num_params == 26
    params = init_controller(jax.random.key(1), spec.controller, spec.obs_dim)
    jax.tree.map(np.testing.assert_array_equal, spec.unravel(ravel_params(params)), params)
    jax.tree.map(np.testing.assert_array_equal, spec.zeros(),
                 zeros_params(spec.controller, spec.obs_dim))


@pytest.mark.parametrize(("kind", "z", "h", "o", "n"), CASES)
def test_flat_round_trips(kind, z, h, o, n):
    c = controller_for(kind)
    params = init_controller(jax.random.key(0), c, o)
    flat = ravel_params(params)
    assert flat.shape == (n,)
    back = unravel_fn(c, o)(flat)
    paper = to_paper_vector(c, params)
    assert paper.shape == (n,)
    again = from_paper_vector(c, o, paper)
    for p in (back, again):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, p)
    # both layouts hold the same numbers in different orders
    np.testing.assert_array_equal(np.sort(paper), np.sort(np.asarray(flat)))


def test_paper_layout_is_bias_then_row_major_weights():
    """carracing/model.py: bias = params[:3]; weight = params[3:].reshape(input_size, 3)."""
    c = controller_for("zh")
    flat = np.arange(867, dtype=np.float32)
    p = from_paper_vector(c, 288, flat)["params"]["out"]
    np.testing.assert_array_equal(p["bias"], [0, 1, 2])
    np.testing.assert_array_equal(p["kernel"], flat[3:].reshape(288, 3))
    x = np.random.default_rng(0).normal(size=(5, 288)).astype(np.float32) * 1e-3
    a = c.apply(from_paper_vector(c, 288, flat), x)
    np.testing.assert_allclose(a, np.tanh(x @ flat[3:].reshape(288, 3) + flat[:3]), atol=1e-5)


def test_hidden_layer_layout_matches_reference():
    """MODE_Z_HIDDEN: [bias_hidden(40), W_hidden(32, 40), bias_out(3), W_out(40, 3)]."""
    c = controller_for("z-hidden")
    flat = np.arange(1443, dtype=np.float32)
    p = from_paper_vector(c, 32, flat)["params"]
    np.testing.assert_array_equal(p["hidden"]["bias"], flat[:40])
    np.testing.assert_array_equal(p["hidden"]["kernel"], flat[40:1320].reshape(32, 40))
    np.testing.assert_array_equal(p["out"]["bias"], flat[1320:1323])
    np.testing.assert_array_equal(p["out"]["kernel"], flat[1323:].reshape(40, 3))


def test_zero_params_act_zero_and_doom_has_no_bias():
    c = controller_for("zch")
    assert c == Controller(action_dim=1, hidden=0, use_bias=False)
    p = zeros_params(c, 1088)
    assert set(p["params"]["out"]) == {"kernel"}
    np.testing.assert_array_equal(c.apply(p, jnp.ones((2, 1088))), np.zeros((2, 1)))


def test_make_obs_orders_features():
    z, cc, h = jnp.zeros((2, 3)), jnp.ones((2, 4)), 2 * jnp.ones((2, 4))
    assert make_obs("z", z, cc, h).shape == (2, 3)
    np.testing.assert_array_equal(make_obs("zh", z, cc, h)[0], [0, 0, 0, 2, 2, 2, 2])
    np.testing.assert_array_equal(make_obs("zch", z, cc, h)[0, 3:], [1] * 4 + [2] * 4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown controller kind"):
        controller_for("zz")
    with pytest.raises(ValueError, match=r"\(867,\)"):
        from_paper_vector(controller_for("zh"), 288, np.zeros(10))
