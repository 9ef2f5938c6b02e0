import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import models
from flaxtrain.data import make_batches
from flaxtrain.tasks.classification import classification_loss, predict_log_probs
from flaxtrain.train import (
    compile_steps,
    create_train_state,
    init_params,
    loop,
    make_optimizer,
)


def _setup(tiny_split, lr=1e-2):
    train, _, preproc = tiny_split
    config = models.make_config("textcnn", vocab_size=preproc.vocab_size, num_classes=2, embed_dim=16, num_filters=8,
                                kernel_sizes=(3, 5))
    module = models.build_model("textcnn", config)
    params = init_params(module, {"input_ids": jnp.zeros((1, 8), jnp.int32)}, jax.random.key(0))
    state = create_train_state(module, params, make_optimizer(lr))
    return train, preproc, module, state, compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)


def test_loss_falls_and_state_advances(tiny_split):
    train, preproc, _, state, steps = _setup(tiny_split)
    rng = jax.random.key(0)
    losses = []
    for epoch in range(4):
        batches, _ = make_batches(train.input_ids, train.labels, batch_size=8, buckets=preproc.buckets, shuffle=True, epoch=epoch)
        state, sums, stop = loop.train_epoch(state, batches, steps=steps, rng=rng, epoch=epoch, verbose=False)
        assert stop is None
        losses.append(loop.summarize(sums)["loss"])
    assert int(state.step) == 4 * 25
    assert losses[-1] < 0.5 * losses[0], losses


def test_eval_sums_are_exact_weighted_means(tiny_split):
    train, preproc, module, state, steps = _setup(tiny_split)
    batches, _ = make_batches(train.input_ids, train.labels, batch_size=7, buckets=preproc.buckets)  # ragged last batches
    sums = jax.device_get(loop.evaluate(state, batches, steps=steps, verbose=False))
    assert float(sums["count"]) == len(train)
    # The same loss computed example by example with no batch padding.
    total = 0.0
    for ids, label in zip(train.input_ids, train.labels):
        logits = module.apply({"params": state.params}, jnp.asarray(np.pad(ids, (0, 24 - len(ids)))[None]), deterministic=True)
        total += float(-jax.nn.log_softmax(logits)[0, label])
    np.testing.assert_allclose(float(sums["loss_sum"]), total, rtol=1e-4)


def test_predict_returns_examples_in_order(tiny_split):
    train, preproc, _, state, steps = _setup(tiny_split)
    batches, count = make_batches(train.input_ids, batch_size=16, buckets=preproc.buckets)
    log_probs = loop.predict(state.params, batches, steps=steps, num_examples=len(train), num_batches=count)
    assert log_probs.shape == (len(train), 2)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    single, _ = make_batches([train.input_ids[17]], batch_size=16, buckets=preproc.buckets)
    alone = loop.predict(state.params, single, steps=steps, num_examples=1)
    np.testing.assert_allclose(alone[0], log_probs[17], rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_with_a_message(tiny_split):
    train, preproc, _, state, steps = _setup(tiny_split)
    state = state.replace(params=jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state.params))
    batches, _ = make_batches(train.input_ids, train.labels, batch_size=8, buckets=preproc.buckets)
    state, _, stop = loop.train_epoch(state, batches, steps=steps, rng=jax.random.key(0), epoch=0, verbose=False)
    assert stop is not None and "loss became nan" in stop and "lower the learning rate" in stop


def test_dropout_keys_differ_per_step(tiny_split):
    train, preproc, _, state, steps = _setup(tiny_split, lr=0.0)
    batch = next(make_batches(train.input_ids, train.labels, batch_size=8, buckets=preproc.buckets)[0])
    rng = jax.random.key(0)
    state, first = steps.train(state, batch, rng)
    state, second = steps.train(state, batch, rng)  # lr 0: same params, new dropout mask
    assert float(first["loss_sum"]) != float(second["loss_sum"])


def test_update_average_is_the_running_mean():
    from flaxtrain.train import update_average

    trees = [{"w": jnp.full((3, 5), float(i)), "b": jnp.arange(7, dtype=jnp.float32) * i} for i in (1, 4, 10)]
    average = trees[0]
    for count, tree in enumerate(trees[1:], start=1):
        average = update_average(average, tree, jnp.asarray(count))
    np.testing.assert_allclose(average["w"], 5.0)
    np.testing.assert_allclose(average["b"], np.arange(7) * 5.0, rtol=1e-6)


def test_a_frozen_encoder_has_no_backward_pass():
    from flaxtrain.models.encoder import EncoderConfig

    config = models.HeadConfig(EncoderConfig(vocab_size=500, hidden_size=32, num_layers=4, num_heads=4, mlp_dim=64,
                                             max_positions=32), num_classes=3)
    module = models.build_model("transformer", config)
    params = init_params(module, {"input_ids": jnp.zeros((1, 32), jnp.int32)}, jax.random.key(0))
    batch = {"input_ids": np.ones((8, 32), np.int32), "label": np.zeros(8, np.int32), "weight": np.ones(8, np.float32)}
    flops = {}
    for frozen in ((), ("encoder",)):
        steps = compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)
        state = steps.place_state(create_train_state(module, params, make_optimizer(1e-3, frozen=frozen)))
        flops[frozen] = steps.flops(state, batch, jax.random.key(0))
    # Forward ~ 1/3 of forward + backward: XLA dropped the gradients nobody reads.
    assert flops[("encoder",)] < 0.45 * flops[()], flops


def test_frozen_params_stay_outside_the_clipped_gradient_norm():
    params = {"encoder": {"kernel": jnp.ones((3, 5))}, "head": {"kernel": jnp.ones((5, 2)), "bias": jnp.zeros(2)}}
    grads = {"encoder": {"kernel": jnp.full((3, 5), 1e6)},  # huge: inside the norm it would shrink the head's step
             "head": {"kernel": jnp.full((5, 2), 0.6), "bias": jnp.full(2, -0.2)}}
    frozen = make_optimizer(1e-2, clip_norm=1.0, frozen=("encoder",))
    plain = make_optimizer(1e-2, clip_norm=1.0)
    with jax.numpy_dtype_promotion("standard"):  # Optax's Adam, as the train step runs it
        updates, _ = frozen.update(grads, frozen.init(params), params)
        alone, _ = plain.update({"head": grads["head"]}, plain.init({"head": params["head"]}), {"head": params["head"]})
    np.testing.assert_array_equal(updates["encoder"]["kernel"], 0.0)
    for name in ("kernel", "bias"):  # the head is clipped by its own norm (1.92), as if alone; with the encoder's
        # in the norm its gradients would shrink to ~1e-7 of themselves, near Adam's eps, and its step by a quarter
        np.testing.assert_allclose(updates["head"][name], alone["head"][name], rtol=1e-6)
        assert np.abs(np.asarray(updates["head"][name])).max() > 1e-3


def test_an_update_that_overflows_a_weight_is_not_applied(tiny_split):
    """Finite loss and gradients, yet the updated weights are not finite: decoupled weight decay at lr x decay
    = 10 sends the padding row (masked out of the loss, so its gradient is 0) from 3e38 past float32's range."""
    train, preproc, module, state, _ = _setup(tiny_split)
    params = state.params
    params["embed"]["embedding"] = params["embed"]["embedding"].at[preproc.pad_id].set(3e38)
    batch = next(iter(make_batches(train.input_ids, train.labels, batch_size=8, buckets=preproc.buckets)[0]))
    for skip in (False, True):
        start = create_train_state(module, jax.tree.map(jnp.copy, params), make_optimizer(1000.0, weight_decay=0.01))
        before = [np.asarray(x) for x in jax.tree.leaves((start.params, start.opt_state))]  # the step donates start
        steps = compile_steps(module.apply, classification_loss, skip_nonfinite=skip)
        after, sums = steps.train(start, batch, jax.random.key(0))
        assert np.isfinite(float(sums["loss_sum"])) if not skip else float(sums["skipped"]) == 1.0
        for old, new in zip(before, jax.tree.leaves((after.params, after.opt_state))):
            np.testing.assert_array_equal(old, np.asarray(new))  # weights and moments as they were
        if skip:
            assert int(after.step) == 1 and int(after.halted) == 0
        else:
            assert int(after.step) == 0 and int(after.halted) == 1 and float(sums["nonfinite"]) == 1.0


def test_a_fit_leaves_the_models_params_valid_and_unchanged(tiny_split):
    """The Learner's state owns copies (train/state.py's copy_tree): the donating train step must not
    delete or change the params it started from, and the fresh optimizer state (one compiled init) is
    what optax's eager init gives."""
    import flaxtrain

    import flaxtrain.text

    train, _, preproc = tiny_split
    model = flaxtrain.text.text_classifier("textcnn", train, preproc, params={"embed_dim": 8, "num_filters": 4}, verbose=0)
    original = model.params
    before = jax.tree.map(np.array, original)
    learner = flaxtrain.get_learner(model, train_data=train, batch_size=32)
    state = learner._train_state()
    for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(original)):
        assert ours.unsafe_buffer_pointer() != theirs.unsafe_buffer_pointer()
    eager = learner._tx.init(original)
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(eager)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.opt_state), jax.tree.map(np.asarray, eager))
    learner.fit(1e-2, 1, verbose=0)
    assert model.params is not original  # fit published its trained weights
    # The arrays fit started from were neither deleted (donated) nor written to.
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, original), before)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                        jax.tree.leaves(jax.tree.map(np.asarray, model.params))))
