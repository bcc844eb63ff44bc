"""Tests of Adam and global-norm clipping (minireformer/training/optim.py), float64."""

import math

import numpy as np
import pytest

from minireformer.training.optim import Adam, clip_by_global_norm, global_norm


def test_adam_matches_a_hand_computed_two_step_example():
    """Kingma & Ba Algorithm 1 by hand for a 2-element parameter.

    lr 0.1, beta1 0.9, beta2 0.999, eps 1e-8; theta_0 = (1, -2); g_1 = (0.5, -1); g_2 = (-0.25, 2).

    Step 1: m = 0.1 g_1 = (0.05, -0.1);  v = 0.001 g_1^2 = (0.00025, 0.001);
            m_hat = m / 0.1 = (0.5, -1);  v_hat = v / 0.001 = (0.25, 1);
            theta_1 = theta_0 - 0.1 * (0.5 / (0.5 + 1e-8), -1 / (1 + 1e-8))
                    = (0.900000002, -1.900000001)  (to 9 decimals).
    Step 2: m = 0.9 (0.05, -0.1) + 0.1 (-0.25, 2) = (0.02, 0.11);
            v = 0.999 (0.00025, 0.001) + 0.001 (0.0625, 4) = (0.00031225, 0.004999);
            m_hat = m / (1 - 0.9^2) = m / 0.19 = (0.105263157894..., 0.578947368421...);
            v_hat = v / (1 - 0.999^2) = v / 0.001999 = (0.156203101550..., 2.500750375187...);
            theta_2 = theta_1 - 0.1 m_hat / (sqrt(v_hat) + 1e-8)
                    = (0.873366298707846..., -1.936610353472075...)  (40-digit decimal arithmetic).
    """
    params = {"theta": np.array([1.0, -2.0])}
    adam = Adam(lr=0.1)
    state = adam.init(params)

    info = adam.step(params, {"theta": np.array([0.5, -1.0])}, state)
    assert info["step"] == 1 and state["step"] == 1
    np.testing.assert_allclose(state["m"]["theta"], [0.05, -0.1], rtol=1e-14)
    np.testing.assert_allclose(state["v"]["theta"], [0.00025, 0.001], rtol=1e-14)
    expected_1 = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1.0 / (1.0 + 1e-8)]
    np.testing.assert_allclose(params["theta"], expected_1, rtol=1e-15)
    np.testing.assert_allclose(params["theta"], [0.90000000199999996, -1.90000000099999999])

    adam.step(params, {"theta": np.array([-0.25, 2.0])}, state)
    np.testing.assert_allclose(state["m"]["theta"], [0.02, 0.11], rtol=1e-14)
    np.testing.assert_allclose(state["v"]["theta"], [0.00031225, 0.004999], rtol=1e-14)
    m_hat = np.array([0.02, 0.11]) / 0.19
    v_hat = np.array([0.00031225, 0.004999]) / 0.001999
    np.testing.assert_allclose(m_hat, [0.10526315789473684, 0.5789473684210527], rtol=1e-15)
    np.testing.assert_allclose(v_hat, [0.15620310155077539, 2.5007503751875938], rtol=1e-15)
    expected_2 = np.array(expected_1) - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(params["theta"], expected_2, rtol=1e-14)
    np.testing.assert_allclose(
        params["theta"], [0.8733662987078461626, -1.936610353472075088], rtol=1e-14
    )


def test_adam_updates_nested_trees_in_place_and_first_step_is_lr_sign():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 2)), "blocks": [{"w": rng.standard_normal(4)}]}
    before = {"a": params["a"].copy(), "w": params["blocks"][0]["w"].copy()}
    a_obj = params["a"]
    grads = {"a": rng.standard_normal((3, 2)), "blocks": [{"w": rng.standard_normal(4)}]}
    adam = Adam(lr=0.01, eps=1e-12)
    adam.step(params, grads, adam.init(params))
    assert params["a"] is a_obj  # updated in place
    # At step 1, m_hat = g and v_hat = g^2, so the update is lr * sign(g) (up to eps).
    np.testing.assert_allclose(params["a"], before["a"] - 0.01 * np.sign(grads["a"]), rtol=1e-10)
    np.testing.assert_allclose(
        params["blocks"][0]["w"], before["w"] - 0.01 * np.sign(grads["blocks"][0]["w"]), rtol=1e-10
    )


def test_global_norm_is_the_norm_of_all_leaves_together():
    grads = {"a": np.array([3.0, 0.0]), "b": [np.array([[4.0]]), np.array([12.0])]}
    assert global_norm(grads) == pytest.approx(13.0, rel=1e-15)
    assert global_norm({}) == 0.0


def test_clipping_scales_to_the_max_norm_and_keeps_direction():
    grads = {"a": np.array([3.0, 0.0]), "b": [np.array([[4.0]])]}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0, rel=1e-15)
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-14)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-15)
    np.testing.assert_allclose(clipped["b"][0], [[0.8]], rtol=1e-15)
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])  # the input is not modified


def test_clipping_leaves_small_gradients_unchanged():
    grads = {"a": np.array([3.0, 4.0])}
    clipped, norm = clip_by_global_norm(grads, 10.0)
    assert norm == pytest.approx(5.0) and clipped is grads


def test_adam_clip_norm_clips_before_the_moments():
    params, grads = {"w": np.zeros(2)}, {"w": np.array([30.0, 40.0])}
    adam = Adam(lr=0.1, clip_norm=5.0)
    state = adam.init(params)
    info = adam.step(params, grads, state)
    assert info["clipped"] and info["grad_norm"] == pytest.approx(50.0)
    np.testing.assert_allclose(state["m"]["w"], 0.1 * np.array([3.0, 4.0]), rtol=1e-14)
    assert not adam.step(params, {"w": np.array([0.3, 0.4])}, state)["clipped"]


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": 1e-3, "beta1": 1.0}, "beta1"),
        ({"lr": 1e-3, "beta2": -0.1}, "beta2"),
        ({"lr": 1e-3, "eps": 0.0}, "eps"),
        ({"lr": 1e-3, "clip_norm": 0.0}, "clip_norm"),
    ],
)
def test_adam_rejects_invalid_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Adam(**kwargs)


def test_adam_rejects_non_numeric_lr():
    with pytest.raises(TypeError, match="lr"):
        Adam(lr="0.1")


def test_step_rejects_grads_with_another_structure():
    params = {"a": np.zeros(2), "b": np.zeros(3)}
    adam = Adam(lr=0.1)
    state = adam.init(params)
    with pytest.raises(ValueError, match="grads"):
        adam.step(params, {"a": np.zeros(2)}, state)
    with pytest.raises(ValueError, match="grads"):
        adam.step(params, {"a": np.zeros(2), "b": np.zeros(4)}, state)
    with pytest.raises(ValueError, match="state"):
        adam.step(params, {"a": np.zeros(2), "b": np.zeros(3)}, {"m": {}})


def test_step_rejects_non_finite_gradients_without_touching_params():
    params = {"a": np.ones(2)}
    adam = Adam(lr=0.1)
    state = adam.init(params)
    with pytest.raises(ValueError, match="grads: expected finite"):
        adam.step(params, {"a": np.array([1.0, math.nan])}, state)
    np.testing.assert_array_equal(params["a"], [1.0, 1.0])
    assert state["step"] == 0


@pytest.mark.parametrize("max_norm", [0.0, -1.0, math.inf])
def test_clip_rejects_invalid_max_norm(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_global_norm({"a": np.ones(2)}, max_norm)
