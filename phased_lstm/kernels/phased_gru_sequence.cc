// The Phased GRU recurrence over a whole sequence, forward and gradient, one CPU kernel each.
//
// Built on first use by phased_lstm/op_library.py against the installed TensorFlow and loaded
// with tf.load_op_library; phased_lstm/fused_rnn.py registers the gradient and wraps the ops.
// The design is phased_lstm_sequence.cc's (the Phased LSTM's), for PhasedGRUCell's step.
//
// The time gate k is an input: it depends only on the timestamps and the timing variables, so
// TensorFlow computes it for all steps before the recurrence (and differentiates it, whatever
// gradient rule the gate uses). Padding is folded into k (k = 0 carries the state unchanged).
// Per step t, with kernel [input_size + units, 3 units], rows [x, h], columns [r, u, c]
// (PhasedGRUCell's gates/kernel beside its candidate/kernel), and bias [3 units]:
//
//   r, u = sigmoid([x_t, h_{t-1}] kernel[:, r u] + bias[r u])      (reset, update)
//   c    = tanh([x_t, r h_{t-1}] kernel[:, c] + bias[c])           (candidate)
//   h~   = u h_{t-1} + (1 - u) c
//   h_t  = h_{t-1} + k_t (h~ - h_{t-1}) = h_{t-1} + k_t (1 - u) (c - h_{t-1})
//
// The candidate's product needs r, so a step has two products, one after the other; its
// gradient three (dz_c's first: the reset gate's gradient needs it) and the two weight
// gradients.
//
// The rows of a batch are independent in the recurrence, so both kernels split the batch into
// one contiguous block of rows per intra-op thread and run the whole sequence on each block: no
// synchronisation between steps. The forward saves the activated gates [steps, batch, 3 units]
// (r, u, c); the gradient reads h_{t-1} from the outputs. The weight gradients are accumulated
// per block and step, so that no [steps, batch, 3 units] gradient buffer is needed.
//
// PhasedGRUSequenceInference is the same forward (the same function, ForwardRows, with
// SaveForGradient false) for evaluation: one step's gates per block in scratch instead of every
// step's gates in an output, and no gradient (fused_rnn.py registers one that raises). Its
// outputs are the training forward's bit for bit.
//
// What it shares with the Phased LSTM's kernels (Eigen's maps, the sizes of a call, scratch
// placed like an output, the split of the batch over threads) is in kernel_common.h and
// tf_kernel_common.h.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "Eigen/Core"
#include "kernel_common.h"
#include "tf_kernel_common.h"
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

using ::phased_lstm::Array;
using ::phased_lstm::ArrayMap;
using ::phased_lstm::ConstArrayMap;
using ::phased_lstm::ConstMatrixMap;
using ::phased_lstm::Dims;
using ::phased_lstm::Matrix;
using ::phased_lstm::MatrixMap;
using ::phased_lstm::OutputLikeScratch;
using phased_lstm_tf::ForEachShard;
using phased_lstm_tf::NumShards;

// Static shapes: x [steps, batch, input_size], k [steps, batch or 1, units], h0 [batch, units],
// kernel [input_size + units, 3 units].
absl::Status InferSequenceDims(InferenceContext* c, DimensionHandle* steps,
                               DimensionHandle* batch, DimensionHandle* units,
                               DimensionHandle* three_units) {
  ShapeHandle x, k, h0, kernel;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &k));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &h0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &kernel));
  *steps = c->Dim(x, 0);
  *batch = c->Dim(x, 1);
  *units = c->Dim(h0, 1);
  TF_RETURN_IF_ERROR(c->Merge(*steps, c->Dim(k, 0), steps));
  TF_RETURN_IF_ERROR(c->Merge(*batch, c->Dim(h0, 0), batch));
  TF_RETURN_IF_ERROR(c->Merge(*units, c->Dim(k, 2), units));
  TF_RETURN_IF_ERROR(c->Multiply(*units, 3, three_units));
  TF_RETURN_IF_ERROR(c->Merge(*three_units, c->Dim(kernel, 1), three_units));
  DimensionHandle rows;
  TF_RETURN_IF_ERROR(c->Add(c->Dim(x, 2), *units, &rows));
  TF_RETURN_IF_ERROR(c->Merge(rows, c->Dim(kernel, 0), &rows));
  return absl::OkStatus();
}

// The forward ops' shapes: h and h_final, then (SaveForGradient) gates.
template <bool SaveForGradient>
absl::Status ForwardShapes(InferenceContext* c) {
  DimensionHandle steps, batch, units, three_units;
  TF_RETURN_IF_ERROR(InferSequenceDims(c, &steps, &batch, &units, &three_units));
  ShapeHandle bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 1, &bias));
  TF_RETURN_IF_ERROR(c->Merge(three_units, c->Dim(bias, 0), &three_units));
  c->set_output(0, c->MakeShape({steps, batch, units}));
  c->set_output(1, c->MakeShape({batch, units}));
  if (SaveForGradient) c->set_output(2, c->MakeShape({steps, batch, three_units}));
  return absl::OkStatus();
}

REGISTER_OP("PhasedGRUSequence")
    .Input("x: T")
    .Input("k: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Output("h: T")
    .Output("h_final: T")
    .Output("gates: T")
    .Attr("T: {float, double}")
    .SetShapeFn(ForwardShapes<true>)
    .Doc(R"doc(
The Phased GRU recurrence over a whole sequence, time-major: PhasedGRUCell's GRU step (TF 1.x
GRUCell's: the reset gate multiplies h before the candidate's product), kept in proportion to
the time gate k.

x: [steps, batch, input_size].
k: the time gate, [steps, batch, units] or [steps, 1, units] when the batch shares it.
h0: initial h, [batch, units].
kernel: [input_size + units, 3 * units], rows [x, h], columns [r, u, c]: the reset and update
  gates (gates/kernel), then the candidate (candidate/kernel, whose h rows multiply r h).
bias: [3 * units], [r, u, c].
h: h of every step, [steps, batch, units].
h_final: h after the last step (h0 when steps is 0).
gates: r, u and the candidate c of every step, [steps, batch, 3 * units], saved for the
  gradient.
)doc");

REGISTER_OP("PhasedGRUSequenceInference")
    .Input("x: T")
    .Input("k: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Output("h: T")
    .Output("h_final: T")
    .Attr("T: {float, double}")
    .SetShapeFn(ForwardShapes<false>)
    .Doc(R"doc(
PhasedGRUSequence for evaluation: the same inputs and h and h_final, bit for bit, without saving
every step's gates. It has no gradient.
)doc");

REGISTER_OP("PhasedGRUSequenceGrad")
    .Input("x: T")
    .Input("k: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("h: T")
    .Input("gates: T")
    .Input("dh: T")
    .Input("dh_final: T")
    .Output("dx: T")
    .Output("dk: T")
    .Output("dh0: T")
    .Output("dkernel: T")
    .Output("dbias: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle steps, batch, units, three_units;
      TF_RETURN_IF_ERROR(InferSequenceDims(c, &steps, &batch, &units, &three_units));
      for (int i = 0; i < 4; ++i) c->set_output(i, c->input(i));
      c->set_output(4, c->Vector(three_units));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gradient of PhasedGRUSequence with respect to x, k (summed over the batch when k is shared), h0,
kernel and bias, given the forward's inputs and outputs and the gradients dh (every step's h)
and dh_final.
)doc");

// Checks the forward's inputs against each other; returns false (with ctx's status set) if not.
bool GetDims(OpKernelContext* ctx, Dims* d) {
  const Tensor& x = ctx->input(0);
  const Tensor& k = ctx->input(1);
  const Tensor& h0 = ctx->input(2);
  const Tensor& kernel = ctx->input(3);
  if (x.dims() != 3 || k.dims() != 3 || h0.dims() != 2 || kernel.dims() != 2) {
    ctx->SetStatus(errors::InvalidArgument(
        "PhasedGRUSequence expects x [steps, batch, input_size], k [steps, batch or 1, units], "
        "h0 [batch, units], kernel [input_size + units, 3 units]; got x ",
        x.shape().DebugString(), ", k ", k.shape().DebugString(), ", h0 ",
        h0.shape().DebugString(), ", kernel ", kernel.shape().DebugString()));
    return false;
  }
  d->steps = x.dim_size(0);
  d->batch = x.dim_size(1);
  d->input_size = x.dim_size(2);
  d->units = h0.dim_size(1);
  d->k_batch = k.dim_size(1);
  const bool ok = h0.dim_size(0) == d->batch && k.dim_size(0) == d->steps &&
                  (d->k_batch == d->batch || d->k_batch == 1) && k.dim_size(2) == d->units &&
                  kernel.dim_size(0) == d->input_size + d->units &&
                  kernel.dim_size(1) == 3 * d->units;
  if (!ok) {
    ctx->SetStatus(errors::InvalidArgument(
        "PhasedGRUSequence: inconsistent shapes: x ", x.shape().DebugString(),
        " [steps, batch, input_size], k ", k.shape().DebugString(),
        " [steps, batch or 1, units], h0 ", h0.shape().DebugString(), " [batch, units], kernel ",
        kernel.shape().DebugString(), " [input_size + units, 3 units]"));
    return false;
  }
  return true;
}

bool CheckShape(OpKernelContext* ctx, int index, const char* name, const TensorShape& want) {
  return phased_lstm_tf::CheckShape(ctx, "PhasedGRUSequence", index, name, want);
}

// The forward recurrence for rows [b0, b1) of the batch: h of every step and the final h, and
// with SaveForGradient every step's gates (else a step's gates go to scratch of these rows and
// gates is null).
template <typename T, bool SaveForGradient>
void ForwardRows(const Dims& d, const T* x, const T* k, const T* h0, const T* kernel,
                 const T* bias, T* h, T* h_final, T* gates, int64_t b0, int64_t b1) {
  const int64_t rows = b1 - b0, n = d.units, in = d.input_size, batch = d.batch;
  if (rows == 0) return;
  OutputLikeScratch<T> gates_scratch(SaveForGradient ? 0 : rows * 3 * n);
  ConstMatrixMap<T> w(kernel, in + n, 3 * n);
  const auto w_ru = w.leftCols(2 * n);
  const auto w_c = w.rightCols(n);
  ConstArrayMap<T> bias_ru(bias, 2 * n), bias_c(bias + 2 * n, n);
  const int64_t k_row_stride = d.k_batch == 1 ? 0 : n;
  // [x_t, h_{t-1}] and [x_t, r h_{t-1}] of these rows: h is written into xh as it is computed.
  Matrix<T> xh(rows, in + n), xrh(rows, in + n);
  xh.rightCols(n) = ConstMatrixMap<T>(h0 + b0 * n, rows, n);
  for (int64_t t = 0; t < d.steps; ++t) {
    const int64_t first = t * batch + b0;  // the first row of this block at step t
    if (in > 0) {
      xh.leftCols(in) = ConstMatrixMap<T>(x + first * in, rows, in);
      xrh.leftCols(in) = xh.leftCols(in);
    }
    T* z = SaveForGradient ? gates + first * 3 * n : gates_scratch.Like(first * 3 * n);
    MatrixMap<T> z_rows(z, rows, 3 * n);
    z_rows.leftCols(2 * n).noalias() = xh * w_ru;
    for (int64_t r = 0; r < rows; ++r) {
      ArrayMap<T> ru(z + r * 3 * n, 2 * n);
      ru = (ru + bias_ru).logistic();
      ArrayMap<T>(xrh.row(r).data() + in, n) =
          ru.head(n) * ConstArrayMap<T>(xh.row(r).data() + in, n);
    }
    z_rows.rightCols(n).noalias() = xrh * w_c;
    const T* k_t = k + (t * d.k_batch + (d.k_batch == 1 ? 0 : b0)) * n;
    T* h_t = h + first * n;
    for (int64_t r = 0; r < rows; ++r) {
      T* g = z + r * 3 * n;
      ConstArrayMap<T> u(g + n, n), k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> c(g + 2 * n, n);
      c = (c + bias_c).tanh();
      ArrayMap<T> h_prev(xh.row(r).data() + in, n), h_r(h_t + r * n, n);
      h_r = h_prev + k_r * (T(1) - u) * (c - h_prev);
      h_prev = h_r;
    }
  }
  MatrixMap<T>(h_final + b0 * n, rows, n) = xh.rightCols(n);  // h0 when there are no steps
}

// PhasedGRUSequence (SaveForGradient) and PhasedGRUSequenceInference.
template <typename T, bool SaveForGradient>
class PhasedGRUSequenceOp : public OpKernel {
 public:
  explicit PhasedGRUSequenceOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    if (!GetDims(ctx, &d)) return;
    if (!CheckShape(ctx, 4, "bias", TensorShape({3 * d.units}))) return;
    Tensor *h, *h_final, *gates = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({d.steps, d.batch, d.units}), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({d.batch, d.units}), &h_final));
    if (SaveForGradient) {
      OP_REQUIRES_OK(
          ctx, ctx->allocate_output(2, TensorShape({d.steps, d.batch, 3 * d.units}), &gates));
    }
    auto in = [ctx](int index) { return ctx->input(index).flat<T>().data(); };
    T* h_out = h->flat<T>().data();
    T* h_final_out = h_final->flat<T>().data();
    T* gates_out = SaveForGradient ? gates->flat<T>().data() : nullptr;
    ForEachShard(ctx, NumShards(ctx, d.batch), d.batch, [&](int, int64_t b0, int64_t b1) {
      ForwardRows<T, SaveForGradient>(d, in(0), in(1), in(2), in(3), in(4), h_out, h_final_out,
                                      gates_out, b0, b1);
    });
  }
};

// What one block of rows contributes to the gradients that sum over the batch.
template <typename T>
struct Partials {
  Matrix<T> dkernel;  // [input_size + units, 3 units]
  Array<T> dbias;     // [3 units]
  Array<T> dk;        // [steps * units] when k is shared by the batch, else empty
};

// The backward recurrence for rows [b0, b1). Writes dx, dh0 (and dk when k is per example) for
// these rows; adds the rest to `partials`.
template <typename T>
void BackwardRows(const Dims& d, const T* x, const T* k, const T* h0, const T* kernel,
                  const T* h, const T* gates, const T* dh_seq, const T* dh_final, T* dx, T* dk,
                  T* dh0, Partials<T>* partials, int64_t b0, int64_t b1) {
  const int64_t rows = b1 - b0, n = d.units, in = d.input_size, batch = d.batch;
  if (rows == 0) return;
  const bool shared_k = d.k_batch == 1;
  ConstMatrixMap<T> w(kernel, in + n, 3 * n);
  const auto w_x = w.topRows(in);                          // [input_size, 3 units]
  const auto w_h_ru = w.bottomRows(n).leftCols(2 * n);     // h -> [r, u]
  const auto w_h_c = w.bottomRows(n).rightCols(n);         // r h -> c
  const int64_t k_row_stride = shared_k ? 0 : n;
  // The gradient of h_t, carried backwards.
  Matrix<T> dh = ConstMatrixMap<T>(dh_final + b0 * n, rows, n);
  // dz = [dz_r, dz_u, dz_c], the gradients of the gates' pre-activations.
  Matrix<T> dz(rows, 3 * n), xh(rows, in + n), xrh(rows, in + n), d_rh(rows, n);
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    const int64_t first = t * batch + b0;
    const T* h_prev = t > 0 ? h + (first - batch) * n : h0 + b0 * n;
    const T* k_t = k + (t * d.k_batch + (shared_k ? 0 : b0)) * n;
    dh += ConstMatrixMap<T>(dh_seq + first * n, rows, n);
    // Through h_t = h_prev + k (1 - u) (c - h_prev): dk, dz_u, dz_c, and dh's direct part.
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = gates + (first + r) * 3 * n;
      ConstArrayMap<T> reset(g, n), u(g + n, n), c(g + 2 * n, n);
      ConstArrayMap<T> h_r(h_prev + r * n, n), k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> dh_r(dh.row(r).data(), n);
      T* dz_r = dz.row(r).data();
      if (shared_k) {
        ArrayMap<T>(partials->dk.data() + t * n, n) += dh_r * (T(1) - u) * (c - h_r);
      } else {
        ArrayMap<T>(dk + (first + r) * n, n) = dh_r * (T(1) - u) * (c - h_r);
      }
      ArrayMap<T>(dz_r + n, n) = -dh_r * k_r * (c - h_r) * u * (T(1) - u);
      ArrayMap<T>(dz_r + 2 * n, n) = dh_r * k_r * (T(1) - u) * (T(1) - c.square());
      dh_r *= T(1) - k_r * (T(1) - u);
      ArrayMap<T>(xrh.row(r).data() + in, n) = reset * h_r;
    }
    // Through c = tanh([x, r h_prev] w_c + b_c): r h_prev's gradient, then dz_r and dh's part
    // through r h_prev.
    const auto dz_c = dz.rightCols(n);
    d_rh.noalias() = dz_c * w_h_c.transpose();
    for (int64_t r = 0; r < rows; ++r) {
      ConstArrayMap<T> reset(gates + (first + r) * 3 * n, n), h_r(h_prev + r * n, n);
      ConstArrayMap<T> d_rh_r(d_rh.row(r).data(), n);
      ArrayMap<T>(dz.row(r).data(), n) = d_rh_r * h_r * reset * (T(1) - reset);
      ArrayMap<T>(dh.row(r).data(), n) += d_rh_r * reset;
    }
    // Through [r, u] = sigmoid([x, h_prev] w_ru + b_ru).
    const auto dz_ru = dz.leftCols(2 * n);
    dh.noalias() += dz_ru * w_h_ru.transpose();
    if (in > 0) {
      MatrixMap<T>(dx + first * in, rows, in).noalias() = dz * w_x.transpose();
      xh.leftCols(in) = ConstMatrixMap<T>(x + first * in, rows, in);
      xrh.leftCols(in) = xh.leftCols(in);
    }
    xh.rightCols(n) = ConstMatrixMap<T>(h_prev, rows, n);
    partials->dkernel.leftCols(2 * n).noalias() += xh.transpose() * dz_ru;
    partials->dkernel.rightCols(n).noalias() += xrh.transpose() * dz_c;
    partials->dbias += dz.colwise().sum().transpose().array();
  }
  MatrixMap<T>(dh0 + b0 * n, rows, n) = dh;
}

template <typename T>
class PhasedGRUSequenceGradOp : public OpKernel {
 public:
  explicit PhasedGRUSequenceGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    if (!GetDims(ctx, &d)) return;
    const TensorShape sequence({d.steps, d.batch, d.units});
    if (!CheckShape(ctx, 4, "h", sequence) ||
        !CheckShape(ctx, 5, "gates", TensorShape({d.steps, d.batch, 3 * d.units})) ||
        !CheckShape(ctx, 6, "dh", sequence) ||
        !CheckShape(ctx, 7, "dh_final", TensorShape({d.batch, d.units}))) {
      return;
    }
    Tensor *dx, *dk, *dh0, *dkernel, *dbias;
    for (int index = 0; index < 4; ++index) {
      Tensor** out[] = {&dx, &dk, &dh0, &dkernel};
      OP_REQUIRES_OK(ctx, ctx->allocate_output(index, ctx->input(index).shape(), out[index]));
    }
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({3 * d.units}), &dbias));
    auto in = [ctx](int index) { return ctx->input(index).flat<T>().data(); };
    const bool shared_k = d.k_batch == 1;
    const int shards = NumShards(ctx, d.batch);
    std::vector<Partials<T>> partials(shards);
    for (Partials<T>& p : partials) {
      p.dkernel = Matrix<T>::Zero(d.input_size + d.units, 3 * d.units);
      p.dbias = Array<T>::Zero(3 * d.units);
      p.dk = Array<T>::Zero(shared_k ? d.steps * d.units : 0);
    }
    T* dk_out = dk->flat<T>().data();
    ForEachShard(ctx, shards, d.batch, [&](int s, int64_t b0, int64_t b1) {
      BackwardRows<T>(d, in(0), in(1), in(2), in(3), in(4), in(5), in(6), in(7),
                      dx->flat<T>().data(), dk_out, dh0->flat<T>().data(), &partials[s], b0,
                      b1);
    });
    MatrixMap<T> dkernel_out(dkernel->flat<T>().data(), d.input_size + d.units, 3 * d.units);
    ArrayMap<T> dbias_out(dbias->flat<T>().data(), 3 * d.units);
    dkernel_out = partials[0].dkernel;
    dbias_out = partials[0].dbias;
    if (shared_k) ArrayMap<T>(dk_out, d.steps * d.units) = partials[0].dk;
    for (int s = 1; s < shards; ++s) {
      dkernel_out += partials[s].dkernel;
      dbias_out += partials[s].dbias;
      if (shared_k) ArrayMap<T>(dk_out, d.steps * d.units) += partials[s].dk;
    }
  }
};

#define REGISTER(T)                                                                \
  REGISTER_KERNEL_BUILDER(                                                         \
      Name("PhasedGRUSequence").Device(DEVICE_CPU).TypeConstraint<T>("T"),         \
      PhasedGRUSequenceOp<T, true>);                                               \
  REGISTER_KERNEL_BUILDER(                                                         \
      Name("PhasedGRUSequenceInference").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      PhasedGRUSequenceOp<T, false>);                                              \
  REGISTER_KERNEL_BUILDER(                                                         \
      Name("PhasedGRUSequenceGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),     \
      PhasedGRUSequenceGradOp<T>);

REGISTER(float);
REGISTER(double);
#undef REGISTER

}  // namespace
}  // namespace tensorflow
