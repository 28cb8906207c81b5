"""Sequential MNIST with Keras: the PhasedLSTM layer against Keras' LSTM, with `fit`.

The Keras seed's comparison on today's TensorFlow: each 28 x 28 image is a 784-step sequence of
one pixel (/255), read by 32 units in a `Sequential` model with a softmax head; the Phased LSTM
takes the step index as its timestamps. Both models are trained with `fit` and tested with
`evaluate` on the MNIST test set.

    python keras_mnist_phased_lstm.py                                   # 1 epoch, all 60,000
    python keras_mnist_phased_lstm.py --train_samples 5000 --test_samples 2000   # minutes
    python keras_mnist_phased_lstm.py --epochs 20 --optimizer rmsprop --save_dir runs/keras
    python keras_mnist_phased_lstm.py --keras 3                         # Keras 3 layers
    KERAS_BACKEND=jax python keras_mnist_phased_lstm.py --keras 3       # ... on JAX

--keras tf_keras (the default) trains the tf-keras layer (`phased_lstm.keras_layer`) against
tf.keras' LSTM; --keras 3 trains the Keras 3 layer (`phased_lstm.keras3`) against
keras.layers.LSTM on the backend that KERAS_BACKEND selects, and then loads neither TensorFlow's
TF 1.x parts nor tf-keras.

With --save_dir, each model is saved as <save_dir>/<model>.keras, loaded back with
`load_model` (no custom_objects) and tested again.
"""

import os
import time

from absl import app, flags, logging
import numpy as np

from experiments import mnist_data, training

NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
MODELS = ("PhasedLSTM", "LSTM")

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), f"Models to train and compare, from {MODELS}.")
flags.DEFINE_enum("keras", "tf_keras", ["tf_keras", "3"], "tf_keras: the tf-keras layer in "
                  "tf.keras models; 3: the Keras 3 layer (phased_lstm.keras3) in Keras 3 models, "
                  "on KERAS_BACKEND's backend.")
flags.DEFINE_integer("epochs", 1, "Training epochs (the Keras seed ran 20).", lower_bound=1)
flags.DEFINE_integer("train_samples", 60000, "Train on the first this many training images "
                     "(at most 60,000): a smaller value gives a quick run.", lower_bound=1)
flags.DEFINE_integer("test_samples", 10000, "Test on the first this many test images (at most "
                     "10,000).", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Training images per step.", lower_bound=1)
flags.DEFINE_integer("num_units", 32, "Units of the recurrent layer.", lower_bound=1)
flags.DEFINE_enum("optimizer", "adam", ["adam", "rmsprop"], "Optimiser (the Keras seed: "
                  "rmsprop; the paper: adam).")
flags.DEFINE_float("learning_rate", 1e-3, "The optimiser's learning rate.", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seeds the initial weights and the order of the batches.",
                     lower_bound=0)
flags.DEFINE_string("data_dir", mnist_data.default_data_dir(), "Folder of mnist.npz; MNIST is "
                    "downloaded there (and checked against its sha256) when missing.")
flags.DEFINE_string("save_dir", "", "If set, save each model to <save_dir>/<model>.keras, load "
                    "it back and test it again.")
# The Phased LSTM's own settings, as in mnist_phased_lstm.py.
flags.DEFINE_float("ratio_on", 0.05, "PhasedLSTM: initial open ratio r_on, in (0, 1].")
flags.DEFINE_float("period_init_min", 1.0, "PhasedLSTM: periods start log-uniform in "
                   "[period_init_min, period_init_max] (in steps; pixel n is at time n).")
flags.DEFINE_float("period_init_max", 1000.0, "PhasedLSTM: see period_init_min.")
flags.DEFINE_float("leak", 0.001, "PhasedLSTM: slope alpha of the closed time gate while "
                   "training.", lower_bound=0.0)
flags.DEFINE_float("inference_leak", 0.0, "PhasedLSTM: the slope in evaluate and predict (the "
                   "paper: 0).", lower_bound=0.0)

flags.register_validator("models", lambda names: names and set(names) <= set(MODELS),
                         f"--models must name some of {MODELS}.")
# First: absl runs validators in order, and the bounds below would let inf through.
training.require_finite_flags(["learning_rate", "ratio_on", "period_init_min", "period_init_max",
                               "leak", "inference_leak"])
flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0.")
flags.register_validator("ratio_on", lambda v: 0 < v <= 1, "--ratio_on must be in (0, 1].")
flags.register_validator("period_init_min", lambda v: v > 0, "--period_init_min must be > 0.")
flags.register_multi_flags_validator(
    ["period_init_min", "period_init_max"],
    lambda f: f["period_init_max"] >= f["period_init_min"],
    "--period_init_max must be >= --period_init_min.")


def to_sequences(images):
    """uint8 [n, 28, 28] -> float32 [n, 784, 1] in [0, 1], row by row."""
    return (images.reshape(-1, NUM_PIXELS, 1) / np.float32(255.0)).astype(np.float32)


def keras_and_layer():
    """(the Keras module, its PhasedLSTM class) that --keras selects."""
    if FLAGS.keras == "3":
        import keras  # pylint: disable=import-outside-toplevel
        from phased_lstm.keras3 import PhasedLSTM  # pylint: disable=import-outside-toplevel
        return keras, PhasedLSTM
    from phased_lstm import tf  # pylint: disable=import-outside-toplevel
    from phased_lstm.keras_layer import PhasedLSTM  # pylint: disable=import-outside-toplevel
    return tf.keras, PhasedLSTM


def keras_name():
    keras, _ = keras_and_layer()
    return f"Keras 3 on {keras.config.backend()}" if FLAGS.keras == "3" else "tf-keras"


def recurrent_layer(name):
    """The model's recurrent layer; the Phased LSTM's timestamps are the step indices."""
    keras, phased_lstm_layer = keras_and_layer()
    if name == "PhasedLSTM":
        return phased_lstm_layer(FLAGS.num_units, leak=FLAGS.leak,
                                 inference_leak=FLAGS.inference_leak, ratio_on=FLAGS.ratio_on,
                                 period_init_min=FLAGS.period_init_min,
                                 period_init_max=FLAGS.period_init_max)
    return keras.layers.LSTM(FLAGS.num_units)


def build_model(name):
    """The seed's model: recurrent layer, softmax head, compiled with the chosen optimiser."""
    keras, _ = keras_and_layer()
    model = keras.Sequential([keras.Input((NUM_PIXELS, 1)), recurrent_layer(name),
                              keras.layers.Dense(NUM_CLASSES, activation="softmax")],
                             name=name)
    optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}
    model.compile(optimizer=optimizers[FLAGS.optimizer](FLAGS.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train_and_test(name, train, test):
    """Fits, evaluates (and with --save_dir saves and reloads) one model.

    Returns:
      {"test_accuracy", "test_loss", "train_s" (and "reloaded_test_accuracy")}.
    """
    keras, _ = keras_and_layer()
    keras.utils.set_random_seed(FLAGS.seed)
    model = build_model(name)
    model.summary()
    start = time.time()
    model.fit(*train, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, verbose=2)
    result = {"train_s": time.time() - start}
    result["test_loss"], result["test_accuracy"] = model.evaluate(*test, batch_size=1000,
                                                                  verbose=0)
    if FLAGS.save_dir:
        os.makedirs(FLAGS.save_dir, exist_ok=True)
        path = os.path.join(FLAGS.save_dir, f"{name}.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
        result["reloaded_test_accuracy"] = reloaded.evaluate(*test, batch_size=1000,
                                                             verbose=0)[1]
        logging.info("Saved %s to %s and loaded it back.", name, path)
    return result


def main(argv):
    del argv  # unused
    x_train, y_train, x_test, y_test = mnist_data.load_mnist(FLAGS.data_dir)
    train = (to_sequences(x_train[:FLAGS.train_samples]), y_train[:FLAGS.train_samples])
    test = (to_sequences(x_test[:FLAGS.test_samples]), y_test[:FLAGS.test_samples])
    print(f"MNIST: {len(train[1])} training and {len(test[1])} test images as {NUM_PIXELS}-step "
          f"sequences; {FLAGS.epochs} epoch(s), batch {FLAGS.batch_size}, {FLAGS.optimizer} "
          f"{FLAGS.learning_rate:g}, {FLAGS.num_units} units, {keras_name()}.")
    results = {}
    for name in FLAGS.models:
        print(f"--- {name}")
        results[name] = train_and_test(name, train, test)
    print("--- Test accuracy")
    for name, result in results.items():
        line = (f"{name:>10}: {result['test_accuracy']:.4f} (loss {result['test_loss']:.4f}; "
                f"trained in {result['train_s']:.0f} s)")
        if "reloaded_test_accuracy" in result:
            line += f"; after save and load: {result['reloaded_test_accuracy']:.4f}"
        print(line)


if __name__ == "__main__":
    app.run(main)
