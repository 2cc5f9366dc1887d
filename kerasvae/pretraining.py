"""Greedy layer-wise pretraining of a stacked (deep) autoencoder, and a classifier initialised from its encoder.

Bengio et al. 2007, Hinton & Salakhutdinov 2006: train one shallow autoencoder per level on the codes of
the level below, then stack the encoders and the mirrored decoders and fine-tune the whole model with
`fit`. Here the shallow autoencoders *are* the model's own layers, trained in place, so there is nothing
to copy: level k pairs encoder layer k with the decoder layer that mirrors it.

    level 0:   x   -> enc.hidden[0] -> h1 -> likelihood head -> p(x | h1)   loss -log p(x | h1)
    level k:   h_k -> enc.hidden[k] -> h_k+1 -> dec.hidden[-k] -> h_k'     loss mean (h_k - h_k')^2
    top level: h_L -> posterior head (loc) -> z -> dec.hidden[0] -> h_L'    loss mean (h_L - h_L')^2

The decoder layer of each level keeps the activation it has in the deep model (ReLU reconstructs ReLU
codes, which are non-negative), so the pretrained pair is exactly a sub-network of the stacked model.
"""

import keras
import numpy as np
import tensorflow as tf

from kerasvae import networks


def _levels(model):
    """[(encode, decode, variables, loss)] from the bottom level up, for an MLP encoder/decoder pair."""
    if not isinstance(model.encoder, networks.MLP) or not isinstance(model.decoder, networks.MLP):
        raise TypeError(
            "pretrain_layerwise needs kerasvae.networks.MLP encoder and decoder torsos, got "
            f"{type(model.encoder).__name__} and {type(model.decoder).__name__}"
        )
    encoder, decoder = model.encoder.hidden, model.decoder.hidden
    if [layer.units for layer in encoder] != [layer.units for layer in reversed(decoder)]:
        raise ValueError(
            f"the decoder must mirror the encoder for layer-wise pretraining: encoder units "
            f"{[layer.units for layer in encoder]}, decoder units {[layer.units for layer in decoder]}"
        )

    def squared_error(h, h_hat):
        return tf.reduce_mean(tf.reduce_sum(tf.square(h - h_hat), axis=-1))

    def code(h):
        return model.posterior_head(h)["loc"]

    levels = [(
        lambda x: encoder[0](model.encoder.flatten(x)),
        model.likelihood,
        encoder[0].trainable_variables + model.likelihood.trainable_variables,
        lambda x, params: -tf.reduce_mean(model.likelihood.log_prob(params, x)),
    )]
    for k in range(1, len(encoder)):
        mirror = decoder[len(decoder) - k]
        levels.append((encoder[k], mirror, encoder[k].trainable_variables + mirror.trainable_variables, squared_error))
    levels.append((code, decoder[0], model.posterior_head.trainable_variables + decoder[0].trainable_variables, squared_error))
    return levels


def pretrain_layerwise(model, x, epochs=5, batch_size=128, learning_rate=1e-3, seed=0, verbose=0):
    """Greedily pretrains each level of `model` as a shallow autoencoder on the codes of the level below.

    The model's own layers are trained in place; afterwards `model.compile(...)` and `model.fit(x)`
    fine-tune the stacked model end to end. Works for any kerasvae model with `networks.MLP` torsos whose
    decoder mirrors the encoder (`Autoencoder`, `VAE`: for a VAE the top level trains the posterior mean).

    Args:
        model: a kerasvae model with MLP encoder and decoder.
        x: array [n, *input_shape], values as the likelihood expects (e.g. in [0, 1] for Bernoulli).
        epochs: int. Epochs per level. Defaults to 5.
        batch_size: int. Defaults to 128.
        learning_rate: float. Adam's learning rate for every level. Defaults to 1e-3.
        seed: int. Shuffling seed. Defaults to 0.
        verbose: int. 1 prints one line per level. Defaults to 0.

    Returns:
        list of float: the last epoch's mean loss of each level, bottom first.

    >>> model = kv.presets.stacked_ae(input_shape=(8, 8, 1), hidden=(32, 16), latent_dim=4)
    >>> losses = pretrain_layerwise(model, x_train, epochs=2)   # doctest: +SKIP
    """
    inputs = tf.convert_to_tensor(model._check_inputs(x))
    level_losses = []
    for level, (encode, decode, variables, loss_fn) in enumerate(_levels(model)):
        step = _train_step(encode, decode, variables, loss_fn, keras.optimizers.Adam(learning_rate))
        batches = tf.data.Dataset.from_tensor_slices(inputs).shuffle(len(inputs), seed=seed + level).batch(batch_size)
        for _ in range(epochs):
            epoch_loss = np.mean([float(step(batch)) for batch in batches])
        level_losses.append(float(epoch_loss))
        if verbose:
            print(f"pretrain level {level}: loss {epoch_loss:.4f}")
        # The next level trains on this level's codes, computed once (the layers below are frozen now).
        inputs = tf.concat([encode(batch) for batch in tf.data.Dataset.from_tensor_slices(inputs).batch(1024)], axis=0)
    return level_losses


def _train_step(encode, decode, variables, loss_fn, optimizer):
    optimizer.build(variables)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch, decode(encode(batch)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def encoder_classifier(model, num_classes, include_code=True):
    """A classifier whose torso is a copy of `model`'s encoder (weights copied, so fine-tuning it leaves the
    autoencoder untouched), with a fresh softmax layer on top; compile it with a sparse categorical loss.

    Args:
        model: a kerasvae model with an MLP encoder.
        num_classes: int.
        include_code: bool. Also copy the posterior head's mean layer (the code) under the softmax.
            Defaults to True.
    """
    encoder = networks.MLP.from_config(model.encoder.get_config())
    layers = [keras.Input(model.data_shape), encoder]
    encoder.build((None, *model.data_shape))
    encoder.set_weights(model.encoder.get_weights())
    if include_code:
        kernel, bias = model.posterior_head.dense.get_weights()
        code = keras.layers.Dense(model.latent_dim)
        code.build((None, kernel.shape[0]))
        code.set_weights([kernel[:, : model.latent_dim], bias[: model.latent_dim]])
        layers.append(code)
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(layers)
