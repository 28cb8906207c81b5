"""Per-step clipping of the gates' gradient, as the Phased LSTM authors trained.

The authors' Lasagne layers (Phased LSTM and LSTM alike, `grad_clipping=10` in their frequency
task) clip, inside every step, the gradient that flows back into the gates' pre-activations
z = W_x x_t + W_h h_{t-1} + b, element-wise, before the peephole terms are added (Theano's
`grad_clip`). Nothing is clipped in the forward pass, and nothing globally: a step's large gate
gradient is cut where it enters that step's weights and h_{t-1}. (A large total made of many
small steps is not: docs/results_frequency.md measures how rarely the authors' value of 10 acts
on the frequency task.) `PhasedLSTMCell(gate_gradient_clip=...)` and every path of
`phased_lstm_rnn` apply it; the fused kernel holds the value as a float32 attribute.
"""

import tensorflow as tf

from phased_lstm.gate_math import check_gate_gradient_clip  # noqa: F401  (its home before)


def clip_gradient(x, clip):
    """Identity in the forward pass; the gradient passing back through it is clipped
    element-wise to [-clip, clip].

    Args:
      x: a tensor.
      clip: a float > 0, or None (then x itself is returned).
    """
    if clip is None:
        return x

    @tf.custom_gradient
    def identity(x):
        return tf.identity(x), lambda dy: tf.clip_by_value(dy, -clip, clip)

    return identity(x)
