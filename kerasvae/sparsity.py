"""Sparsity penalties on autoencoder codes. Each is a serializable callable codes [batch, latent_dim] -> a
scalar added to the loss; `code_activation` names the code activation the penalty needs."""

import keras
import tensorflow as tf

serializable = keras.saving.register_keras_serializable(package="kerasvae")


@serializable
class L1Sparsity:
    """weight * E_batch sum_j |z_j|: the L1 activity penalty.

    Args:
        weight: float. Defaults to 1e-3.
    """

    code_activation = None

    def __init__(self, weight=1e-3):
        self.weight = float(weight)

    def __call__(self, codes):
        return self.weight * tf.reduce_mean(tf.reduce_sum(tf.abs(codes), axis=-1))

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@serializable
class KLSparsity:
    """weight * sum_j KL(rho || rho_hat_j), rho_hat_j the batch-mean activation of unit j (Ng 2011).

    KL(rho || rho_hat) = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)): pushes each
    sigmoid unit to fire with average rate `target`.

    Args:
        target: float in (0, 1). Target mean activation rho. Defaults to 0.05.
        weight: float. Defaults to 1.0.
    """

    code_activation = "sigmoid"

    def __init__(self, target=0.05, weight=1.0):
        if not 0.0 < target < 1.0:
            raise ValueError(f"KLSparsity target must be in (0, 1), got {target}.")
        self.target = float(target)
        self.weight = float(weight)

    def __call__(self, codes):
        rho = self.target
        rho_hat = tf.clip_by_value(tf.reduce_mean(codes, axis=0), 1e-6, 1.0 - 1e-6)
        kl = rho * tf.math.log(rho / rho_hat) + (1.0 - rho) * tf.math.log((1.0 - rho) / (1.0 - rho_hat))
        return self.weight * tf.reduce_sum(kl)

    def get_config(self):
        return {"target": self.target, "weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
