"""A recursive (tree) autoencoder reads each image as a sequence of rows and codes it as one 32-d root: a
linear probe of the roots against the mean of the same model's leaf codes, and the images unfolded from
their roots alone (along the balanced trees it trained on, and along its own greedy trees).

    python examples/recursive_rows.py [--out docs/gallery]
"""

import argparse
from pathlib import Path

import keras
import numpy as np

import kerasvae as kv
from kerasvae.apps import figures


def main(out):
    fashion = kv.data.fashion_mnist_available()
    dataset = "fashion_mnist" if fashion else "digits"
    x_train, y_train = kv.data.load_arrays(dataset, "train[:3008]" if fashion else "train[:1408]")
    x_test, y_test = kv.data.load_arrays(dataset, "test[:2000]")
    rows_train, rows_test = x_train[..., 0], x_test[..., 0]
    steps = rows_train.shape[1]
    balanced = lambda rows: {"x": rows, "merges": kv.RecursiveAutoencoder.balanced_merges(np.full(len(rows), steps), steps)}
    keras.utils.set_random_seed(0)
    model = kv.RecursiveAutoencoder(features=rows_train.shape[2], code_dim=32, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False, steps_per_execution=len(rows_train) // 64)
    model.fit(balanced(rows_train), epochs=10 if fashion else 5, batch_size=64, verbose=0)

    probe = lambda codes: kv.apps.linear_probe(codes(rows_train), y_train, codes(rows_test), y_test)
    root, mean = probe(lambda rows: model(balanced(rows)).numpy()), probe(lambda rows: model.mean_leaves(rows).numpy())
    print(f"{dataset} rows, linear probe: roots {root:.3f}, mean-pooled leaf codes {mean:.3f}")

    Path(out).mkdir(parents=True, exist_ok=True)
    shown = rows_test[:10]
    along_balanced = model.decode(model(balanced(shown)), balanced(shown)["merges"])
    greedy = model.tree(shown, unfold=False)
    along_greedy = model.decode(greedy["root"], greedy["merges"])
    figures.image_rows({"image": shown, "from its root, balanced tree": np.clip(along_balanced, 0, 1),
                        "greedy tree (not trained on)": np.clip(along_greedy, 0, 1)}, Path(out) / "recursive.png", n=10,
                       title=f"{dataset} rows coded as one 32-d root: probe {root:.2f} (mean of leaf codes {mean:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery")
    main(parser.parse_args().out)
