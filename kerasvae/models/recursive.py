"""Recursive autoencoder (Socher et al. 2011, "Semi-Supervised Recursive Autoencoders for Predicting Sentiment
Distributions"): a fixed-size code of a variable-length sequence, built by merging neighbours bottom-up.

Each step t of a sequence x [length, features] becomes a leaf code c_t = norm(tanh(W_l x_t + b_l)). One shared
encoder merges two neighbouring codes into a parent and one decoder reconstructs the children from it:

    p = norm(tanh(W_e [c1; c2] + b_e)),    [c1'; c2'] = W_d p + b_d,
    E(c1, c2) = n1 / (n1 + n2) ||c1 - c1'||^2 + n2 / (n1 + n2) ||c2 - c2'||^2

(n1, n2: leaves under each child; `weight_by_leaves=False` weighs both 1/2; norm(v) = v / ||v|| when
`normalize`, which keeps the codes from shrinking to make E small). The tree is built greedily: of the current
nodes, the adjacent pair with the lowest E is replaced by its parent, until one node, the root, remains. The
loss of a sequence is

    loss = mean_merges E + leaf_weight * mean_t ||x_t - W_o c_t - b_o||^2 / features
                         + unfold_weight * mean_t ||x_t - x_t''||^2 / features

The second term is a leaf decoder, which makes the leaves carry their steps (the paper's leaves were given
word vectors). The third is the unfolding objective of Socher et al.'s "Dynamic Pooling and Unfolding Recursive
Autoencoders" (NIPS 2011): x'' is the whole sequence decoded from the root alone, down the same tree. E alone
trains each merge to be undone one level down, which deep trees compound: on digits as 8 rows of 8 (1,408
images, 20 epochs, greedy trees) a linear probe of the roots scored below one of the mean-pooled leaves without
it (0.62 vs 0.66 on the 360 test digits) and above with it (0.72 vs 0.68). Balanced trees (`balanced_merges`)
matter more: 0.93 vs 0.66 without it. By default the tree's losses do not train the leaf projection
(`tree_trains_leaves=False`): otherwise they can gather all leaves in a small cone, where merges are easy and
the leaf decoder still undoes them.

Batched: the greedy search runs over a padded batch [batch, max_length, features] with `lengths` [batch], as
one `tf.while_loop` of max_length - 1 steps whose every step merges one pair per sequence (a sequence with one
node left idles). Each step recomputes only the two pairs next to the new parent. A tree is a merge order
`merges` int32 [batch, max_length - 1]: at step t the nodes at positions merges[:, t] and merges[:, t] + 1 of the
current list (leaves first, parents in the place of their left child) merge; -1 after a sequence's last merge.
`encode` returns the root; `tree` the root, merges and losses; `decode` unfolds a root along a merge order back
to a sequence. Given merge orders (e.g. a parse) replace the greedy search.

>>> import numpy as np
>>> model = RecursiveAutoencoder(features=28, code_dim=32)
>>> x = np.random.rand(4, 28, 28).astype("float32")              # Fashion-MNIST images as 28 rows
>>> model.compile(optimizer="adam")
>>> _ = model.fit({"x": x, "lengths": np.array([28, 20, 28, 5])}, epochs=1, verbose=0)
>>> model.encode(x, lengths=[28, 20, 28, 5]).shape
TensorShape([4, 32])
"""

import keras
import numpy as np
import tensorflow as tf

from kerasvae.models.input_checks import refuse_sample_weight


@keras.saving.register_keras_serializable(package="kerasvae")
class RecursiveAutoencoder(keras.Model):
    """Recursive autoencoder over padded sequences; train with `fit({"x": x, "lengths": lengths})` or `fit(x)`
    (every sequence full length). See the module docstring for the equations.

    Args:
        features: int. Features per step (the last axis of x).
        code_dim: int. Size of every node's code, the root's included. Defaults to 32.
        normalize: bool. Scale every code (leaves and parents) to unit length. Defaults to True.
        weight_by_leaves: bool. Weigh each child's reconstruction error by its share of the leaves. Defaults to
            True.
        leaf_weight: float. Weight of the leaf decoder's mean squared error in the loss. Defaults to 1.0.
        unfold_weight: float. Weight of the unfolded reconstruction's mean squared error; 0 trains with the
            paper's local errors E alone. Defaults to 1.0.
        tree_trains_leaves: bool. Let the tree's loss reach the leaf projection. Defaults to False.
        seed: int. Seeds the weight initializers. Defaults to 0.
    """

    def __init__(self, features, code_dim=32, normalize=True, weight_by_leaves=True, leaf_weight=1.0,
                 unfold_weight=1.0, tree_trains_leaves=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        self.features = int(features)
        self.code_dim = int(code_dim)
        self.normalize = bool(normalize)
        self.weight_by_leaves = bool(weight_by_leaves)
        self.leaf_weight = float(leaf_weight)
        self.unfold_weight = float(unfold_weight)
        self.tree_trains_leaves = bool(tree_trains_leaves)
        self.seed = int(seed)
        # === Layers ===
        init = lambda offset: keras.initializers.GlorotUniform(seed=self.seed + offset)
        # Random biases: with zero ones a blank step (x_t = 0) gets the code tanh(0) = 0 and so does the parent of
        # two such codes, where norm() is not differentiable (its gradient grows by 1/epsilon a level).
        bias = lambda offset: keras.initializers.RandomNormal(stddev=0.5, seed=self.seed + offset)
        self.leaf_encoder = keras.layers.Dense(self.code_dim, activation="tanh", kernel_initializer=init(0),
                                               bias_initializer=bias(4), name="leaf_encoder")
        self.merger = keras.layers.Dense(self.code_dim, activation="tanh", kernel_initializer=init(1),
                                         bias_initializer=bias(5), name="merger")
        self.splitter = keras.layers.Dense(2 * self.code_dim, kernel_initializer=init(2), name="splitter")
        self.leaf_decoder = keras.layers.Dense(self.features, kernel_initializer=init(3), name="leaf_decoder")
        self.leaf_encoder.build((None, self.features))
        self.merger.build((None, 2 * self.code_dim))
        self.splitter.build((None, self.code_dim))
        self.leaf_decoder.build((None, self.code_dim))
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "tree", "leaf") + (("unfold",) if self.unfold_weight else ())}
        self.built = True

    # === Inputs ===
    def _inputs(self, x, lengths=None):
        """(x [batch, max_length, features] float32, lengths int32 [batch] in [1, max_length]) from an array,
        a dict {"x", "lengths"} or a tf.RaggedTensor (lengths None: every sequence is full length)."""
        if isinstance(x, dict):
            x, lengths = x["x"], x.get("lengths", lengths)
        if isinstance(x, tf.RaggedTensor):
            x, lengths = x.to_tensor(), x.row_lengths()
        x = tf.convert_to_tensor(x, tf.float32)
        steps = tf.shape(x)[1]
        lengths = tf.fill(tf.shape(x)[:1], steps) if lengths is None else tf.reshape(tf.cast(lengths, tf.int32), [-1])
        return x, tf.clip_by_value(lengths, 1, tf.maximum(steps, 1))

    def _norm(self, codes):
        return tf.math.l2_normalize(codes, axis=-1, epsilon=1e-6) if self.normalize else codes

    # === Nodes ===
    def leaves(self, x):
        """Leaf codes c_t [batch, max_length, code_dim] of x [batch, max_length, features]."""
        return self._norm(self.leaf_encoder(tf.convert_to_tensor(x, tf.float32)))

    def merge(self, left, right, left_size=None, right_size=None):
        """(parent, E): the parent of two codes [..., code_dim] and the children's reconstruction error [...]
        (sizes: the leaves under each child, for `weight_by_leaves`)."""
        parent = self._norm(self.merger(tf.concat([left, right], -1)))
        left_rec, right_rec = self.decode_children(parent, normalize=False)
        left_error = tf.reduce_sum(tf.square(left - left_rec), -1)
        right_error = tf.reduce_sum(tf.square(right - right_rec), -1)
        share = 0.5 if not self.weight_by_leaves or left_size is None else left_size / (left_size + right_size)
        return parent, share * left_error + (1.0 - share) * right_error

    def decode_children(self, parent, normalize=None):
        """(left, right) [..., code_dim]: the decoder [c1'; c2'] = W_d p + b_d, scaled to unit length when
        `normalize` (default: the model's `normalize`, as the codes it unfolds into were)."""
        children = self.splitter(tf.convert_to_tensor(parent, tf.float32))
        left, right = tf.split(children, 2, axis=-1)
        if self.normalize if normalize is None else normalize:
            left, right = self._norm(left), self._norm(right)
        return left, right

    def decode_leaf(self, code):
        """x_t' [..., features] of leaf codes [..., code_dim]."""
        return self.leaf_decoder(tf.convert_to_tensor(code, tf.float32))

    # === Trees ===
    def tree(self, x, lengths=None, merges=None, unfold=True):
        """Build each sequence's tree, greedily or along given merge orders.

        Args:
            x: array [batch, max_length, features], a dict {"x", "lengths"} or a tf.RaggedTensor.
            lengths: int array [batch] or None (full length).
            merges: int array [batch, max_length - 1] or None. Merge orders to follow (see the module
                docstring); None builds the greedy trees. An entry outside a step's pairs 0..count - 2 is
                clipped into them, so the returned merges are the ones followed.
            unfold: bool. Also unfold the roots for the "reconstruction" and "unfold" terms (with
                unfold_weight); False when only the root is wanted.

        Returns:
            {"root": [batch, code_dim], "merges": int32 [batch, max_length - 1] (-1 after the last merge),
             "leaves": [batch, max_length, code_dim] (0 beyond each length), "tree": [batch] the mean merge
             error E, "leaf": [batch] the leaf decoder's mean squared error per step, and with unfold_weight
             "reconstruction": the sequences decoded from their roots along these trees (`decode`) and
             "unfold": [batch] their mean squared error per step}
        """
        if isinstance(x, dict):
            merges = x.get("merges", merges)
        x, lengths = self._inputs(x, lengths)
        steps = tf.shape(x)[1]
        valid = tf.sequence_mask(lengths, steps)
        leaves = self.leaves(x) * tf.cast(valid, tf.float32)[..., None]
        leaf_error = tf.reduce_sum(tf.reduce_mean(tf.square(self.decode_leaf(leaves) - x), -1) * tf.cast(valid, tf.float32), -1)
        leaf_error = leaf_error / tf.cast(lengths, tf.float32)
        nodes = leaves if self.tree_trains_leaves else tf.stop_gradient(leaves)
        given = None if merges is None else tf.cast(merges, tf.int32)
        root, order, total = self._build(nodes, lengths, given)
        tree_error = total / tf.cast(tf.maximum(lengths - 1, 1), tf.float32)
        result = {"root": root, "merges": order, "leaves": leaves, "tree": tree_error, "leaf": leaf_error}
        if self.unfold_weight and unfold:
            result["reconstruction"] = self.decode(root, order, lengths)
            per_step = tf.reduce_mean(tf.square(result["reconstruction"] - x), -1) * tf.cast(valid, tf.float32)
            result["unfold"] = tf.reduce_sum(per_step, -1) / tf.cast(lengths, tf.float32)
        return result

    def _build(self, nodes, lengths, given):
        """(root, merges, summed E) of the trees over `nodes` [batch, T, code_dim]. State of each step: the
        current nodes (merged ones shifted left), their leaf counts, and every adjacent pair's parent and E."""
        batch, steps = tf.shape(nodes)[0], tf.shape(nodes)[1]
        positions = tf.range(steps)[None, :]  # [1, T]
        sizes = tf.ones([batch, steps], tf.float32)
        parents, errors = self.merge(nodes[:, :-1], nodes[:, 1:], sizes[:, :-1], sizes[:, 1:])
        merges = tf.fill([batch, tf.maximum(steps - 1, 0)], -1)

        def step(t, nodes, sizes, parents, errors, count, total, merges):
            active = count > 1  # [batch]
            if given is None:
                pairs = tf.where(positions[:, :-1] < (count - 1)[:, None], errors, float("inf"))
                k = tf.cast(tf.argmin(pairs, axis=-1, output_type=tf.int32), tf.int32)
            else:
                k = tf.clip_by_value(given[:, t], 0, tf.maximum(count - 2, 0))
            k = tf.where(active, k, 0)
            chosen = tf.gather(errors, k[:, None], batch_dims=1)[:, 0]
            total += tf.where(active, chosen, 0.0)
            # The pair (k, k + 1) becomes its parent at k; the nodes right of it move one place left.
            kk = k[:, None]
            shift = tf.minimum(positions + tf.cast(positions > kk, tf.int32), steps - 1)
            at_k = positions == kk
            new_nodes = tf.where(at_k[..., None], tf.gather(parents, kk, batch_dims=1), tf.gather(nodes, shift, batch_dims=1))
            merged_size = tf.gather(sizes, kk, batch_dims=1) + tf.gather(sizes, kk + 1, batch_dims=1)
            new_sizes = tf.where(at_k, merged_size, tf.gather(sizes, shift, batch_dims=1))
            # Pairs left of k - 1 keep their parents, those right of k move left; the two touching the new
            # parent, (k - 1, k) and (k, k + 1), are recomputed.
            pair_positions = positions[:, :-1]
            pair_shift = tf.minimum(pair_positions + tf.cast(pair_positions > kk, tf.int32), tf.maximum(steps - 2, 0))
            around = tf.clip_by_value(tf.concat([kk - 1, kk, kk + 1], 1), 0, steps - 1)  # [batch, 3]
            around_nodes, around_sizes = tf.gather(new_nodes, around, batch_dims=1), tf.gather(new_sizes, around, batch_dims=1)
            fresh_parents, fresh_errors = self.merge(around_nodes[:, :2], around_nodes[:, 1:], around_sizes[:, :2], around_sizes[:, 1:])
            left_of, right_of = pair_positions == kk - 1, pair_positions == kk
            new_parents = tf.where(left_of[..., None], fresh_parents[:, :1],
                                   tf.where(right_of[..., None], fresh_parents[:, 1:], tf.gather(parents, pair_shift, batch_dims=1)))
            new_errors = tf.where(left_of, fresh_errors[:, :1], tf.where(right_of, fresh_errors[:, 1:], tf.gather(errors, pair_shift, batch_dims=1)))
            keep = active[:, None]
            merges = tf.where((positions[:, :-1] == t) & keep, k[:, None], merges)
            return (t + 1, tf.where(keep[..., None], new_nodes, nodes), tf.where(keep, new_sizes, sizes),
                    tf.where(keep[..., None], new_parents, parents), tf.where(keep, new_errors, errors),
                    count - tf.cast(active, tf.int32), total, merges)

        state = (tf.constant(0), nodes, sizes, parents, errors, lengths, tf.zeros([batch]), merges)
        state = tf.while_loop(lambda t, *_: t < steps - 1, step, state, maximum_iterations=tf.maximum(steps - 1, 0))
        return state[1][:, 0], state[7], state[6]

    @staticmethod
    def balanced_merges(lengths, max_length):
        """Merge orders int32 [batch, max_length - 1] of balanced trees: neighbours merged pairwise left to right,
        level by level (an odd node out passes up), -1 after each sequence's last merge. numpy."""
        lengths = np.asarray(lengths, np.int64).reshape(-1)
        merges = np.full((len(lengths), max(int(max_length) - 1, 0)), -1, np.int32)
        for row, length in zip(merges, lengths):
            order, count = [], int(length)
            while count > 1:
                order += range(count // 2)  # merging at i joins old nodes 2i and 2i + 1: the left ones moved up
                count -= count // 2
            row[: len(order)] = order
        return merges

    # === Codes and reconstructions ===
    def call(self, inputs, training=False):
        """The root codes [batch, code_dim] of `inputs` (an array, a dict {"x", "lengths"}, a RaggedTensor)."""
        return self.tree(inputs, unfold=False)["root"]

    def encode(self, x, lengths=None, merges=None):
        """Root codes [batch, code_dim]: the fixed-size code of each variable-length sequence."""
        return self.tree(x, lengths, merges, unfold=False)["root"]

    def mean_leaves(self, x, lengths=None):
        """Mean of each sequence's leaf codes [batch, code_dim]: the order-blind pooling a root should beat."""
        x, lengths = self._inputs(x, lengths)
        valid = tf.cast(tf.sequence_mask(lengths, tf.shape(x)[1]), tf.float32)[..., None]
        return tf.reduce_sum(self.leaves(x) * valid, 1) / tf.cast(lengths, tf.float32)[:, None]

    def decode(self, root, merges, lengths=None):
        """x' [batch, max_length, features] (0 beyond each length): each root unfolded along its merge order,
        undoing the merges last to first with `decode_children`, then each leaf through the leaf decoder.
        max_length = merges.shape[1] + 1; lengths None: read from the merges (a sequence of length n has n - 1
        entries before its -1s)."""
        root = tf.convert_to_tensor(root, tf.float32)
        merges = tf.cast(merges, tf.int32)
        batch, steps = tf.shape(root)[0], tf.shape(merges)[1] + 1
        if lengths is None:
            lengths = 1 + tf.reduce_sum(tf.cast(merges >= 0, tf.int32), axis=1)
        lengths = tf.clip_by_value(tf.reshape(tf.cast(lengths, tf.int32), [-1]), 1, steps)
        positions = tf.range(steps)[None, :]
        nodes = tf.concat([root[:, None], tf.zeros([batch, steps - 1, self.code_dim])], 1)

        def step(t, nodes):
            active = (t < lengths - 1)[:, None]  # this sequence merged at step t
            k = tf.where(active[:, 0], tf.clip_by_value(merges[:, t], 0, tf.maximum(lengths - 2, 0)), 0)[:, None]
            left, right = self.decode_children(tf.gather(nodes, k, batch_dims=1))
            shift = tf.maximum(positions - tf.cast(positions > k, tf.int32), 0)
            split = tf.where((positions == k)[..., None], left,
                             tf.where((positions == k + 1)[..., None], right, tf.gather(nodes, shift, batch_dims=1)))
            return t - 1, tf.where(active[..., None], split, nodes)

        _, leaves = tf.while_loop(lambda t, _: t >= 0, step, (steps - 2, nodes), maximum_iterations=tf.maximum(steps - 1, 0))
        valid = tf.cast(tf.sequence_mask(lengths, steps), tf.float32)[..., None]
        return self.decode_leaf(leaves) * valid

    def reconstruct(self, x, lengths=None):
        """decode(encode(x)) along the greedy trees: [batch, max_length, features]."""
        x, lengths = self._inputs(x, lengths)
        tree = self.tree(x, lengths)
        return tree["reconstruction"] if "reconstruction" in tree else self.decode(tree["root"], tree["merges"], lengths)

    def score(self, x, lengths=None):
        """Anomaly score [batch]: each sequence's loss (the batch mean of which `fit` minimizes)."""
        return self.sequence_loss(self.tree(x, lengths))

    def sequence_loss(self, tree):
        """Each sequence's loss [batch] from `tree`'s terms: tree + leaf_weight * leaf + unfold_weight * unfold."""
        loss = tree["tree"] + self.leaf_weight * tree["leaf"]
        return loss + self.unfold_weight * tree["unfold"] if self.unfold_weight else loss

    # === Training ===
    def loss_terms(self, x, lengths=None):
        """{"loss", "tree", "leaf"(, "unfold")}: batch means of the per-sequence terms of `tree`."""
        tree = self.tree(x, lengths)
        terms = {"tree": tf.reduce_mean(tree["tree"]), "leaf": tf.reduce_mean(tree["leaf"])}
        loss = terms["tree"] + self.leaf_weight * terms["leaf"]
        if self.unfold_weight:
            terms["unfold"] = tf.reduce_mean(tree["unfold"])
            loss += self.unfold_weight * terms["unfold"]
        return {"loss": loss, **terms}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def train_step(self, data):
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        refuse_sample_weight(sample_weight)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x)
            loss = self.optimizer.scale_loss(terms["loss"])
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return self._track(terms)

    def test_step(self, data):
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        refuse_sample_weight(sample_weight)
        return self._track(self.loss_terms(x))

    def _track(self, terms):
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, code_dim=self.code_dim, normalize=self.normalize,
                      weight_by_leaves=self.weight_by_leaves, leaf_weight=self.leaf_weight,
                      unfold_weight=self.unfold_weight, tree_trains_leaves=self.tree_trains_leaves, seed=self.seed)
        return config
