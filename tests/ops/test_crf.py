"""The linear-chain CRF against brute-force enumeration of every tag sequence on tiny cases."""

import itertools

import jax
import numpy as np
import pytest

from flaxtrain.ops import crf


def _case(seed: int, b: int = 4, t: int = 5, c: int = 3):
    rng = np.random.default_rng(seed)
    emissions = rng.normal(size=(b, t, c)).astype(np.float32)
    transitions = rng.normal(size=(c, c)).astype(np.float32)
    start, end = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    lengths = np.array([t, 3, 1, 0][:b])
    mask = np.arange(t)[None] < lengths[:, None]
    return emissions, transitions, start, end, lengths, mask


def _score(emissions, transitions, start, end, row, tags):
    total = start[tags[0]] + end[tags[-1]] + sum(emissions[row, i, tag] for i, tag in enumerate(tags))
    return total + sum(transitions[a, b] for a, b in zip(tags, tags[1:]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_algorithm_and_viterbi_match_brute_force(seed):
    emissions, transitions, start, end, lengths, mask = _case(seed)
    c = emissions.shape[-1]
    log_z = np.asarray(crf.log_partition(emissions, mask, transitions, start, end))
    path, best = map(np.asarray, crf.viterbi_decode(emissions, mask, transitions, start, end))
    for row, length in enumerate(lengths):
        if length == 0:  # an empty row: likelihood 0, decoded to zeros
            assert log_z[row] == 0 and (path[row] == 0).all()
            continue
        scores = {tags: _score(emissions, transitions, start, end, row, tags)
                  for tags in itertools.product(range(c), repeat=int(length))}
        reference = np.logaddexp.reduce(np.array(list(scores.values()), np.float64))
        np.testing.assert_allclose(log_z[row], reference, rtol=1e-5)
        argmax = max(scores, key=scores.get)
        assert tuple(path[row, :length]) == argmax and (path[row, length:] == 0).all()
        np.testing.assert_allclose(best[row], scores[argmax], rtol=1e-5)
        for tags in list(scores)[:: max(1, len(scores) // 7)]:  # log p(tags) = score - log Z
            padded = np.zeros((1, mask.shape[1]), np.int32)
            padded[0, :length] = tags
            got = crf.log_likelihood(emissions[row:row + 1], padded, mask[row:row + 1], transitions, start, end)
            np.testing.assert_allclose(float(got[0]), scores[tags] - reference, rtol=1e-4, atol=1e-5)


def test_likelihood_is_differentiable_and_jits():
    emissions, transitions, start, end, _, mask = _case(3)
    tags = np.zeros(mask.shape, np.int32)

    def nll(e, tr):
        return -crf.log_likelihood(e, tags, mask, tr, start, end).sum()

    grads = jax.jit(jax.grad(nll, argnums=(0, 1)))(emissions, transitions)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert np.abs(np.asarray(grads[0])[~mask]).max() == 0  # padding gets no gradient
