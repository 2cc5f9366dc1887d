"""A recurrent VAE on sine/sawtooth series: reconstruct held-out series and flag injected spikes.

    python examples/sequence_anomaly.py
"""

import keras
from _common import parse
from sklearn.metrics import roc_auc_score

import kerasvae as kv

args = parse(__doc__, epochs=25)
train, _ = kv.data.synthetic_series(1500, 32, seed=0)
test, _ = kv.data.synthetic_series(300, 32, seed=1)
model = kv.presets.sequence_vae(input_shape=(32, 1), seed=0)
model.compile(optimizer=keras.optimizers.Adam(3e-3))
model.fit(train, epochs=args.epochs, batch_size=64, verbose=0)
spiked, is_anomalous = kv.data.inject_spikes(test, fraction=0.5, magnitude=2.0, seed=2)
score = model.anomaly_score(spiked, method="reconstruction")
print(f"held-out MSE {float(((model.reconstruct(test) - test) ** 2).mean()):.4f}, "
      f"spike AUROC {roc_auc_score(is_anomalous, score):.3f}")
