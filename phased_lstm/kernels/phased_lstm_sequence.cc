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
//   i, f, o = sigmoid(z_i, z_f, z_o),   j = tanh(z_j)
//   c~ = f c_{t-1} + i j,               h~ = o tanh(c~)
//   c_t = c_{t-1} + k_t (c~ - c_{t-1}), h_t = h_{t-1} + k_t (h~ - h_{t-1})
//
// The rows of a batch are independent in the recurrence, so both kernels split the batch into
// one contiguous block of rows per intra-op thread and run the whole sequence on each block: no
// synchronisation between steps. The forward saves the activated gates [steps, batch, 4 units]
// and every c [steps, batch, units]; the gradient recomputes c~ and tanh(c~) from them. The
// weight gradient is accumulated per block and step ([x_t, h_{t-1}]^T dz_t), so that no
// [steps, batch, 4 units] gradient buffer is needed.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "Eigen/Core"
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

REGISTER_OP("PhasedLSTMSequence")
    .Input("x: T")
    .Input("k: T")
    .Input("c0: T")
    .Input("h0: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Output("h: T")
    .Output("c_final: T")
    .Output("h_final: T")
    .Output("c: T")
    .Output("gates: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle steps, batch, units, four_units;
      TF_RETURN_IF_ERROR(InferSequenceDims(c, &steps, &batch, &units, &four_units));
      ShapeHandle bias;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 1, &bias));
      TF_RETURN_IF_ERROR(c->Merge(four_units, c->Dim(bias, 0), &four_units));
      ShapeHandle sequence = c->MakeShape({steps, batch, units});
      ShapeHandle state = c->MakeShape({batch, units});
      c->set_output(0, sequence);
      c->set_output(1, state);
      c->set_output(2, state);
      c->set_output(3, sequence);
      c->set_output(4, c->MakeShape({steps, batch, four_units}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The Phased LSTM recurrence over a whole sequence, time-major, gate columns [i, f, o, j].

x: [steps, batch, input_size].
k: the time gate, [steps, batch, units] or [steps, 1, units] when the batch shares it.
c0: initial c, [batch, units].
h0: initial h, [batch, units].
kernel: [input_size + units, 4 * units], rows [x, h].
bias: [4 * units].
h: h of every step, [steps, batch, units].
c_final: c after the last step (c0 when steps is 0).
h_final: h after the last step (h0 when steps is 0).
c: c of every step, saved for the gradient.
gates: the activated gates of every step, [steps, batch, 4 * units], saved for the gradient.
)doc");

REGISTER_OP("PhasedLSTMSequenceGrad")
    .Input("x: T")
    .Input("k: T")
    .Input("c0: T")
    .Input("h0: T")
    .Input("kernel: T")
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
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle steps, batch, units, four_units;
      TF_RETURN_IF_ERROR(InferSequenceDims(c, &steps, &batch, &units, &four_units));
      for (int i = 0; i < 5; ++i) c->set_output(i, c->input(i));
      c->set_output(5, c->Vector(four_units));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gradient of PhasedLSTMSequence with respect to x, k (summed over the batch when k is shared),
c0, h0, kernel and bias, given the forward's inputs and outputs and the gradients dh (every
step's h), dc_final and dh_final.
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

// The forward recurrence for rows [b0, b1) of the batch.
template <typename T>
void ForwardRows(const Dims& d, const T* x, const T* k, const T* c0, const T* h0,
                 const T* kernel, const T* bias, T* h, T* c, T* gates, int64_t b0, int64_t b1) {
  const int64_t rows = b1 - b0, n = d.units, in = d.input_size, batch = d.batch;
  if (rows == 0) return;
  ConstMatrixMap<T> w(kernel, in + n, 4 * n);
  ConstArrayMap<T> bias_sigmoid(bias, 3 * n), bias_j(bias + 3 * n, n);
  const int64_t k_row_stride = d.k_batch == 1 ? 0 : n;
  // [x_t, h_{t-1}] of these rows: h is written here as it is computed.
  Matrix<T> xh(rows, in + n);
  xh.rightCols(n) = ConstMatrixMap<T>(h0 + b0 * n, rows, n);
  Array<T> c_lstm(n);
  const T* c_prev = c0 + b0 * n;
  for (int64_t t = 0; t < d.steps; ++t) {
    const int64_t first = t * batch + b0;  // the first row of this block at step t
    if (in > 0) xh.leftCols(in) = ConstMatrixMap<T>(x + first * in, rows, in);
    T* z = gates + first * 4 * n;
    MatrixMap<T>(z, rows, 4 * n).noalias() = xh * w;
    const T* k_t = k + (t * d.k_batch + (d.k_batch == 1 ? 0 : b0)) * n;
    T* c_t = c + first * n;
    T* h_t = h + first * n;
    for (int64_t r = 0; r < rows; ++r) {
      T* g = z + r * 4 * n;
      ArrayMap<T> sigmoids(g, 3 * n), j(g + 3 * n, n);
      sigmoids = (sigmoids + bias_sigmoid).logistic();
      j = (j + bias_j).tanh();
      ConstArrayMap<T> i(g, n), f(g + n, n), o(g + 2 * n, n);
      ConstArrayMap<T> c_r(c_prev + r * n, n), k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> h_prev(xh.row(r).data() + in, n), h_r(h_t + r * n, n);
      c_lstm = f * c_r + i * j;
      ArrayMap<T>(c_t + r * n, n) = c_r + k_r * (c_lstm - c_r);
      h_r = h_prev + k_r * (o * c_lstm.tanh() - h_prev);
      h_prev = h_r;
    }
    c_prev = c_t;
  }
}

template <typename T>
class PhasedLSTMSequenceOp : public OpKernel {
 public:
  explicit PhasedLSTMSequenceOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    if (!GetDims(ctx, &d)) return;
    if (!CheckShape(ctx, 5, "bias", TensorShape({4 * d.units}))) return;
    const TensorShape sequence({d.steps, d.batch, d.units});
    const TensorShape state({d.batch, d.units});
    Tensor *h, *c_final, *h_final, *c, *gates;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, sequence, &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, state, &c_final));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, state, &h_final));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, sequence, &c));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output(4, TensorShape({d.steps, d.batch, 4 * d.units}), &gates));
    const T* x = ctx->input(0).flat<T>().data();
    const T* k = ctx->input(1).flat<T>().data();
    const T* c0 = ctx->input(2).flat<T>().data();
    const T* h0 = ctx->input(3).flat<T>().data();
    const T* kernel = ctx->input(4).flat<T>().data();
    const T* bias = ctx->input(5).flat<T>().data();
    T* h_out = h->flat<T>().data();
    T* c_out = c->flat<T>().data();
    T* gates_out = gates->flat<T>().data();
    ForEachShard(ctx, NumShards(ctx, d.batch), d.batch, [&](int, int64_t b0, int64_t b1) {
      ForwardRows<T>(d, x, k, c0, h0, kernel, bias, h_out, c_out, gates_out, b0, b1);
    });
    const int64_t last = (d.steps - 1) * d.batch * d.units, size = d.batch * d.units;
    std::copy_n(d.steps > 0 ? c_out + last : c0, size, c_final->flat<T>().data());
    std::copy_n(d.steps > 0 ? h_out + last : h0, size, h_final->flat<T>().data());
  }
};

// What one block of rows contributes to the gradients that sum over the batch.
template <typename T>
struct Partials {
  Matrix<T> dkernel;  // [input_size + units, 4 units]
  Array<T> dbias;     // [4 units]
  Array<T> dk;        // [steps * units] when k is shared by the batch, else empty
};

// The backward recurrence for rows [b0, b1). Writes dx, dc0, dh0 (and dk when k is per
// example) for these rows; adds the rest to `partials`.
template <typename T>
void BackwardRows(const Dims& d, const T* x, const T* k, const T* c0, const T* h0,
                  const T* kernel, const T* h, const T* c, const T* gates, const T* dh_seq,
                  const T* dc_final, const T* dh_final, T* dx, T* dk, T* dc0, T* dh0,
                  Partials<T>* partials, int64_t b0, int64_t b1) {
  const int64_t rows = b1 - b0, n = d.units, in = d.input_size, batch = d.batch;
  if (rows == 0) return;
  const bool shared_k = d.k_batch == 1;
  ConstMatrixMap<T> w(kernel, in + n, 4 * n);
  const auto w_x = w.topRows(in);
  const auto w_h = w.bottomRows(n);
  const int64_t k_row_stride = shared_k ? 0 : n;
  // The gradients of c_t and h_t, carried backwards.
  Matrix<T> dc = ConstMatrixMap<T>(dc_final + b0 * n, rows, n);
  Matrix<T> dh = ConstMatrixMap<T>(dh_final + b0 * n, rows, n);
  Matrix<T> dz(rows, 4 * n), xh(rows, in + n);
  Array<T> c_lstm(n), tanh_c(n), dh_lstm(n), dc_lstm(n);
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    const int64_t first = t * batch + b0;
    const T* c_prev = t > 0 ? c + (first - batch) * n : c0 + b0 * n;
    const T* h_prev = t > 0 ? h + (first - batch) * n : h0 + b0 * n;
    const T* k_t = k + (t * d.k_batch + (shared_k ? 0 : b0)) * n;
    dh += ConstMatrixMap<T>(dh_seq + first * n, rows, n);
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = gates + (first + r) * 4 * n;
      ConstArrayMap<T> i(g, n), f(g + n, n), o(g + 2 * n, n), j(g + 3 * n, n);
      ConstArrayMap<T> c_r(c_prev + r * n, n), h_r(h_prev + r * n, n);
      ConstArrayMap<T> k_r(k_t + r * k_row_stride, n);
      ArrayMap<T> dc_r(dc.row(r).data(), n), dh_r(dh.row(r).data(), n);
      c_lstm = f * c_r + i * j;
      tanh_c = c_lstm.tanh();
      // c_t = c_prev + k (c~ - c_prev), h_t = h_prev + k (h~ - h_prev).
      if (shared_k) {
        ArrayMap<T>(partials->dk.data() + t * n, n) +=
            dc_r * (c_lstm - c_r) + dh_r * (o * tanh_c - h_r);
      } else {
        ArrayMap<T>(dk + (first + r) * n, n) = dc_r * (c_lstm - c_r) + dh_r * (o * tanh_c - h_r);
      }
      dh_lstm = k_r * dh_r;
      dc_lstm = k_r * dc_r + dh_lstm * o * (T(1) - tanh_c.square());
      T* dz_r = dz.row(r).data();
      ArrayMap<T>(dz_r, n) = dc_lstm * j * i * (T(1) - i);
      ArrayMap<T>(dz_r + n, n) = dc_lstm * c_r * f * (T(1) - f);
      ArrayMap<T>(dz_r + 2 * n, n) = dh_lstm * tanh_c * o * (T(1) - o);
      ArrayMap<T>(dz_r + 3 * n, n) = dc_lstm * i * (T(1) - j.square());
      dc_r = (T(1) - k_r) * dc_r + dc_lstm * f;
      dh_r = (T(1) - k_r) * dh_r;
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
  explicit PhasedLSTMSequenceGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Dims d;
    if (!GetDims(ctx, &d)) return;
    const TensorShape sequence({d.steps, d.batch, d.units});
    const TensorShape state({d.batch, d.units});
    if (!CheckShape(ctx, 5, "h", sequence) || !CheckShape(ctx, 6, "c", sequence) ||
        !CheckShape(ctx, 7, "gates", TensorShape({d.steps, d.batch, 4 * d.units})) ||
        !CheckShape(ctx, 8, "dh", sequence) || !CheckShape(ctx, 9, "dc_final", state) ||
        !CheckShape(ctx, 10, "dh_final", state)) {
      return;
    }
    Tensor *dx, *dk, *dc0, *dh0, *dkernel, *dbias;
    for (int index = 0; index < 5; ++index) {
      Tensor** out[] = {&dx, &dk, &dc0, &dh0, &dkernel};
      OP_REQUIRES_OK(ctx, ctx->allocate_output(index, ctx->input(index).shape(), out[index]));
    }
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({4 * d.units}), &dbias));
    auto in = [ctx](int index) { return ctx->input(index).flat<T>().data(); };
    const bool shared_k = d.k_batch == 1;
    const int shards = NumShards(ctx, d.batch);
    std::vector<Partials<T>> partials(shards);
    for (Partials<T>& p : partials) {
      p.dkernel = Matrix<T>::Zero(d.input_size + d.units, 4 * d.units);
      p.dbias = Array<T>::Zero(4 * d.units);
      p.dk = Array<T>::Zero(shared_k ? d.steps * d.units : 0);
    }
    T* dk_out = dk->flat<T>().data();
    ForEachShard(ctx, shards, d.batch, [&](int s, int64_t b0, int64_t b1) {
      BackwardRows<T>(d, in(0), in(1), in(2), in(3), in(4), in(5), in(6), in(7), in(8), in(9),
                      in(10), dx->flat<T>().data(), dk_out, dc0->flat<T>().data(),
                      dh0->flat<T>().data(), &partials[s], b0, b1);
    });
    MatrixMap<T> dkernel_out(dkernel->flat<T>().data(), d.input_size + d.units, 4 * d.units);
    ArrayMap<T> dbias_out(dbias->flat<T>().data(), 4 * d.units);
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

#define REGISTER(T)                                                                   \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("PhasedLSTMSequence").Device(DEVICE_CPU).TypeConstraint<T>("T"),           \
      PhasedLSTMSequenceOp<T>);                                                       \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("PhasedLSTMSequenceGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),       \
      PhasedLSTMSequenceGradOp<T>);

REGISTER(float);
REGISTER(double);
#undef REGISTER

}  // namespace
}  // namespace tensorflow
