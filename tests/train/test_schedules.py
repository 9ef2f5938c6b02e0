import numpy as np

from flaxtrain.train import schedules
from flaxtrain.train.lr_find import suggestions


def test_onecycle_warms_up_then_anneals_with_inverse_momentum():
    schedule = schedules.onecycle(1e-2, 100, start_step=10)
    lrs = np.array([schedule(s)["learning_rate"] for s in range(10, 111)])
    b1s = np.array([schedule(s)["b1"] for s in range(10, 111)])
    assert np.isclose(lrs[0], 1e-2 / 25) and np.isclose(lrs.max(), 1e-2) and int(np.argmax(lrs)) == 30
    assert lrs[-1] < 1e-6 and np.all(np.diff(lrs[30:]) <= 1e-12) and np.all(np.diff(lrs[:31]) >= -1e-12)
    assert np.isclose(b1s[0], 0.95) and np.isclose(b1s[30], 0.85) and b1s[-1] > 0.949
    assert schedule(0) == schedule(10)  # before the start: the first value


def test_sgdr_restarts_each_cycle_and_lengthens_them():
    schedule, epochs = schedules.sgdr(1e-3, 10, n_cycles=3, cycle_len=1, cycle_mult=2)
    assert epochs == 1 + 2 + 4
    lrs = [schedule(s)["learning_rate"] for s in range(70)]
    assert lrs[0] == lrs[10] == lrs[30] == 1e-3  # restarts at steps 0, 10, 30
    assert lrs[9] < 1e-4 and lrs[29] < 1e-4 and lrs[69] < 1e-4
    assert np.isclose(lrs[20], 5e-4)  # half-way through the 20-step second cycle


def test_suggestions_find_the_descent_of_a_u_shaped_curve():
    lrs = np.geomspace(1e-6, 1.0, 61)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-3 * (x + 3.5))) + np.where(x > -1.5, 5 * (x + 1.5) ** 2, 0.0)
    result = suggestions(lrs, losses, beta=0.0)
    assert 10**-4.2 < result.steepest < 10**-2.8  # the sigmoid's steepest point is 10**-3.5
    assert 10**-5 < result.valley < 10**-1.5
    assert np.isclose(result.minimum_over_10, lrs[int(np.argmin(losses))] / 10)
