"""Sequential MNIST with Keras: the PhasedLSTM layer against Keras' LSTM, with `fit`.

The Keras seed's comparison on today's TensorFlow: each 28 x 28 image is a 784-step sequence of
one pixel (/255), read by 32 units in a `Sequential` model with a softmax head; the Phased LSTM
takes the step index as its timestamps. Both models are trained with `fit`, tested on the MNIST
test set after every epoch, and their curves drawn in <save_dir>/keras_curves.png.

    python keras_mnist_phased_lstm.py                                   # 1 epoch, all 60,000
    python keras_mnist_phased_lstm.py --train_samples 5000 --test_samples 2000   # minutes
    python keras_mnist_phased_lstm.py --epochs 20 --optimizer rmsprop --save_dir runs/keras
    python keras_mnist_phased_lstm.py --keras 3                         # Keras 3 layers
    KERAS_BACKEND=jax python keras_mnist_phased_lstm.py --keras 3       # ... on JAX

--keras tf_keras (the default) trains the tf-keras layer (`phased_lstm.keras_layer`) against
tf.keras' LSTM; --keras 3 trains the Keras 3 layer (`phased_lstm.keras3`) against
keras.layers.LSTM on the backend that KERAS_BACKEND selects, and loads neither tf-keras nor the
package's TF 1.x parts (`phased_lstm.legacy_tf`), except to download MNIST when <data_dir> lacks
it (experiments/mnist_data.py tries tf-keras's get_file first). TensorFlow itself comes only
where Keras 3 uses it: its TensorFlow backend, or its TensorBoard callback on the others.

Each model's run lives in <save_dir>/<model>/ (experiments/keras_run.py): BackupAndRestore's
backup of the last finished epoch (a killed run, run again with the same command, resumes
there), the CSV log and TensorBoard events of every epoch (`tensorboard --logdir <save_dir>`),
the best model (best.keras), the last one (model.keras) and results.json. A finished run run
again trains nothing. A NaN or infinite loss stops the run with exit status 3.

Replicas: with TF_CONFIG set (tf-keras; Keras 3's fit fails under this strategy), the processes
of the cluster train together under MultiWorkerMirroredStrategy, each started with the same
command; without it, several local GPUs train under MirroredStrategy, and on JAX several local
devices under keras.distribution.DataParallel. --batch_size is the global batch, split across
the replicas.
"""

import dataclasses
import os
import sys
import time

from absl import app, flags, logging
import numpy as np

# Not experiments.loop: it needs the TF 1.x API, which --keras 3 never loads.
from experiments import keras_run, mnist_data, script_main, training

NUM_PIXELS = mnist_data.NUM_PIXELS
NUM_CLASSES = 10
MODELS = ("PhasedLSTM", "LSTM")
EVAL_BATCH_SIZE = 1000
PLOT_NAME = "keras_curves.png"
# What a resumed run must share with the run it continues: what shapes the model, the data, its
# order and the optimisation. The epochs, the test set and the folders may change.
RESUME_MUST_MATCH = ("keras", "backend", "train_samples", "batch_size", "num_units", "optimizer",
                     "learning_rate", "seed", "ratio_on", "period_init_min", "period_init_max",
                     "leak", "inference_leak")

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
flags.DEFINE_string("save_dir", "", "The run folder: each model's backup, logs, TensorBoard "
                    "events, models and results go to <save_dir>/<model>/, the curves to "
                    f"<save_dir>/{PLOT_NAME}. Default: runs/keras_<keras>_<backend>.")
flags.DEFINE_bool("fresh", False, "Delete what an earlier run of these models wrote in save_dir "
                  "and train from scratch, instead of resuming or reporting a finished run.")
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
script_main.require_timing_flags(FLAGS, ["learning_rate", "ratio_on", "period_init_min",
                                          "period_init_max", "leak", "inference_leak"])


@dataclasses.dataclass(frozen=True)
class Config:
    """The command's settings, read from the flags once (Config.from_flags)."""
    models: tuple
    keras: str
    epochs: int
    train_samples: int
    test_samples: int
    batch_size: int
    num_units: int
    optimizer: str
    learning_rate: float
    seed: int
    data_dir: str
    save_dir: str
    fresh: bool
    ratio_on: float
    period_init_min: float
    period_init_max: float
    leak: float
    inference_leak: float

    @classmethod
    def from_flags(cls, flag_values):
        values = {f.name: flag_values[f.name].value for f in dataclasses.fields(cls)}
        return cls(**{**values, "models": tuple(values["models"])})

    def settings(self, backend):
        """The settings saved with a run (JSON-able), the backend included."""
        settings = dataclasses.asdict(self)
        settings["models"] = list(self.models)
        return {**settings, "backend": backend}


def keras_and_layer(flavour):
    """(the Keras module, its PhasedLSTM class) for --keras `flavour` ("tf_keras" or "3")."""
    if flavour == "3":
        import keras  # pylint: disable=import-outside-toplevel
        from phased_lstm.keras3 import PhasedLSTM  # pylint: disable=import-outside-toplevel
        return keras, PhasedLSTM
    from phased_lstm import tf  # pylint: disable=import-outside-toplevel
    from phased_lstm.keras_layer import PhasedLSTM  # pylint: disable=import-outside-toplevel
    return tf.keras, PhasedLSTM


def backend_of(flavour):
    """The backend that trains: tf-keras runs on TensorFlow; Keras 3 on KERAS_BACKEND's."""
    if flavour == "3":
        keras, _ = keras_and_layer(flavour)
        return keras.config.backend()
    return "tensorflow"


def keras_version(flavour):
    """The version of the Keras package that trains (tf.keras does not carry it)."""
    if flavour == "3":
        import keras  # pylint: disable=import-outside-toplevel
        return keras.__version__
    import tf_keras  # pylint: disable=import-outside-toplevel
    return tf_keras.__version__


def keras_name(flavour, backend):
    return f"Keras 3 on {backend}" if flavour == "3" else "tf-keras"


def build_model(config, name):
    """The seed's model: recurrent layer (the Phased LSTM's timestamps are the step indices),
    softmax head, compiled with the chosen optimiser. Build it in the Replicas' scope."""
    keras, phased_lstm_layer = keras_and_layer(config.keras)
    if name == "PhasedLSTM":
        recurrent = phased_lstm_layer(config.num_units, leak=config.leak,
                                      inference_leak=config.inference_leak,
                                      ratio_on=config.ratio_on,
                                      period_init_min=config.period_init_min,
                                      period_init_max=config.period_init_max)
    else:
        recurrent = keras.layers.LSTM(config.num_units)
    model = keras.Sequential([keras.Input((NUM_PIXELS, 1)), recurrent,
                              keras.layers.Dense(NUM_CLASSES, activation="softmax")], name=name)
    optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}
    model.compile(optimizer=optimizers[config.optimizer](config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit_data(config, backend, train, test):
    """The data arguments of `fit`: batches of the global batch size, shuffled each epoch.

    On TensorFlow a tf.data pipeline with a seeded shuffle, so that every worker of a cluster
    draws the same global batches and tf.distribute splits each one across the replicas (as
    data: the arrays are not files). Elsewhere NumPy arrays, which Keras shuffles and a JAX
    DataParallel splits.
    """
    if backend != "tensorflow":
        return {"x": train[0], "y": train[1], "batch_size": config.batch_size, "shuffle": True,
                "validation_data": test, "validation_batch_size": EVAL_BATCH_SIZE}
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    train_data = (tf.data.Dataset.from_tensor_slices(train)
                  .shuffle(len(train[1]), seed=config.seed, reshuffle_each_iteration=True)
                  .batch(config.batch_size).with_options(options))
    test_data = tf.data.Dataset.from_tensor_slices(test).batch(EVAL_BATCH_SIZE).with_options(
        options)
    return {"x": train_data, "validation_data": test_data}


def train_model(config, backend, replicas, run, name, train, test):
    """Trains (or resumes) one model in its run folder and writes its results.

    Returns:
      The results dict (results.json).

    Raises:
      keras_run.Diverged: a loss or metric stopped being finite.
    """
    keras, _ = keras_and_layer(config.keras)
    keras.utils.set_random_seed(config.seed)
    with replicas.scope():
        model = build_model(config, name)
    model.summary()
    callbacks = keras_run.make_callbacks(keras, run, keras_run.divergence_advice(
        run, config.learning_rate))
    start = time.time()
    model.fit(**fit_data(config, backend, train, test), epochs=config.epochs,
              callbacks=callbacks, verbose=2)
    train_s = time.time() - start
    model.save(run.path(keras_run.FINAL_MODEL))
    log = keras_run.read_csv_log(run.path(keras_run.CSV_LOG))
    results = {"model": name, **keras_run.summarize(log), "train_s_this_command": train_s,
               "median_epoch_seconds": (float(np.median(log["epoch_seconds"]))
                                        if "epoch_seconds" in log else None)}
    if replicas.is_chief and os.path.exists(run.path(keras_run.BEST_MODEL)):
        # load_model with no custom_objects: the file must load as a user would load it.
        best = keras.models.load_model(run.path(keras_run.BEST_MODEL))
        results["best_model_test_accuracy"] = float(best.evaluate(
            *test, batch_size=EVAL_BATCH_SIZE, verbose=0)[1])
    results.update(replicas=replicas.description, keras=keras_name(config.keras, backend),
                   keras_version=keras_version(config.keras), settings=config.settings(backend))
    keras_run.finish(run, results)
    return results


def report(results):
    """Prints the table of test accuracies."""
    print("--- Test accuracy (last epoch; best epoch)")
    for name, result in results.items():
        line = (f"{name:>10}: {result['final_test_accuracy']:.4f} (loss "
                f"{result['final_test_loss']:.4f}; train accuracy "
                f"{result['final_train_accuracy']:.4f}; {result['epochs']} epochs); best "
                f"{result['best_test_accuracy']:.4f} at epoch {result['best_test_accuracy_epoch']}")
        if "best_model_test_accuracy" in result:
            line += f", best.keras loaded back: {result['best_model_test_accuracy']:.4f}"
        print(line)


def run(config, environ):
    """Checks every model's folder, then trains each, then plots.

    Args:
      config: the Config.
      environ: the environment (TF_CONFIG, KERAS_BACKEND).

    Returns:
      The exit status: 0, or training.EXIT_DIVERGED.

    Raises:
      training.RunError, mnist_data.MnistDataError: a problem the message explains.
    """
    backend = backend_of(config.keras)
    # First: MultiWorkerMirroredStrategy must exist before other TensorFlow work.
    replicas = keras_run.replicas(backend, environ, keras_3=config.keras == "3")
    save_dir = training.check_writable_dir(
        config.save_dir or os.path.join("runs", f"keras_{config.keras}_{backend}"),
        "run folder", "--save_dir")
    settings = config.settings(backend)
    runs, todo = {}, []
    # Every folder before any data or training: an error comes before any work is lost.
    for name in config.models:
        runs[name] = keras_run.ModelRun.create(os.path.join(save_dir, name),
                                               replicas.worker_index,
                                               shared_backup=config.keras == "tf_keras")
        state = keras_run.prepare(runs[name], settings, RESUME_MUST_MATCH, config.epochs,
                                  fresh=config.fresh)
        if state == "finished":
            logging.info("%s is already trained for %d epoch(s): nothing to do (pass --fresh "
                         "to train it again).", runs[name].write_dir, config.epochs)
            print(f"{name}: already trained ({runs[name].path(keras_run.RESULTS)}); "
                  "nothing to do.")
        else:
            todo.append(name)
    x_train, y_train, x_test, y_test = mnist_data.load_mnist(config.data_dir)
    train = (mnist_data.to_sequences(x_train[:config.train_samples]),
             y_train[:config.train_samples])
    test = (mnist_data.to_sequences(x_test[:config.test_samples]), y_test[:config.test_samples])
    keras_run.check_batch_split(replicas.count, config.batch_size,
                                {"training": len(train[1])})
    keras_run.check_batch_split(replicas.count, EVAL_BATCH_SIZE, {"test": len(test[1])})
    print(f"MNIST: {len(train[1])} training and {len(test[1])} test images as {NUM_PIXELS}-step "
          f"sequences; {config.epochs} epoch(s), global batch {config.batch_size}, "
          f"{config.optimizer} {config.learning_rate:g}, {config.num_units} units, "
          f"{keras_name(config.keras, backend)}, {replicas.description}; run folder {save_dir}.")
    for name in todo:
        print(f"--- {name}")
        try:
            train_model(config, backend, replicas, runs[name], name, train, test)
        except keras_run.Diverged as error:
            print(f"error: {name}: training diverged: {error}", file=sys.stderr)
            return training.EXIT_DIVERGED
    results = {name: keras_run.read_json(runs[name].path(keras_run.RESULTS))
               for name in config.models}
    report(results)
    if replicas.is_chief:
        logs = {name: keras_run.read_csv_log(os.path.join(save_dir, name, keras_run.CSV_LOG))
                for name in sorted(os.listdir(save_dir))
                if os.path.exists(os.path.join(save_dir, name, keras_run.CSV_LOG))}
        path = os.path.join(save_dir, PLOT_NAME)
        drawn = keras_run.plot_curves(logs, path, f"Sequential MNIST ({NUM_PIXELS} steps), "
                                      f"{keras_name(config.keras, backend)}")
        if drawn:
            print(f"Curves of {', '.join(drawn)}: {path}")
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        return run(Config.from_flags(FLAGS), os.environ)
    except (training.RunError, mnist_data.MnistDataError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
