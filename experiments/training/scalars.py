"""TensorBoard scalars, written from Python values (no graph ops) beside the TSV log.

No TensorFlow at import: the Keras 3 script uses the package without the TF 1.x parts;
ScalarWriter imports them when a TF 1.x script writes events.
"""


class ScalarWriter:
    """Writes scalars for TensorBoard as Summary protos built from Python values (no graph ops).

    Create it inside a graph context (tf.compat.v1.summary.FileWriter refuses eager mode).

    Args:
      logdir: the run's folder.
      first_step: the first step this segment writes. A SessionLog START at that step makes
        TensorBoard drop the events of an interrupted segment from that step on, as the TSV log
        drops its rows.
    """

    def __init__(self, logdir, first_step):
        from phased_lstm import tf  # pylint: disable=import-outside-toplevel
        self._tf = tf
        self._writer = tf.compat.v1.summary.FileWriter(logdir)
        self._writer.add_session_log(
            tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START), first_step)

    def scalars(self, step, values):
        """Writes {tag: value} at step; None values are skipped."""
        tf = self._tf
        summary = tf.compat.v1.Summary(value=[
            tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items() if value is not None])
        self._writer.add_summary(summary, step)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
