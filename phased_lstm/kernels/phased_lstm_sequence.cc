// The Phased LSTM recurrence over a whole sequence, forward and gradient, one CPU kernel each.
// The recurrence itself is in phased_lstm_core.h, shared with the XLA FFI handlers that JAX
// calls (phased_lstm_xla_ffi.cc); this file has the ops' shapes, tensors and threads.
//
// Built on first use by phased_lstm/op_library.py against the installed TensorFlow and loaded
// with tf.load_op_library; phased_lstm/fused_rnn.py registers the gradient and wraps the ops.
//
// The time gate k is an input: it depends only on the timestamps and the timing variables, so
// TensorFlow computes it for all steps before the recurrence (and differentiates it, whatever
// gradient rule the gate uses). Padding is folded into k (k = 0 carries the state unchanged).
// Per step t, with z = [x_t, h_{t-1}] kernel + bias and columns [i, f, o, j]:
//
//   i, f = sigmoid(z_i, z_f),           j = tanh(z_j),      c~ = f c_{t-1} + i j
//   o = sigmoid(z_o),                   h~ = o tanh(c~)
//   c_t = c_{t-1} + k_t (c~ - c_{t-1}), h_t = h_{t-1} + k_t (h~ - h_{t-1})
//
// With use_peepholes (TF 1.x PhasedLSTMCell's peepholes: full matrices, not diagonals), the
// input and forget gates also see c_{t-1} and the output gate sees c~, the LSTM's new cell
// before the time gate mixes it:
//
//   [z_i, z_f] += c_{t-1} w_c_if   (w_c_if [units, 2 units]),
//   z_o        += c~ w_c_o         (w_c_o [units, units]),
//
// so a step has two more products, the second after c~; the gradient has four more per step
// (dc~ += dz_o w_c_o^T, dc_{t-1} += [dz_i, dz_f] w_c_if^T and the two weight gradients
// c~^T dz_o and c_{t-1}^T [dz_i, dz_f]). Without peepholes the two inputs are [0, 0] dummies and
// no peephole work is done.
//
// With gate_gradient_clip > 0 (the gradient op's attribute), each step's dz, the gradient of
// z = [x_t, h_{t-1}] kernel + bias, is clipped element-wise before it reaches x_t, h_{t-1},
// kernel and bias: the per-step clipping of the authors' Lasagne layers (Theano's grad_clip on
// the gates' pre-activations, before the peepholes are added, whose own gradients stay whole).
//
// The rows of a batch are independent in the recurrence, so both kernels split the batch into
// one contiguous block of rows per intra-op thread and run the whole sequence on each block: no
// synchronisation between steps. The forward saves the activated gates [steps, batch, 4 units]
// and every c [steps, batch, units]; the gradient recomputes c~ and tanh(c~) from them. The
// weight gradients are accumulated per block and step ([x_t, h_{t-1}]^T dz_t, and the
// peepholes' likewise), so that no [steps, batch, 4 units] gradient buffer is needed.
//
// PhasedLSTMSequenceInference is the same forward (the same function, ForwardRows, with
// SaveForGradient false) for evaluation: it keeps one step's gates and two steps' c per block
// in scratch instead of writing them for every step, and has no gradient (fused_rnn.py
// registers one that raises). Its outputs are the training forward's bit for bit: the same
// operations on the same values, only stored elsewhere.

#include <cstdint>
#include <vector>

#include "phased_lstm_core.h"
#include "tf_kernel_common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

using ::phased_lstm::ArrayMap;
using ::phased_lstm::BackwardInputs;
using ::phased_lstm::Dims;
using ::phased_lstm::ForwardOutputs;
using ::phased_lstm::Gradients;
using ::phased_lstm::Weights;

// Static shapes: x [steps, batch, input_size], k [steps, batch or 1, units], c0 and h0
// [batch, units], kernel [input_size + units, 4 units], bias [4 units].
absl::Status InferSequenceDims(InferenceContext* c, DimensionHandle* steps,
                               DimensionHandle* batch, DimensionHandle* units,
                               DimensionHandle* four_units) {
  ShapeHandle x, k, c0, h0, kernel, bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &k));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &c0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &h0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &kernel));
  *steps = c->Dim(x, 0);
  *batch = c->Dim(x, 1);
  *units = c->Dim(c0, 1);
  TF_RETURN_IF_ERROR(c->Merge(*steps, c->Dim(k, 0), steps));
  TF_RETURN_IF_ERROR(c->Merge(*batch, c->Dim(c0, 0), batch));
  TF_RETURN_IF_ERROR(c->Merge(*batch, c->Dim(h0, 0), batch));
  TF_RETURN_IF_ERROR(c->Merge(*units, c->Dim(h0, 1), units));
  TF_RETURN_IF_ERROR(c->Merge(*units, c->Dim(k, 2), units));
  TF_RETURN_IF_ERROR(c->Multiply(*units, 4, four_units));
  TF_RETURN_IF_ERROR(c->Merge(*four_units, c->Dim(kernel, 1), four_units));
  return absl::OkStatus();
}

// The peephole matrices at inputs w_c_if and w_c_if + 1: [units, 2 units] and [units, units]
// with use_peepholes, else [0, 0].
absl::Status InferPeepholeShapes(InferenceContext* c, int w_c_if, DimensionHandle units) {
  bool use_peepholes;
  TF_RETURN_IF_ERROR(c->GetAttr("use_peepholes", &use_peepholes));
  ShapeHandle if_shape, o_shape, merged;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(w_c_if), 2, &if_shape));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(w_c_if + 1), 2, &o_shape));
  if (use_peepholes) {
    DimensionHandle two_units;
    TF_RETURN_IF_ERROR(c->Multiply(units, 2, &two_units));
    TF_RETURN_IF_ERROR(c->Merge(if_shape, c->Matrix(units, two_units), &merged));
    TF_RETURN_IF_ERROR(c->Merge(o_shape, c->Matrix(units, units), &merged));
  } else {
    TF_RETURN_IF_ERROR(c->Merge(if_shape, c->Matrix(0, 0), &merged));
    TF_RETURN_IF_ERROR(c->Merge(o_shape, c->Matrix(0, 0), &merged));
  }
  return absl::OkStatus();
}

// The forward ops' shapes: h, c_final and h_final, then (SaveForGradient) c and gates.
template <bool SaveForGradient>
absl::Status ForwardShapes(InferenceContext* c) {
  DimensionHandle steps, batch, units, four_units;
  TF_RETURN_IF_ERROR(InferSequenceDims(c, &steps, &batch, &units, &four_units));
  ShapeHandle bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 1, &bias));
  TF_RETURN_IF_ERROR(c->Merge(four_units, c->Dim(bias, 0), &four_units));
  TF_RETURN_IF_ERROR(InferPeepholeShapes(c, 6, units));
  ShapeHandle sequence = c->MakeShape({steps, batch, units});
  ShapeHandle state = c->MakeShape({batch, units});
  c->set_output(0, sequence);
  c->set_output(1, state);
  c->set_output(2, state);
  if (SaveForGradient) {
    c->set_output(3, sequence);
    c->set_output(4, c->MakeShape({steps, batch, four_units}));
  }
  return absl::OkStatus();
}

REGISTER_OP("PhasedLSTMSequence")
    .Input("x: T")
    .Input("k: T")
    .Input("c0: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Input("w_c_if: T")
    .Input("w_c_o: T")
    .Output("h: T")
    .Output("c_final: T")
    .Output("h_final: T")
    .Output("c: T")
    .Output("gates: T")
    .Attr("T: {float, double}")
    .Attr("use_peepholes: bool = false")
    .Attr("gate_gradient_clip: float = 0")
    .SetShapeFn(ForwardShapes<true>)
    .Doc(R"doc(
The Phased LSTM recurrence over a whole sequence, time-major, gate columns [i, f, o, j], with
TF 1.x PhasedLSTMCell's full-matrix peepholes when use_peepholes is true.

x: [steps, batch, input_size].
k: the time gate, [steps, batch, units] or [steps, 1, units] when the batch shares it.
c0: initial c, [batch, units].
h0: initial h, [batch, units].
kernel: [input_size + units, 4 * units], rows [x, h].
bias: [4 * units].
w_c_if: with use_peepholes, c_{t-1}'s weights into the input and forget gates,
  [units, 2 * units] (columns [i, f]); else [0, 0].
w_c_o: with use_peepholes, c~'s weights into the output gate (c~ = f c_{t-1} + i j, before the
  time gate), [units, units]; else [0, 0].
h: h of every step, [steps, batch, units].
c_final: c after the last step (c0 when steps is 0).
h_final: h after the last step (h0 when steps is 0).
c: c of every step, saved for the gradient.
gates: the activated gates of every step, [steps, batch, 4 * units], saved for the gradient.
use_peepholes: whether w_c_if and w_c_o are used.
gate_gradient_clip: not used by the forward; kept on the op for its gradient (see
  PhasedLSTMSequenceGrad).
)doc");

REGISTER_OP("PhasedLSTMSequenceInference")
    .Input("x: T")
    .Input("k: T")
    .Input("c0: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Input("w_c_if: T")
    .Input("w_c_o: T")
    .Output("h: T")
    .Output("c_final: T")
    .Output("h_final: T")
    .Attr("T: {float, double}")
    .Attr("use_peepholes: bool = false")
    .SetShapeFn(ForwardShapes<false>)
    .Doc(R"doc(
PhasedLSTMSequence for evaluation: the same inputs, attributes (but gate_gradient_clip) and
h, c_final and h_final, bit for bit, without saving every step's c and gates. It has no
gradient.
)doc");

REGISTER_OP("PhasedLSTMSequenceGrad")
    .Input("x: T")
    .Input("k: T")
    .Input("c0: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("w_c_if: T")
    .Input("w_c_o: T")
    .Input("h: T")
    .Input("c: T")
    .Input("gates: T")
    .Input("dh: T")
    .Input("dc_final: T")
    .Input("dh_final: T")
    .Output("dx: T")
    .Output("dk: T")
    .Output("dc0: T")
    .Output("dh0: T")
    .Output("dkernel: T")
    .Output("dbias: T")
    .Output("dw_c_if: T")
    .Output("dw_c_o: T")
    .Attr("T: {float, double}")
    .Attr("use_peepholes: bool = false")
    .Attr("gate_gradient_clip: float = 0")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle steps, batch, units, four_units;
      TF_RETURN_IF_ERROR(InferSequenceDims(c, &steps, &batch, &units, &four_units));
      TF_RETURN_IF_ERROR(InferPeepholeShapes(c, 5, units));
      for (int i = 0; i < 5; ++i) c->set_output(i, c->input(i));
      c->set_output(5, c->Vector(four_units));
      c->set_output(6, c->input(5));
      c->set_output(7, c->input(6));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gradient of PhasedLSTMSequence with respect to x, k (summed over the batch when k is shared),
c0, h0, kernel, bias, w_c_if and w_c_o ([0, 0] without peepholes), given the forward's inputs
and outputs and the gradients dh (every step's h), dc_final and dh_final.

gate_gradient_clip: if > 0, each step's gradient of the gates' pre-activations z = [x_t, h_{t-1}]
  kernel + bias (before the peepholes are added) is clipped element-wise to
  [-gate_gradient_clip, gate_gradient_clip] before it reaches x, h_{t-1}, kernel and bias, as
  Theano's grad_clip in the authors' Lasagne layers; the peepholes' own gradients are not
  clipped. 0: no clipping.
)doc");

// Checks the forward's inputs against each other; returns false (with ctx's status set) if not.
bool GetDims(OpKernelContext* ctx, Dims* d) {
  const Tensor& x = ctx->input(0);
  const Tensor& k = ctx->input(1);
  const Tensor& c0 = ctx->input(2);
  const Tensor& h0 = ctx->input(3);
  const Tensor& kernel = ctx->input(4);
  if (x.dims() != 3 || k.dims() != 3 || c0.dims() != 2 || h0.dims() != 2 ||
      kernel.dims() != 2) {
    ctx->SetStatus(errors::InvalidArgument(
        "PhasedLSTMSequence expects x [steps, batch, input_size], k [steps, batch or 1, units], "
        "c0 and h0 [batch, units], kernel [input_size + units, 4 units]; got x ",
        x.shape().DebugString(), ", k ", k.shape().DebugString(), ", c0 ",
        c0.shape().DebugString(), ", h0 ", h0.shape().DebugString(), ", kernel ",
        kernel.shape().DebugString()));
    return false;
  }
  d->steps = x.dim_size(0);
  d->batch = x.dim_size(1);
  d->input_size = x.dim_size(2);
  d->units = c0.dim_size(1);
  d->k_batch = k.dim_size(1);
  const bool ok = c0.dim_size(0) == d->batch && h0.dim_size(0) == d->batch &&
                  h0.dim_size(1) == d->units && k.dim_size(0) == d->steps &&
                  (d->k_batch == d->batch || d->k_batch == 1) && k.dim_size(2) == d->units &&
                  kernel.dim_size(0) == d->input_size + d->units &&
                  kernel.dim_size(1) == 4 * d->units;
  if (!ok) {
    ctx->SetStatus(errors::InvalidArgument(
        "PhasedLSTMSequence: inconsistent shapes: x ", x.shape().DebugString(),
        " [steps, batch, input_size], k ", k.shape().DebugString(),
        " [steps, batch or 1, units], c0 ", c0.shape().DebugString(), " and h0 ",
        h0.shape().DebugString(), " [batch, units], kernel ", kernel.shape().DebugString(),
        " [input_size + units, 4 units]"));
    return false;
  }
  return true;
}

bool CheckShape(OpKernelContext* ctx, int index, const char* name, const TensorShape& want) {
  return phased_lstm_tf::CheckShape(ctx, "PhasedLSTMSequence", index, name, want);
}

// Checks the peephole matrices at inputs w_c_if and w_c_if + 1 (see the op's doc).
bool CheckPeepholes(OpKernelContext* ctx, int w_c_if, bool use_peepholes, const Dims& d) {
  const int64_t n = use_peepholes ? d.units : 0;
  return CheckShape(ctx, w_c_if, "w_c_if", TensorShape({n, 2 * n})) &&
         CheckShape(ctx, w_c_if + 1, "w_c_o", TensorShape({n, n}));
}

using phased_lstm_tf::NumShards;
using phased_lstm_tf::Runner;

// PhasedLSTMSequence (SaveForGradient) and PhasedLSTMSequenceInference.
template <typename T, bool SaveForGradient>
class PhasedLSTMSequenceOp : public OpKernel {
 public:
  explicit PhasedLSTMSequenceOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_peepholes", &use_peepholes_));
  }

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    if (!GetDims(ctx, &d)) return;
    if (!CheckShape(ctx, 5, "bias", TensorShape({4 * d.units}))) return;
    if (!CheckPeepholes(ctx, 6, use_peepholes_, d)) return;
    const TensorShape sequence({d.steps, d.batch, d.units});
    const TensorShape state({d.batch, d.units});
    Tensor *h, *c_final, *h_final, *c = nullptr, *gates = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, sequence, &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, state, &c_final));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, state, &h_final));
    if (SaveForGradient) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(3, sequence, &c));
      OP_REQUIRES_OK(
          ctx, ctx->allocate_output(4, TensorShape({d.steps, d.batch, 4 * d.units}), &gates));
    }
    auto in = [ctx](int index) { return ctx->input(index).flat<T>().data(); };
    const T* x = in(0);
    const T* k = in(1);
    const T* c0 = in(2);
    const T* h0 = in(3);
    const Weights<T> weights{in(4), in(5), use_peepholes_ ? in(6) : nullptr,
                             use_peepholes_ ? in(7) : nullptr};
    const ForwardOutputs<T> out{h->flat<T>().data(), c_final->flat<T>().data(),
                                h_final->flat<T>().data(),
                                SaveForGradient ? c->flat<T>().data() : nullptr,
                                SaveForGradient ? gates->flat<T>().data() : nullptr};
    ::phased_lstm::Forward<T, SaveForGradient>(d, use_peepholes_, x, k, c0, h0, weights, out,
                                              NumShards(ctx, d.batch), Runner(ctx));
  }

 private:
  bool use_peepholes_;
};

template <typename T>
class PhasedLSTMSequenceGradOp : public OpKernel {
 public:
  explicit PhasedLSTMSequenceGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_peepholes", &use_peepholes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gate_gradient_clip", &gate_gradient_clip_));
    OP_REQUIRES(ctx, gate_gradient_clip_ >= 0 && std::isfinite(gate_gradient_clip_),
                errors::InvalidArgument("gate_gradient_clip must be finite and >= 0 (0: no "
                                        "clipping); got ", gate_gradient_clip_));
  }

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    if (!GetDims(ctx, &d)) return;
    const TensorShape sequence({d.steps, d.batch, d.units});
    const TensorShape state({d.batch, d.units});
    if (!CheckPeepholes(ctx, 5, use_peepholes_, d) || !CheckShape(ctx, 7, "h", sequence) ||
        !CheckShape(ctx, 8, "c", sequence) ||
        !CheckShape(ctx, 9, "gates", TensorShape({d.steps, d.batch, 4 * d.units})) ||
        !CheckShape(ctx, 10, "dh", sequence) || !CheckShape(ctx, 11, "dc_final", state) ||
        !CheckShape(ctx, 12, "dh_final", state)) {
      return;
    }
    Tensor *dx, *dk, *dc0, *dh0, *dkernel, *dbias, *dw_c_if, *dw_c_o;
    for (int index = 0; index < 5; ++index) {
      Tensor** out[] = {&dx, &dk, &dc0, &dh0, &dkernel};
      OP_REQUIRES_OK(ctx, ctx->allocate_output(index, ctx->input(index).shape(), out[index]));
    }
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({4 * d.units}), &dbias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, ctx->input(5).shape(), &dw_c_if));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(7, ctx->input(6).shape(), &dw_c_o));
    auto in = [ctx](int index) { return ctx->input(index).flat<T>().data(); };
    const Weights<T> weights{in(4), nullptr, use_peepholes_ ? in(5) : nullptr,
                             use_peepholes_ ? in(6) : nullptr};
    const BackwardInputs<T> inputs{in(0), in(1), in(2),  in(3),  in(7),
                                   in(8), in(9), in(10), in(11), in(12)};
    auto out = [](Tensor* tensor) { return tensor->flat<T>().data(); };
    const Gradients<T> gradients{out(dx),      out(dk),    out(dc0),     out(dh0),
                                 out(dkernel), out(dbias), out(dw_c_if), out(dw_c_o)};
    ::phased_lstm::Backward<T>(d, use_peepholes_, static_cast<T>(gate_gradient_clip_), weights,
                               inputs, gradients, NumShards(ctx, d.batch), Runner(ctx));
  }

 private:
  bool use_peepholes_;
  float gate_gradient_clip_;
};

#define REGISTER(T)                                                                   \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("PhasedLSTMSequence").Device(DEVICE_CPU).TypeConstraint<T>("T"),           \
      PhasedLSTMSequenceOp<T, true>);                                                 \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("PhasedLSTMSequenceInference").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
      PhasedLSTMSequenceOp<T, false>);                                                \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("PhasedLSTMSequenceGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),       \
      PhasedLSTMSequenceGradOp<T>);

REGISTER(float);
REGISTER(double);
#undef REGISTER

}  // namespace
}  // namespace tensorflow
