"""The PhasedLSTM Keras layer against its cell, the NumPy reference, and Keras' contracts."""

import contextlib
import os
import subprocess
import sys
import warnings

import numpy as np

import numpy_reference as ref
from phased_lstm import MIN_PERIOD, PhasedLSTMCell, fused_rnn, tf
from phased_lstm.keras_layer import PhasedLSTM
from tf_helpers import cell_variables, load_params

keras = tf.keras
BATCH, STEPS, INPUT_SIZE, UNITS = 4, 12, 3, 5


def _inputs(rng, start=0.0):
    times = ref.random_times(rng, BATCH, STEPS, start)
    return times, rng.normal(size=(BATCH, STEPS, INPUT_SIZE)).astype(np.float32)


def _reference(params, times, x, peep, leak=0.001, mask=None):
    """(h of every step, final c, final h); a masked step keeps the state (and so the output)."""
    c = h = np.zeros((x.shape[0], UNITS))
    outputs = []
    for s in range(x.shape[1]):
        new_c, new_h = ref.phased_lstm_step(params, times[:, s], x[:, s], c, h, peep, leak)
        live = True if mask is None else mask[:, s, None]
        c, h = np.where(live, new_c, c), np.where(live, new_h, h)
        outputs.append(h)
    return np.stack(outputs, axis=1), c, h


def _set_params(layer, params):
    for key, variable in cell_variables(layer.cell).items():
        variable.assign(params[key].astype(variable.dtype.as_numpy_dtype))


def _built_layer(rng, peep=False, **kwargs):
    """An eager layer with random reference parameters; returns (layer, params)."""
    layer = PhasedLSTM(UNITS, use_peepholes=peep, return_sequences=True, return_state=True,
                       **kwargs)
    layer.build(tf.TensorShape([None, STEPS, INPUT_SIZE]))
    params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, peep)
    _set_params(layer, params)
    return layer, params


def _eager_and_traced(layer, inputs, **kwargs):
    """The layer's results run eagerly (tf-keras's loop) and in a tf.function (fast path)."""
    traced = tf.function(lambda: layer(inputs, **kwargs))
    return [[t.numpy() for t in results] for results in (layer(inputs, **kwargs), traced())]


class PhasedLSTMLayerTest(tf.test.TestCase):

    def test_is_a_tf_keras_layer(self):
        self.assertTrue(keras.__name__.startswith("tf_keras"), keras.__name__)
        self.assertIsInstance(PhasedLSTM(2), keras.layers.Layer)
        self.assertIsInstance(PhasedLSTM(2).cell, PhasedLSTMCell)

    def test_matches_numpy_reference_with_explicit_times(self):
        rng = np.random.default_rng(0)
        for peep in (False, True):
            layer, params = _built_layer(rng, peep)
            times, x = _inputs(rng)
            want_outputs, want_c, want_h = _reference(params, times, x, peep)
            for time_input in (times.astype(np.float32), times[:, :, 0].astype(np.float32)):
                for outputs, h, c in _eager_and_traced(layer, [x, time_input]):
                    self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
                    self.assertAllClose(h, want_h, atol=2e-5, rtol=1e-5)
                    self.assertAllClose(c, want_c, atol=2e-5, rtol=1e-5)

    def test_times_per_unit_on_the_fast_path_and_the_keras_loop(self):
        # [batch, steps, units]: one timestamp per unit, as TF 1.x's cell took them.
        rng = np.random.default_rng(10)
        layer, params = _built_layer(rng)
        times, x = _inputs(rng)
        per_unit = times + rng.uniform(0, 10, (1, 1, UNITS))
        want_outputs, want_c, want_h = _reference(params, per_unit, x, False)
        for outputs, h, c in _eager_and_traced(layer, [x, per_unit]):
            self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
            self.assertAllClose(c, want_c, atol=2e-5, rtol=1e-5)
        mask = rng.uniform(size=(BATCH, STEPS)) < 0.7
        mask[:, 0] = True
        want_outputs, _, _ = _reference(params, per_unit, x, False, mask=mask)
        for outputs, _, _ in _eager_and_traced(layer, [x, per_unit], mask=tf.constant(mask)):
            self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)

    def test_implicit_time_is_the_step_index(self):
        rng = np.random.default_rng(1)
        layer, params = _built_layer(rng)
        _, x = _inputs(rng)
        step_index = np.tile(np.arange(STEPS, dtype=np.float64)[None, :, None], (BATCH, 1, 1))
        want_outputs, want_c, _ = _reference(params, step_index, x, False)
        for outputs, h, c in _eager_and_traced(layer, x):
            self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
            self.assertAllClose(c, want_c, atol=2e-5, rtol=1e-5)
        explicit = layer([x, step_index.astype(np.float32)])[0]
        self.assertAllClose(layer(x)[0], explicit, atol=1e-7)

    def test_mask_leaves_the_state_unchanged_at_masked_steps(self):
        rng = np.random.default_rng(2)
        layer, params = _built_layer(rng, peep=True)
        times, x = _inputs(rng)
        mask = rng.uniform(size=(BATCH, STEPS)) < 0.6  # masked steps anywhere, not only at the end
        mask[0] = True
        mask[1, :3] = False  # a sequence whose first steps are masked
        want_outputs, want_c, want_h = _reference(params, times, x, True, mask=mask)
        for outputs, h, c in _eager_and_traced(layer, [x, times.astype(np.float32)],
                                               mask=tf.constant(mask)):
            self.assertAllClose(outputs, want_outputs, atol=2e-5, rtol=1e-5)
            self.assertAllClose(h, want_h, atol=2e-5, rtol=1e-5)
            self.assertAllClose(c, want_c, atol=2e-5, rtol=1e-5)
        self.assertAllEqual(want_outputs[1, :3], np.zeros((3, UNITS)))

    def test_masking_layer_matches_sequence_length_of_dynamic_rnn(self):
        rng = np.random.default_rng(3)
        _, x = _inputs(rng)
        lengths = np.array([STEPS, 7, 1, 10])
        padded = np.where(np.arange(STEPS)[None, :, None] < lengths[:, None, None], x, 0.0)
        features = keras.Input((STEPS, INPUT_SIZE))
        layer = PhasedLSTM(UNITS, return_state=True)
        model = keras.Model(features, layer(keras.layers.Masking(0.0)(features)))
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, False)
        _set_params(layer, params)
        eager = [t.numpy() for t in model(padded)]
        traced = [t.numpy() for t in tf.function(model)(padded)]
        step_index = np.tile(np.arange(STEPS, dtype=np.float32)[None, :, None], (BATCH, 1, 1))
        with tf.Graph().as_default():
            cell = PhasedLSTMCell(UNITS)
            _, (c, h) = tf.compat.v1.nn.dynamic_rnn(
                cell, (tf.constant(step_index), tf.constant(padded, tf.float32)), lengths,
                dtype=tf.float32)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, cell, params)
                c, h = sess.run((c, h))
        for output, layer_h, layer_c in (eager, traced):
            self.assertAllClose(output, h, atol=1e-5)
            self.assertAllClose(layer_h, h, atol=1e-5)
            self.assertAllClose(layer_c, c, atol=1e-5)
        sequential = keras.Sequential([keras.layers.Masking(0.0, input_shape=(STEPS, INPUT_SIZE)),
                                       PhasedLSTM(UNITS)])
        _set_params(sequential.layers[1], params)
        self.assertAllClose(sequential.predict(padded, verbose=0), h, atol=1e-5)

    def test_fast_path_and_keras_loop_have_the_same_gradients(self):
        rng = np.random.default_rng(4)
        times, x = _inputs(rng)
        for peep in (False, True):
            layer, _ = _built_layer(rng, peep)
            weights = rng.normal(size=(BATCH, STEPS, UNITS)).astype(np.float32)

            @tf.function
            def gradients(mask):
                with tf.GradientTape() as tape:
                    outputs, h, c = layer([x, times.astype(np.float32)], mask=mask)
                    loss = (tf.reduce_sum(outputs * weights) + tf.reduce_sum(c * c)
                            + tf.reduce_sum(h))
                return tape.gradient(loss, layer.weights)

            fast = gradients(None)  # no mask: phased_lstm_rnn
            loop = gradients(tf.ones([BATCH, STEPS], tf.bool))  # a mask: tf-keras's loop
            for variable, want, got in zip(layer.weights, loop, fast):
                self.assertAllClose(got, want, atol=1e-4, rtol=1e-4, msg=variable.name)

    def test_gradients_follow_tf1_rule_and_exact_on_request(self):
        # Both of the layer's paths (fast path, tf-keras's loop under a mask), float64, against
        # the NumPy reference's finite differences under each rule.
        rng = np.random.default_rng(6)
        times, x = _inputs(rng)
        weights = rng.normal(size=(BATCH, STEPS, UNITS))
        for mod_gradient in ("tf1", "exact"):
            layer, params = _built_layer(rng, dtype="float64", mod_gradient=mod_gradient)
            self.assertEqual(layer.get_config()["mod_gradient"], mod_gradient)

            @tf.function
            def gradients(mask):
                with tf.GradientTape() as tape:
                    outputs, _, c = layer([x, times], mask=mask)
                    loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(c)
                return tape.gradient(loss, list(cell_variables(layer.cell).values()))

            zeros = np.zeros((BATCH, UNITS))
            numeric = ref.gradient_reference(
                ref.phased_lstm_step, params, times, x.astype(np.float64), (zeros, zeros),
                lambda out, state: np.sum(out * weights) + np.sum(state[0]), mod_gradient,
                use_peepholes=False, leak=0.001)
            for mask in (None, tf.ones([BATCH, STEPS], tf.bool)):
                got = dict(zip(cell_variables(layer.cell), gradients(mask)))
                for key in ref.PARAM_NAMES:
                    self.assertAllClose(got[key], numeric[key], rtol=1e-5, atol=1e-7,
                                        msg=f"{key}, {mod_gradient}, mask {mask is not None}")

    def test_return_sequences_and_return_state_shapes(self):
        x = keras.Input((STEPS, INPUT_SIZE))
        times = keras.Input((STEPS,))
        for sequences in (False, True):
            for state in (False, True):
                for inputs in (x, [x, times]):
                    layer = PhasedLSTM(UNITS, return_sequences=sequences, return_state=state)
                    results = layer(inputs)
                    output_shape = [None, STEPS, UNITS] if sequences else [None, UNITS]
                    want = [output_shape, [None, UNITS], [None, UNITS]] if state else output_shape
                    got = ([r.shape.as_list() for r in results] if state
                           else results.shape.as_list())
                    self.assertEqual(got, want)
                    computed = layer.compute_output_shape(
                        [x.shape, times.shape] if isinstance(inputs, list) else x.shape)
                    self.assertEqual(
                        [s.as_list() for s in computed] if state else computed.as_list(), want)
        layer = PhasedLSTM(UNITS, return_state=True)
        output, h, c = layer(np.ones((2, STEPS, INPUT_SIZE), np.float32))
        self.assertAllEqual(output, h)  # Keras LSTM's order: [output, h, c]
        self.assertNotAllClose(h, c)

    def test_output_mask_follows_return_sequences(self):
        x = keras.Input((STEPS, INPUT_SIZE))
        masked = keras.layers.Masking(0.0)(x)
        self.assertIsNotNone(PhasedLSTM(UNITS, return_sequences=True)(masked)._keras_mask)
        self.assertIsNone(getattr(PhasedLSTM(UNITS)(masked), "_keras_mask", None))
        layer = PhasedLSTM(UNITS, return_sequences=True, return_state=True)
        mask = tf.ones([2, STEPS], tf.bool)
        output_mask, h_mask, c_mask = layer.compute_mask(tf.ones([2, STEPS, INPUT_SIZE]), mask)
        self.assertIs(output_mask, mask)
        self.assertEqual((h_mask, c_mask), (None, None))

    def test_inference_leak_applies_outside_training(self):
        rng = np.random.default_rng(5)
        layer, params = _built_layer(rng, inference_leak=0.0)
        times, x = _inputs(rng)
        inputs = [x, times.astype(np.float32)]
        for training, leak in ((True, 0.001), (False, 0.0), (None, 0.0)):
            want = _reference(params, times, x, False, leak=leak)[0]
            for outputs, _, _ in _eager_and_traced(layer, inputs, training=training):
                self.assertAllClose(outputs, want, atol=2e-5, msg=f"training={training}")
        # Without inference_leak the leak applies everywhere, as in the TF 1.x cell.
        plain, _ = _built_layer(rng)
        _set_params(plain, params)
        self.assertAllClose(plain(inputs, training=False)[0],
                            _reference(params, times, x, False)[0], atol=2e-5)
        self.assertEqual(PhasedLSTM(3, alpha=0.01).leak, 0.01)

    def test_inference_runs_the_forward_only_op_with_the_training_results(self):
        # training False or None (Keras' inference), traced without a tape: the fused kernel's
        # forward-only op, bit for bit the training op's results; under a tape, the training op.
        rng = np.random.default_rng(7)
        times, x = _inputs(rng)
        inputs = [x, times.astype(np.float32)]
        fused = fused_rnn.fused_kernel_available()
        for peep in (False, True):
            layer, _ = _built_layer(rng, peep)

            def traced(training):
                concrete = tf.function(
                    lambda: layer(inputs, training=training)).get_concrete_function()
                return ([t.numpy() for t in concrete()],
                        {op.type for op in concrete.graph.get_operations()})

            want, training_ops = traced(True)
            self.assertNotIn("PhasedLSTMSequenceInference", training_ops)
            self.assertNotIn("PhasedTimeGate", training_ops)
            for training in (False, None):
                got, ops_seen = traced(training)
                self.assertEqual("PhasedLSTMSequenceInference" in ops_seen, fused)
                self.assertNotIn("PhasedLSTMSequence", ops_seen)
                # The gate from the fused gate kernel where it builds: the same values.
                self.assertEqual("PhasedTimeGate" in ops_seen,
                                 fused and fused_rnn.TIME_GATE.available())
                for name, a, b in zip(("output", "h", "c"), got, want):
                    self.assertAllEqual(a, b, msg=f"{name}, peepholes {peep}, {training}")

            @tf.function
            def gradients():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(layer(inputs)[0])  # training None, as many loops
                return tape.gradient(loss, layer.trainable_weights)

            self.assertNotIn(None, gradients())

        # Building a TF 1.x graph, a gradient may come later (minimize): the training op.
        with tf.Graph().as_default() as graph:
            layer, _ = _built_layer(rng)
            outputs = layer([tf.constant(x), tf.constant(times, tf.float32)])[0]
            self.assertNotIn("PhasedLSTMSequenceInference",
                             {op.type for op in graph.get_operations()})
            self.assertNotIn(None, tf.gradients(tf.reduce_sum(outputs),
                                                layer.trainable_weights))

    def test_float64_times_keep_the_phase_of_large_timestamps(self):
        rng = np.random.default_rng(6)
        times, x = _inputs(rng, start=1e7)
        features, time_input = keras.Input((STEPS, INPUT_SIZE)), keras.Input((STEPS, 1),
                                                                             dtype="float64")
        layer = PhasedLSTM(UNITS, return_sequences=True)
        model = keras.Model([features, time_input], layer([features, time_input]))
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, False)
        _set_params(layer, params)
        want = _reference(params, times, x, False)[0]
        # Keras' data adapter casts float64 NumPy arrays to float32: give fit and predict
        # float64 tensors (or a tf.data.Dataset).
        self.assertAllClose(model.predict([x, tf.constant(times, tf.float64)], verbose=0), want,
                            atol=2e-5, rtol=1e-5)
        self.assertAllClose(model([x, times]), want, atol=2e-5, rtol=1e-5)
        # The same timestamps in float32 lose the phase (spacing 1.0 at 1e7).
        float32_times = layer([x, times.astype(np.float32)])
        self.assertGreater(np.abs(float32_times - want).max(), 1e-2)

    def test_seed_settings_regularizers_and_constraints(self):
        uniform = keras.initializers.RandomUniform
        layer = PhasedLSTM(
            400, alpha=0.001, ratio_on=0.05, period_initializer=uniform(10.0, 100.0),
            phase_initializer=uniform(0.0, 1000.0), period_regularizer=keras.regularizers.L2(0.1),
            kernel_regularizer=keras.regularizers.L1(0.01), phase_constraint="non_neg",
            period_constraint="non_neg")
        layer.build(tf.TensorShape([None, STEPS, 1]))
        gate, cell = layer.cell.time_gate, layer.cell
        self.assertAllInRange(gate.period, 10.0, 100.0)
        self.assertAllInRange(gate.phase, 0.0, 1000.0)
        self.assertGreater(np.max(gate.phase), 900.0)
        self.assertAllClose(gate.ratio_on, np.full(400, 0.05))
        self.assertLen(layer.losses, 1 + 3)
        kernels = [cell.mask_gates_kernel, cell.new_input_kernel, cell.output_gate_kernel]
        self.assertAllClose(tf.add_n(layer.losses),
                            0.1 * tf.reduce_sum(gate.period ** 2)
                            + 0.01 * tf.add_n([tf.reduce_sum(tf.abs(k)) for k in kernels]),
                            rtol=1e-5)
        # An update that drives period and phase far below zero: the user's non_neg clips both
        # to 0, then the period is projected back onto its valid range.
        keras.optimizers.SGD(1.0).apply_gradients(
            [(tf.fill([400], 1e4), gate.period), (tf.fill([400], 1e4), gate.phase)])
        self.assertAllEqual(gate.phase, np.zeros(400))
        self.assertAllClose(gate.period, np.full(400, MIN_PERIOD))

    def test_default_phase_is_within_the_initial_period_when_built_eagerly(self):
        layer = PhasedLSTM(1000)
        layer.build(tf.TensorShape([None, STEPS, 1]))
        period, phase = layer.cell.time_gate.period.numpy(), layer.cell.time_gate.phase.numpy()
        self.assertAllInRange(np.log(period), -1e-6, np.log(1000.0) + 1e-6)
        self.assertTrue(np.all((phase >= 0) & (phase < period)))
        self.assertGreater(np.max(phase / period), 0.95)

    def test_config_round_trip(self):
        layer = PhasedLSTM(
            7, use_peepholes=True, leak=0.002, inference_leak=0.0, ratio_on=0.2,
            trainable_ratio_on=False, period_init_min=2.0, period_init_max=50.0,
            trainable_period=False, trainable_phase=False,
            phase_initializer=keras.initializers.RandomUniform(0.0, 3.0),
            ratio_on_initializer="ones", phase_regularizer="l2", ratio_on_regularizer="l1",
            bias_regularizer="l2", ratio_on_constraint="non_neg", return_sequences=True,
            return_state=True, activity_regularizer="l2", name="plstm", dtype="float64")
        config = layer.get_config()
        clone = PhasedLSTM.from_config(config)
        self.assertEqual(clone.get_config(), config)
        self.assertEqual(config["phase_initializer"]["config"]["maxval"], 3.0)
        self.assertEqual(
            keras.utils.get_registered_name(PhasedLSTM), "phased_lstm>PhasedLSTM")
        clone.build(tf.TensorShape([None, STEPS, 2]))
        self.assertEqual(clone.cell.dtype, "float64")
        self.assertLen(clone.trainable_weights, 6)  # timing frozen
        self.assertLen(clone.weights, 9)


@contextlib.contextmanager
def _quiet_saving():
    with warnings.catch_warnings():
        # h5 is "legacy" (it is tested on purpose), and tf-keras' .keras reader and writer walk
        # the cell's attributes, reading the deprecated `Layer.graph` of TF 1.x layers.
        warnings.filterwarnings("ignore", r"You are saving your model as an HDF5")
        warnings.filterwarnings("ignore", r"`Layer.graph` is deprecated")
        yield


def _save(model, path):
    with _quiet_saving():
        model.save(path)


def _load(path):
    with _quiet_saving():
        return keras.models.load_model(path)  # no custom_objects


class SaveAndLoadTest(tf.test.TestCase):

    def _seed_model(self):
        model = keras.Sequential([PhasedLSTM(8, input_shape=(STEPS, 1)),
                                  keras.layers.Dense(3, activation="softmax")])
        model.compile("rmsprop", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def test_seed_model_fits_evaluates_and_round_trips_in_both_formats(self):
        rng = np.random.default_rng(7)
        x = rng.uniform(size=(32, STEPS, 1)).astype(np.float32)
        labels = rng.integers(0, 3, 32)
        model = self._seed_model()
        model.fit(x, labels, epochs=1, batch_size=16, verbose=0)
        loss, accuracy = model.evaluate(x, labels, verbose=0)
        self.assertTrue(np.isfinite(loss) and 0 <= accuracy <= 1)
        want = model.predict(x, verbose=0)
        for name in ("model.keras", "model.h5"):
            path = os.path.join(self.get_temp_dir(), name)
            _save(model, path)
            loaded = _load(path)
            self.assertIsInstance(loaded.layers[0], PhasedLSTM)
            self.assertAllClose(loaded.predict(x, verbose=0), want, atol=1e-6, msg=name)
            self.assertEqual(loaded.layers[0].get_config(), model.layers[0].get_config())
            # Training goes on from the loaded state.
            loaded.fit(x, labels, epochs=1, batch_size=16, verbose=0)

    def test_functional_model_with_times_mask_and_settings_round_trips(self):
        rng = np.random.default_rng(8)
        times, x = _inputs(rng)
        mask = np.ones((BATCH, STEPS), np.float32)
        mask[1, 8:] = 0.0
        features, time_input = keras.Input((STEPS, INPUT_SIZE)), keras.Input((STEPS,))
        masked = keras.layers.Masking(0.0)(features)
        hidden = PhasedLSTM(6, use_peepholes=True, return_sequences=True, inference_leak=0.0,
                            period_regularizer="l2", phase_constraint="non_neg",
                            period_initializer=keras.initializers.RandomUniform(2.0, 20.0))(
            [masked, time_input])
        output, h, c = PhasedLSTM(4, return_state=True, ratio_on=0.3)([hidden, time_input])
        model = keras.Model([features, time_input], [output, c])
        inputs = [x * mask[:, :, None], times[:, :, 0].astype(np.float32)]
        want = model.predict(inputs, verbose=0)
        for name in ("functional.keras", "functional.h5"):
            path = os.path.join(self.get_temp_dir(), name)
            _save(model, path)
            loaded = _load(path)
            for got, expected in zip(loaded.predict(inputs, verbose=0), want):
                self.assertAllClose(got, expected, atol=1e-6, msg=name)
            self.assertEqual([layer.get_config() for layer in loaded.layers],
                             [layer.get_config() for layer in model.layers])

    def test_loads_in_a_fresh_process_without_custom_objects(self):
        rng = np.random.default_rng(9)
        x = rng.uniform(size=(4, STEPS, 1)).astype(np.float32)
        model = self._seed_model()
        directory = self.get_temp_dir()
        np.save(os.path.join(directory, "x.npy"), x)
        np.save(os.path.join(directory, "want.npy"), model.predict(x, verbose=0))
        for name in ("fresh.keras", "fresh.h5"):
            _save(model, os.path.join(directory, name))
        code = (
            "import sys, numpy as np\n"
            "import phased_lstm, phased_lstm.keras_layer\n"
            "from phased_lstm import tf\n"
            "d = sys.argv[1]\n"
            "x, want = np.load(d + '/x.npy'), np.load(d + '/want.npy')\n"
            "for name in ('fresh.keras', 'fresh.h5'):\n"
            "    got = tf.keras.models.load_model(d + '/' + name).predict(x, verbose=0)\n"
            "    print(name, np.abs(got - want).max())\n")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        result = subprocess.run([sys.executable, "-c", code, directory], capture_output=True,
                                text=True, timeout=300, env=env)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        for line in result.stdout.splitlines():
            self.assertLess(float(line.split()[1]), 1e-6, line)
        self.assertLen(result.stdout.splitlines(), 2)


class ModesTest(tf.test.TestCase):

    def test_graph_mode_session_matches_dynamic_rnn_over_the_cell(self):
        rng = np.random.default_rng(10)
        times, x = _inputs(rng)
        params = ref.random_phased_lstm_params(rng, INPUT_SIZE, UNITS, False)
        lengths = np.array([STEPS, 5, 9, 1])
        mask = np.arange(STEPS)[None, :] < lengths[:, None]
        with tf.Graph().as_default():
            x_t, time_t = tf.constant(x), tf.constant(times, tf.float32)
            layer = PhasedLSTM(UNITS, return_sequences=True, return_state=True)
            outputs, h, c = layer([x_t, time_t])
            masked_h = layer([x_t, time_t], mask=tf.constant(mask))[1]
            dynamic, (dynamic_c, dynamic_h) = tf.compat.v1.nn.dynamic_rnn(
                layer.cell, (time_t, x_t), dtype=tf.float32)
            _, (_, dynamic_masked_h) = tf.compat.v1.nn.dynamic_rnn(
                layer.cell, (time_t, x_t), lengths, dtype=tf.float32)
            names = [v.name for v in tf.compat.v1.global_variables()]
            loss = tf.reduce_sum(outputs ** 2)
            train = tf.compat.v1.train.AdamOptimizer(0.1).minimize(loss)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                load_params(sess, layer.cell, params)
                results = sess.run((outputs, h, c, masked_h, dynamic, dynamic_c, dynamic_h,
                                    dynamic_masked_h))
                before = sess.run(loss)
                for _ in range(5):
                    sess.run(train)
                after = sess.run(loss)
        self.assertLen(names, 9)  # one set of variables for the layer and dynamic_rnn
        self.assertIn("phased_lstm/phased_lstm_cell/mask_gates/kernel:0", names)
        outputs, h, c, masked_h, dynamic, dynamic_c, dynamic_h, dynamic_masked_h = results
        self.assertAllClose(outputs, dynamic, atol=1e-6)
        self.assertAllClose(h, dynamic_h, atol=1e-6)
        self.assertAllClose(c, dynamic_c, atol=1e-6)
        self.assertAllClose(masked_h, dynamic_masked_h, atol=1e-6)
        self.assertAllClose(outputs, _reference(params, times, x, False)[0], atol=2e-5)
        self.assertLess(after, before)

    def test_eager_fit_learns_on_tiny_random_data(self):
        rng = np.random.default_rng(11)
        x = rng.normal(size=(64, 10, 1)).astype(np.float32)
        labels = (x.sum(axis=(1, 2)) > 0).astype(np.int32)
        for run_eagerly in (False, True):
            keras.utils.set_random_seed(0)
            model = keras.Sequential([
                PhasedLSTM(16, period_init_max=20.0, ratio_on=0.5, input_shape=(10, 1)),
                keras.layers.Dense(2)])
            model.compile(keras.optimizers.Adam(1e-2), run_eagerly=run_eagerly,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            history = model.fit(x, labels, epochs=40 if not run_eagerly else 3, batch_size=64,
                                verbose=0)
            losses = history.history["loss"]
            self.assertTrue(np.all(np.isfinite(losses)))
            if run_eagerly:
                self.assertLess(losses[-1], losses[0])
            else:
                self.assertLess(losses[-1], 0.6 * losses[0])


class BadInputTest(tf.test.TestCase):

    def test_bad_inputs(self):
        x = tf.zeros([2, STEPS, INPUT_SIZE])
        cases = [
            (tf.zeros([2, STEPS]), ValueError, r"features must have shape \[batch, steps, input"),
            ([x, tf.zeros([2, STEPS - 1, 1])], ValueError, r"times must have shape"),
            ([x, tf.zeros([2, STEPS, 2])], ValueError,
             rf"times must have shape .* or \[batch, steps, {UNITS}\] \(one per unit\)"),
            ([x, tf.zeros([2, STEPS, 1], tf.bool)], TypeError, r"times must be numbers.*bool"),
            ([x, tf.zeros([2, STEPS]), x], ValueError, r"got a list of 3 inputs"),
        ]
        for inputs, error, message in cases:
            with self.assertRaisesRegex(error, message):
                PhasedLSTM(UNITS)(inputs)

    def test_integer_times_are_taken_as_float64(self):
        x = tf.ones([2, STEPS, INPUT_SIZE])
        layer = PhasedLSTM(UNITS)
        steps = tf.range(STEPS)[None, :]
        self.assertAllClose(layer([x, tf.tile(steps, [2, 1])]), layer(x), atol=1e-7)

    def test_timing_arguments_may_be_tensors_of_known_value(self):
        layer = PhasedLSTM(UNITS, period_init_min=tf.constant(2.0),
                           period_init_max=tf.constant(8, tf.int64), ratio_on=tf.constant(0.25))
        config = layer.get_config()
        self.assertEqual((config["period_init_min"], config["period_init_max"],
                          config["ratio_on"]), (2.0, 8.0, 0.25))
        layer.build(tf.TensorShape([None, STEPS, INPUT_SIZE]))
        self.assertAllInRange(layer.cell.time_gate.period, 2.0, 8.0 * (1 + 1e-6))
        with tf.Graph().as_default():  # a config cannot hold a value known only when run
            with self.assertRaisesRegex(ValueError, r"period_init_max must be a number or a "
                                        r"tensor of known value .*known only when run"):
                PhasedLSTM(UNITS, period_init_max=tf.compat.v1.placeholder(tf.float32, []))

    def test_bad_constructor_arguments(self):
        cases = [
            (dict(units=0), r"units must be an integer >= 1; got 0"),
            (dict(units=2.5), r"units must be an integer >= 1; got 2.5"),
            (dict(units=4, leak=0.1, alpha=0.1), r"give leak or alpha"),
            (dict(units=4, leak=-0.1), r"leak must be >= 0; got -0.1"),
            (dict(units=4, inference_leak="0"), r"inference_leak must be a number >= 0"),
            (dict(units=4, ratio_on=1.5), r"ratio_on must be in \(0, 1\]; got 1.5"),
            (dict(units=4, period_init_min=10.0, period_init_max=5.0),
             r"period_init_max must be >= period_init_min"),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                PhasedLSTM(**kwargs)


if __name__ == "__main__":
    tf.test.main()
