// The Phased LSTM recurrence over a whole sequence, forward and gradient, one CPU kernel each.
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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

template <typename T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<Matrix<T>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;
template <typename T>
using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
template <typename T>
using ArrayMap = Eigen::Map<Array<T>>;
template <typename T>
using ConstArrayMap = Eigen::Map<const Array<T>>;

// Fewer rows than this per thread would make each step's products too small to pay off.
constexpr int64_t kMinRowsPerShard = 8;

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

struct Dims {
  int64_t steps, batch, k_batch, input_size, units;
};

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
  if (ctx->input(index).shape() == want) return true;
  ctx->SetStatus(errors::InvalidArgument("PhasedLSTMSequence: ", name, " must have shape ",
                                         want.DebugString(), "; got ",
                                         ctx->input(index).shape().DebugString()));
  return false;
}

// Checks the peephole matrices at inputs w_c_if and w_c_if + 1 (see the op's doc).
bool CheckPeepholes(OpKernelContext* ctx, int w_c_if, bool use_peepholes, const Dims& d) {
  const int64_t n = use_peepholes ? d.units : 0;
  return CheckShape(ctx, w_c_if, "w_c_if", TensorShape({n, 2 * n})) &&
         CheckShape(ctx, w_c_if + 1, "w_c_o", TensorShape({n, n}));
}

// Runs work(shard, first_row, end_row) for `shards` contiguous blocks of the batch, in the
// intra-op thread pool.
void ForEachShard(OpKernelContext* ctx, int shards, int64_t batch,
                  const std::function<void(int, int64_t, int64_t)>& work) {
  auto run = [&](int64_t first, int64_t end) {
    for (int64_t s = first; s < end; ++s) {
      work(static_cast<int>(s), batch * s / shards, batch * (s + 1) / shards);
    }
  };
  if (shards == 1) {
    run(0, 1);
    return;
  }
  // A cost per unit this large makes Shard give every shard its own task.
  Shard(shards, ctx->device()->tensorflow_cpu_worker_threads()->workers, shards,
        int64_t{1} << 40, run);
}

int NumShards(OpKernelContext* ctx, int64_t batch) {
  const int threads = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
  return static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(threads, batch / kMinRowsPerShard)));
}

// The weights of one call: w_c_if and w_c_o are null without peepholes.
template <typename T>
struct Weights {
  const T* kernel;  // [input_size + units, 4 units]
  const T* bias;    // [4 units]
  const T* w_c_if;  // [units, 2 units]
  const T* w_c_o;   // [units, units]
};

// Scratch for the forward-only ops, placed like an output: element i of an output tensor sits at
// an address whose remainder modulo the allocator's alignment depends only on i, and Eigen
// splits element-wise loops and small products by where the destination is aligned, which
// changes the float rounding. Rows written at Like(i) are aligned as the training op's output
// element i, so that both ops round alike.
template <typename T>
class OutputLikeScratch {
 public:
  explicit OutputLikeScratch(int64_t size) : buffer_(size + 2 * kPeriod) {}

  // Where element `element` of an output would fall, modulo the alignment; size elements on.
  T* Like(int64_t element) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(buffer_.data());
    const uintptr_t aligned = (base + kAlign - 1) & ~uintptr_t{kAlign - 1};
    return reinterpret_cast<T*>(aligned) + element % kPeriod;
  }

 private:
  static constexpr uintptr_t kAlign = Allocator::kAllocatorAlignment;
  static constexpr int64_t kPeriod = kAlign / sizeof(T);  // elements per alignment
  std::vector<T> buffer_;
};

// Where the forward writes: h of every step and the final state always; with SaveForGradient,
// c and the activated gates of every step (else null).
template <typename T>
struct ForwardOutputs {
  T* h;        // [steps, batch, units]
  T* c_final;  // [batch, units]
  T* h_final;  // [batch, units]
  T* c;        // [steps, batch, units]
  T* gates;    // [steps, batch, 4 units]
};

// The forward recurrence for rows [b0, b1) of the batch. Peepholes is a template parameter so
// that without them each step is one pass over the rows; with them the output gate needs every
// row's c~ first, hence a second pass. Without SaveForGradient, a step's gates and c go to
// scratch of these rows (c to two buffers in turn: c_{t-1} is read while c_t is written).
template <typename T, bool Peepholes, bool SaveForGradient>
void ForwardRows(const Dims& d, const T* x, const T* k, const T* c0, const T* h0,
                 const Weights<T>& weights, const ForwardOutputs<T>& out, int64_t b0,
                 int64_t b1) {
  const int64_t rows = b1 - b0, n = d.units, in = d.input_size, batch = d.batch;
  if (rows == 0) return;
  OutputLikeScratch<T> gates_scratch(SaveForGradient ? 0 : rows * 4 * n);
  OutputLikeScratch<T> c_scratch[2] = {OutputLikeScratch<T>(SaveForGradient ? 0 : rows * n),
                                       OutputLikeScratch<T>(SaveForGradient ? 0 : rows * n)};
  ConstMatrixMap<T> w(weights.kernel, in + n, 4 * n);
  ConstMatrixMap<T> w_c_if(weights.w_c_if, Peepholes ? n : 0, Peepholes ? 2 * n : 0);
  ConstMatrixMap<T> w_c_o(weights.w_c_o, Peepholes ? n : 0, Peepholes ? n : 0);
  ConstArrayMap<T> bias_if(weights.bias, 2 * n), bias_o(weights.bias + 2 * n, n),
      bias_j(weights.bias + 3 * n, n);
  const int64_t k_row_stride = d.k_batch == 1 ? 0 : n;
  // [x_t, h_{t-1}] of these rows: h is written here as it is computed.
  Matrix<T> xh(rows, in + n);
  xh.rightCols(n) = ConstMatrixMap<T>(h0 + b0 * n, rows, n);
  // c~ of these rows at this step (with peepholes), or of one row.
  Matrix<T> c_lstm(Peepholes ? rows : 1, n);
  const T* c_prev = c0 + b0 * n;
  for (int64_t t = 0; t < d.steps; ++t) {
    const int64_t first = t * batch + b0;  // the first row of this block at step t
    if (in > 0) xh.leftCols(in) = ConstMatrixMap<T>(x + first * in, rows, in);
    T* z = SaveForGradient ? out.gates + first * 4 * n : gates_scratch.Like(first * 4 * n);
    MatrixMap<T> z_rows(z, rows, 4 * n);
    z_rows.noalias() = xh * w;
    if (Peepholes) {
      z_rows.leftCols(2 * n).noalias() += ConstMatrixMap<T>(c_prev, rows, n) * w_c_if;
    }
    const T* k_t = k + (t * d.k_batch + (d.k_batch == 1 ? 0 : b0)) * n;
    T* c_t = SaveForGradient ? out.c + first * n : c_scratch[t % 2].Like(first * n);
    T* h_t = out.h + first * n;
    // o, h~ and h_t of row r, once z_o is complete.
    auto output = [&](int64_t r, const T* c_lstm_r) {
      ArrayMap<T> o(z + r * 4 * n + 2 * n, n);
      o = (o + bias_o).logistic();
      ConstArrayMap<T> k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> h_prev(xh.row(r).data() + in, n), h_r(h_t + r * n, n);
      h_r = h_prev + k_r * (o * ConstArrayMap<T>(c_lstm_r, n).tanh() - h_prev);
      h_prev = h_r;
    };
    for (int64_t r = 0; r < rows; ++r) {
      T* g = z + r * 4 * n;
      ArrayMap<T> i_f(g, 2 * n), j(g + 3 * n, n);
      i_f = (i_f + bias_if).logistic();
      j = (j + bias_j).tanh();
      ConstArrayMap<T> i(g, n), f(g + n, n);
      ConstArrayMap<T> c_r(c_prev + r * n, n), k_r(k_t + r * k_row_stride, n);
      T* c_lstm_r = c_lstm.row(Peepholes ? r : 0).data();
      ArrayMap<T>(c_lstm_r, n) = f * c_r + i * j;
      ArrayMap<T>(c_t + r * n, n) = c_r + k_r * (ConstArrayMap<T>(c_lstm_r, n) - c_r);
      if (!Peepholes) output(r, c_lstm_r);
    }
    if (Peepholes) {
      z_rows.middleCols(2 * n, n).noalias() += c_lstm * w_c_o;
      for (int64_t r = 0; r < rows; ++r) output(r, c_lstm.row(r).data());
    }
    c_prev = c_t;
  }
  // c0 and h0 when there are no steps.
  std::copy_n(c_prev, rows * n, out.c_final + b0 * n);
  MatrixMap<T>(out.h_final + b0 * n, rows, n) = xh.rightCols(n);
}

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
    ForEachShard(ctx, NumShards(ctx, d.batch), d.batch, [&](int, int64_t b0, int64_t b1) {
      (use_peepholes_ ? ForwardRows<T, true, SaveForGradient>
                      : ForwardRows<T, false, SaveForGradient>)(d, x, k, c0, h0, weights, out,
                                                                b0, b1);
    });
  }

 private:
  bool use_peepholes_;
};

// What one block of rows contributes to the gradients that sum over the batch.
template <typename T>
struct Partials {
  Matrix<T> dkernel;  // [input_size + units, 4 units]
  Array<T> dbias;     // [4 units]
  Array<T> dk;        // [steps * units] when k is shared by the batch, else empty
  Matrix<T> dw_c_if;  // [units, 2 units] with peepholes, else empty
  Matrix<T> dw_c_o;   // [units, units] with peepholes, else empty
};

// The backward recurrence for rows [b0, b1). Writes dx, dc0, dh0 (and dk when k is per
// example) for these rows; adds the rest to `partials`. As in the forward, one pass over the
// rows per step without peepholes, two with them (dz_o's product is needed for dc~).
template <typename T, bool Peepholes>
void BackwardRows(const Dims& d, const T* x, const T* k, const T* c0, const T* h0,
                  const Weights<T>& weights, const T* h, const T* c, const T* gates,
                  const T* dh_seq, const T* dc_final, const T* dh_final, T gate_gradient_clip,
                  T* dx, T* dk, T* dc0, T* dh0, Partials<T>* partials, int64_t b0, int64_t b1) {
  const int64_t rows = b1 - b0, n = d.units, in = d.input_size, batch = d.batch;
  if (rows == 0) return;
  const bool shared_k = d.k_batch == 1;
  ConstMatrixMap<T> w(weights.kernel, in + n, 4 * n);
  const auto w_x = w.topRows(in);
  const auto w_h = w.bottomRows(n);
  ConstMatrixMap<T> w_c_if(weights.w_c_if, Peepholes ? n : 0, Peepholes ? 2 * n : 0);
  ConstMatrixMap<T> w_c_o(weights.w_c_o, Peepholes ? n : 0, Peepholes ? n : 0);
  const int64_t k_row_stride = shared_k ? 0 : n;
  // The gradients of c_t and h_t, carried backwards.
  Matrix<T> dc = ConstMatrixMap<T>(dc_final + b0 * n, rows, n);
  Matrix<T> dh = ConstMatrixMap<T>(dh_final + b0 * n, rows, n);
  Matrix<T> dz(rows, 4 * n), xh(rows, in + n);
  // c~ (kept for w_c_o's gradient) and dc~ of these rows with peepholes, of one row without.
  Matrix<T> c_lstm(Peepholes ? rows : 1, n), dc_lstm(Peepholes ? rows : 1, n);
  Array<T> tanh_c(n), dh_lstm(n);
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    const int64_t first = t * batch + b0;
    const T* c_prev = t > 0 ? c + (first - batch) * n : c0 + b0 * n;
    const T* h_prev = t > 0 ? h + (first - batch) * n : h0 + b0 * n;
    const T* k_t = k + (t * d.k_batch + (shared_k ? 0 : b0)) * n;
    dh += ConstMatrixMap<T>(dh_seq + first * n, rows, n);
    // Through c~ = f c_prev + i j, given dc~'s part through h~ (and z_o) in dc_lstm_r: dz_i,
    // dz_f, dz_j, and dc carried to c_{t-1}.
    auto through_c = [&](int64_t r, T* dc_lstm_r) {
      const T* g = gates + (first + r) * 4 * n;
      ConstArrayMap<T> i(g, n), f(g + n, n), j(g + 3 * n, n);
      ConstArrayMap<T> c_r(c_prev + r * n, n), k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> dc_r(dc.row(r).data(), n), dc_lstm_sum(dc_lstm_r, n);
      dc_lstm_sum += k_r * dc_r;
      T* dz_r = dz.row(r).data();
      ArrayMap<T>(dz_r, n) = dc_lstm_sum * j * i * (T(1) - i);
      ArrayMap<T>(dz_r + n, n) = dc_lstm_sum * c_r * f * (T(1) - f);
      ArrayMap<T>(dz_r + 3 * n, n) = dc_lstm_sum * i * (T(1) - j.square());
      dc_r = (T(1) - k_r) * dc_r + dc_lstm_sum * f;
    };
    // Through h~ = o tanh(c~) and the gate: dk, dz_o, dc~'s part through h~, dh carried to
    // h_{t-1}.
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = gates + (first + r) * 4 * n;
      ConstArrayMap<T> i(g, n), f(g + n, n), o(g + 2 * n, n), j(g + 3 * n, n);
      ConstArrayMap<T> c_r(c_prev + r * n, n), h_r(h_prev + r * n, n);
      ConstArrayMap<T> k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> dc_r(dc.row(r).data(), n), dh_r(dh.row(r).data(), n);
      T* c_lstm_r = c_lstm.row(Peepholes ? r : 0).data();
      T* dc_lstm_r = dc_lstm.row(Peepholes ? r : 0).data();
      ArrayMap<T> c_lstm_row(c_lstm_r, n);
      c_lstm_row = f * c_r + i * j;
      tanh_c = c_lstm_row.tanh();
      // c_t = c_prev + k (c~ - c_prev), h_t = h_prev + k (h~ - h_prev).
      if (shared_k) {
        ArrayMap<T>(partials->dk.data() + t * n, n) +=
            dc_r * (c_lstm_row - c_r) + dh_r * (o * tanh_c - h_r);
      } else {
        ArrayMap<T>(dk + (first + r) * n, n) =
            dc_r * (c_lstm_row - c_r) + dh_r * (o * tanh_c - h_r);
      }
      dh_lstm = k_r * dh_r;
      ArrayMap<T>(dc_lstm_r, n) = dh_lstm * o * (T(1) - tanh_c.square());
      ArrayMap<T>(dz.row(r).data() + 2 * n, n) = dh_lstm * tanh_c * o * (T(1) - o);
      dh_r = (T(1) - k_r) * dh_r;
      if (!Peepholes) through_c(r, dc_lstm_r);
    }
    if (Peepholes) {
      const auto dz_o = dz.middleCols(2 * n, n);  // z_o += c~ w_c_o
      dc_lstm.noalias() += dz_o * w_c_o.transpose();
      partials->dw_c_o.noalias() += c_lstm.transpose() * dz_o;
      for (int64_t r = 0; r < rows; ++r) through_c(r, dc_lstm.row(r).data());
      const auto dz_if = dz.leftCols(2 * n);  // [z_i, z_f] += c_prev w_c_if
      dc.noalias() += dz_if * w_c_if.transpose();
      partials->dw_c_if.noalias() += ConstMatrixMap<T>(c_prev, rows, n).transpose() * dz_if;
    }
    // The authors' per-step clipping: on the gradient of [x_t, h_{t-1}] kernel + bias only,
    // after the peepholes took theirs.
    if (gate_gradient_clip > T(0)) {
      dz = dz.cwiseMax(-gate_gradient_clip).cwiseMin(gate_gradient_clip);
    }
    dh.noalias() += dz * w_h.transpose();
    if (in > 0) {
      MatrixMap<T>(dx + first * in, rows, in).noalias() = dz * w_x.transpose();
      xh.leftCols(in) = ConstMatrixMap<T>(x + first * in, rows, in);
    }
    xh.rightCols(n) = ConstMatrixMap<T>(h_prev, rows, n);
    partials->dkernel.noalias() += xh.transpose() * dz;
    partials->dbias += dz.colwise().sum().transpose().array();
  }
  MatrixMap<T>(dc0 + b0 * n, rows, n) = dc;
  MatrixMap<T>(dh0 + b0 * n, rows, n) = dh;
}

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
    const bool shared_k = d.k_batch == 1;
    const int64_t n = use_peepholes_ ? d.units : 0;  // the peephole matrices' rows
    const int shards = NumShards(ctx, d.batch);
    std::vector<Partials<T>> partials(shards);
    for (Partials<T>& p : partials) {
      p.dkernel = Matrix<T>::Zero(d.input_size + d.units, 4 * d.units);
      p.dbias = Array<T>::Zero(4 * d.units);
      p.dk = Array<T>::Zero(shared_k ? d.steps * d.units : 0);
      p.dw_c_if = Matrix<T>::Zero(n, 2 * n);
      p.dw_c_o = Matrix<T>::Zero(n, n);
    }
    T* dk_out = dk->flat<T>().data();
    ForEachShard(ctx, shards, d.batch, [&](int s, int64_t b0, int64_t b1) {
      (use_peepholes_ ? BackwardRows<T, true> : BackwardRows<T, false>)(
          d, in(0), in(1), in(2), in(3), weights, in(7), in(8), in(9), in(10), in(11), in(12),
          static_cast<T>(gate_gradient_clip_), dx->flat<T>().data(), dk_out, dc0->flat<T>().data(), dh0->flat<T>().data(),
          &partials[s], b0, b1);
    });
    MatrixMap<T> dkernel_out(dkernel->flat<T>().data(), d.input_size + d.units, 4 * d.units);
    ArrayMap<T> dbias_out(dbias->flat<T>().data(), 4 * d.units);
    MatrixMap<T> dw_c_if_out(dw_c_if->flat<T>().data(), n, 2 * n);
    MatrixMap<T> dw_c_o_out(dw_c_o->flat<T>().data(), n, n);
    dkernel_out = partials[0].dkernel;
    dbias_out = partials[0].dbias;
    dw_c_if_out = partials[0].dw_c_if;
    dw_c_o_out = partials[0].dw_c_o;
    if (shared_k) ArrayMap<T>(dk_out, d.steps * d.units) = partials[0].dk;
    for (int s = 1; s < shards; ++s) {
      dkernel_out += partials[s].dkernel;
      dbias_out += partials[s].dbias;
      dw_c_if_out += partials[s].dw_c_if;
      dw_c_o_out += partials[s].dw_c_o;
      if (shared_k) ArrayMap<T>(dk_out, d.steps * d.units) += partials[s].dk;
    }
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
