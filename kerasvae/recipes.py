"""How a model is meant to be trained: the recipe a preset was tuned with, carried by the model itself.

`model.compile()` with no optimizer builds the recipe's optimizer, and `fit` fits the recipe's step
schedules (the KL warm-up) to the run's length. `kerasvae train` takes the same path, so a Keras script
and the command line train the same model (tests/test_recipes.py).
"""

import dataclasses

from kerasvae import optimizers


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Training settings of a preset.

    Attributes:
        epochs: int. Epochs the preset was tuned with (`kerasvae train`'s default; `fit` keeps Keras's).
        batch_size: int. Batch size it was tuned with.
        learning_rate: float. Adam's learning rate.
        weight_averaging: float or None. Momentum of an exponential moving average of the weights (Keras's
            optimizer `use_ema`): validation and the trained model use the average. None keeps the last
            step's weights.
        kl_warmup_share: float or None. A preset's KL warm-up counts steps of a Fashion-MNIST-sized run
            (`vae`: 5,000 of 14,070 in 30 epochs); a short run (digits: 12 steps an epoch) would end before
            the KL weight reached beta, training mostly an autoencoder. So `fit` shortens the warm-up to at
            most this share of its steps (the presets use 0.4). None, the default, keeps the warm-up a
            model was built with.
    """

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_averaging: float | None = None
    kl_warmup_share: float | None = None

    def __post_init__(self):
        if self.weight_averaging is not None and not 0 < self.weight_averaging < 1:
            raise ValueError(f"weight_averaging must be a momentum in (0, 1), or None; got {self.weight_averaging}")

    def optimizer(self):
        """The recipe's optimizer: kerasvae's fused Adam at `learning_rate`, averaging the weights when asked."""
        averaged = {"use_ema": True, "ema_momentum": self.weight_averaging} if self.weight_averaging else {}
        return optimizers.Adam(self.learning_rate, **averaged)

    def replace(self, **changes):
        """A copy with `changes`; None values keep the recipe's (the command line's unset options)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def get(recipe):
    """A Recipe from a Recipe, its config dict, or None (the default recipe)."""
    if recipe is None:
        return Recipe()
    return recipe if isinstance(recipe, Recipe) else Recipe.from_config(recipe)
