"""A deep autoencoder with greedy layer-wise pretraining (Hinton & Salakhutdinov 2006), then end-to-end
fine-tuning, against the same network from random weights; and a classifier on 50 labels initialised
from the pretrained encoder.

    python examples/stacked_ae.py [--dataset fashion_mnist]
"""

import keras
import numpy as np
from _common import images, parse

import kerasvae as kv
from kerasvae import pretraining

args = parse(__doc__, epochs=10)
x_train, y_train, x_test, y_test, shape = images(args)
hidden = (1000, 500, 250) if shape[0] == 28 else (128, 64, 32)
for pretrain in (False, True):
    keras.utils.set_random_seed(0)
    model = kv.presets.stacked_ae(input_shape=shape, latent_dim=30 if shape[0] == 28 else 8, hidden=hidden, seed=0)
    if pretrain:
        print("level losses:", pretraining.pretrain_layerwise(model, x_train, epochs=max(1, args.epochs // 2)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, epochs=args.epochs, batch_size=128, verbose=0)
    classifier = pretraining.encoder_classifier(model, num_classes=10)
    classifier.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    labelled = np.tile(np.random.default_rng(0).choice(len(x_train), 50, replace=False), 20)
    classifier.fit(x_train[labelled], y_train[labelled], epochs=5, batch_size=32, verbose=0)
    print(f"pretrained={pretrain}: test reconstruction NLL {float(-model.elbo(x_test).mean()):.2f} nats, "
          f"classifier on 50 labels {classifier.evaluate(x_test, y_test, verbose=0)[1]:.3f}")
