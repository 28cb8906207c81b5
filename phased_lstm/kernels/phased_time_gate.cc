// The Phased LSTM time gate k for every step, row and unit, in one pass: for evaluation.
//
// Built on first use by phased_lstm/op_library.py against the installed TensorFlow and loaded
// with tf.load_op_library; phased_lstm/fused_rnn.py wraps the op and registers a gradient that
// raises. phased_lstm_rnn and phased_gru_rnn run it with forward_only=True, where the
// recurrence runs its forward-only op: computed in TensorFlow, the gate over a long sequence
// is a dozen element-wise ops, each a pass over [batch, steps, units] (FloorMod alone as long as
// half the recurrence on the frequency task's validation). Training keeps TensorFlow's gate,
// which TensorFlow differentiates.
//
// The formula is gate_math.time_gate's, with the same operations in the same order, so that k
// is TensorFlow's bit for bit. The caller passes the timing parameters already made valid
// (gate_math.fused_gate_parameters: period >= MIN_PERIOD and phase in the time's dtype,
// ratio_on clipped and the leak in the gate's dtype):
//
//   x = t - phase,  phi = floormod(x, period) / period      in the time's dtype (Ttime)
//   phi in the gate's dtype (T);  rising = 2 phi / ratio_on
//   k = rising       if phi < 0.5 ratio_on
//     = 2 - rising   if phi < ratio_on
//     = leak phi     otherwise
//
// floormod as TensorFlow's FloorMod for floats: m = fmod(x, period), plus period where m is
// non-zero and of the other sign. fmod is exact but slow (a loop over the exponents in libm),
// so the kernel first tries q = floor(x / period) and m = fma(-q, period, x): x - q period is
// rounded once, so where q is the floor of the exact quotient m equals TensorFlow's result
// (for x >= 0 both are the exact remainder; for x < 0 TensorFlow rounds fmod(x, period) +
// period, the same real number). Where x / period rounded up to the next integer (or q is
// not an integer's floor at all: float32 quotients beyond 2**24), x - q period lies outside
// [0, period) and rounds outside it too; those elements, and any m outside [0, period), take
// TensorFlow's formula. So k equals TensorFlow's for every input, and the fast form is
// vectorised (floor, fma and division over a row of units).
//
// Padding: with a live mask [batch, steps], k is 0 at every step that is not live (as k * live
// in TensorFlow), which carries the state unchanged through the recurrence.
//
// The rows (step, example) are independent: they are split between the intra-op threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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

REGISTER_OP("PhasedTimeGate")
    .Input("time: Ttime")
    .Input("period: Ttime")
    .Input("phase: Ttime")
    .Input("ratio_on: T")
    .Input("leak: T")
    .Input("live: bool")
    .Output("k: T")
    .Attr("T: {float, double}")
    .Attr("Ttime: {float, double}")
    .Attr("use_live: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle time, period, phase, ratio_on, leak, live;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &time));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &period));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &phase));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &ratio_on));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &leak));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 2, &live));
      DimensionHandle units = c->Dim(period, 0), steps = c->Dim(time, 1);
      TF_RETURN_IF_ERROR(c->Merge(units, c->Dim(phase, 0), &units));
      TF_RETURN_IF_ERROR(c->Merge(units, c->Dim(ratio_on, 0), &units));
      bool use_live;
      TF_RETURN_IF_ERROR(c->GetAttr("use_live", &use_live));
      DimensionHandle batch = c->Dim(time, 0);
      if (use_live) {
        TF_RETURN_IF_ERROR(c->Merge(steps, c->Dim(live, 1), &steps));
        batch = c->Dim(live, 0);
      }
      c->set_output(0, c->MakeShape({steps, batch, units}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The Phased LSTM time gate k of every step, time-major, for evaluation (it has no gradient):
gate_math.time_gate's values bit for bit, with k = 0 at the steps that live marks as padding.

time: timestamps [batch or 1, steps, 1 or units] (one per example, or per unit; a batch of 1
  when the batch shares them). Every one must be finite.
period: tau [units], already >= MIN_PERIOD, in the time's dtype.
phase: s [units], in the time's dtype.
ratio_on: r_on [units], already in [MIN_RATIO_ON, 1], in the gate's dtype.
leak: the closed gate's slope, a scalar of the gate's dtype.
live: with use_live, [batch, steps]: false at padded steps, whose k is 0; else [0, 0].
k: [steps, batch, units]; [steps, 1, units] when time has a batch of 1 and there is no live.
use_live: whether live is read.
)doc");

// g++ vectorises floor only without trapping math, which changes no value (it allows no
// reassociation nor contraction); clang's default is the same. Functions with other options
// are not inlined here (<cmath>'s float overloads), hence these.
#if defined(__GNUC__) && !defined(__clang__)
#define PHASED_NO_TRAPPING_MATH __attribute__((optimize("no-trapping-math")))
#else
#define PHASED_NO_TRAPPING_MATH
#endif

PHASED_NO_TRAPPING_MATH inline float Floor(float x) { return __builtin_floorf(x); }
PHASED_NO_TRAPPING_MATH inline double Floor(double x) { return __builtin_floor(x); }
// a b + c rounded once.
PHASED_NO_TRAPPING_MATH inline float Fma(float a, float b, float c) {
  return __builtin_fmaf(a, b, c);
}
PHASED_NO_TRAPPING_MATH inline double Fma(double a, double b, double c) {
  return __builtin_fma(a, b, c);
}

// phi = (x - q period) / period with q = floor(x / period), x = t - phase (see the header),
// vectorised over a row; returns whether every remainder fell in [0, period).
template <typename Ttime, bool PerUnitTime>
PHASED_NO_TRAPPING_MATH bool FastCycleRow(const Ttime* time, const Ttime* period,
                                          const Ttime* phase, int64_t units, Ttime* cycle) {
  int exact = 1;
  for (int64_t u = 0; u < units; ++u) {
    const Ttime x = time[PerUnitTime ? u : 0] - phase[u];
    const Ttime q = Floor(x / period[u]);
    const Ttime m = Fma(-q, period[u], x);
    exact &= static_cast<int>(m >= Ttime(0)) & static_cast<int>(m < period[u]);
    cycle[u] = m / period[u];
  }
  return exact != 0;
}

// TensorFlow's FloorMod for floating point (its google_floor_fmod), element by element.
template <typename Ttime>
Ttime FloorMod(Ttime x, Ttime y) {
  const Ttime trunc_mod = std::fmod(x, y);
  return trunc_mod != Ttime(0) && ((y < Ttime(0)) != (trunc_mod < Ttime(0))) ? trunc_mod + y
                                                                             : trunc_mod;
}

// The row again, with TensorFlow's formula where FastCycleRow's remainder fell outside
// [0, period) (the same test, the same values).
template <typename Ttime, bool PerUnitTime>
PHASED_NO_TRAPPING_MATH void ExactCycleRow(const Ttime* time, const Ttime* period,
                                           const Ttime* phase, int64_t units, Ttime* cycle) {
  for (int64_t u = 0; u < units; ++u) {
    const Ttime x = time[PerUnitTime ? u : 0] - phase[u];
    const Ttime q = Floor(x / period[u]);
    const Ttime m = Fma(-q, period[u], x);
    if (!(m >= Ttime(0) && m < period[u])) cycle[u] = FloorMod(x, period[u]) / period[u];
  }
}

template <typename T, typename Ttime>
void GateRow(const Ttime* cycle, const T* ratio_on, const T* half_ratio_on, T leak,
             int64_t units, T* k) {
  for (int64_t u = 0; u < units; ++u) {
    const T phi = static_cast<T>(cycle[u]);
    const T rising = T(2) * phi / ratio_on[u];
    k[u] = phi < half_ratio_on[u] ? rising : (phi < ratio_on[u] ? T(2) - rising : leak * phi);
  }
}

template <typename T, typename Ttime>
class PhasedTimeGateOp : public OpKernel {
 public:
  explicit PhasedTimeGateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_live", &use_live_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& time = ctx->input(0);
    const Tensor& period = ctx->input(1);
    const Tensor& phase = ctx->input(2);
    const Tensor& ratio_on = ctx->input(3);
    const Tensor& leak = ctx->input(4);
    const Tensor& live = ctx->input(5);
    OP_REQUIRES(ctx, time.dims() == 3 && period.dims() == 1 && leak.dims() == 0,
                errors::InvalidArgument(
                    "PhasedTimeGate expects time [batch or 1, steps, 1 or units], period "
                    "[units] and a scalar leak; got time ", time.shape().DebugString(),
                    ", period ", period.shape().DebugString(), ", leak ",
                    leak.shape().DebugString()));
    const int64_t units = period.dim_size(0);
    const int64_t time_batch = time.dim_size(0), steps = time.dim_size(1);
    const int64_t time_units = time.dim_size(2);
    OP_REQUIRES(ctx, phase.shape() == period.shape() && ratio_on.shape() == period.shape() &&
                         (time_units == 1 || time_units == units),
                errors::InvalidArgument(
                    "PhasedTimeGate: period, phase and ratio_on must be [units] and time "
                    "[batch or 1, steps, 1 or units]; got period ", period.shape().DebugString(),
                    ", phase ", phase.shape().DebugString(), ", ratio_on ",
                    ratio_on.shape().DebugString(), ", time ", time.shape().DebugString()));
    int64_t batch = time_batch;
    if (use_live_) {
      OP_REQUIRES(ctx, live.dims() == 2 && live.dim_size(1) == steps &&
                           (time_batch == 1 || time_batch == live.dim_size(0)),
                  errors::InvalidArgument(
                      "PhasedTimeGate: live must be [batch, steps] for time [batch or 1, steps, "
                      "...]; got live ", live.shape().DebugString(), ", time ",
                      time.shape().DebugString()));
      batch = live.dim_size(0);
    } else {
      OP_REQUIRES(ctx, live.shape() == TensorShape({0, 0}),
                  errors::InvalidArgument("PhasedTimeGate: live must be [0, 0] without "
                                          "use_live; got ", live.shape().DebugString()));
    }
    const Ttime* t = time.flat<Ttime>().data();
    // As time_gate.check_finite_time: a NaN or infinite timestamp would make every later
    // output NaN. All of them, padding included, as there.
    const int64_t time_size = time.NumElements();
    bool finite = true;
    for (int64_t i = 0; i < time_size; ++i) finite &= std::isfinite(t[i]);
    OP_REQUIRES(ctx, finite,
                errors::InvalidArgument(
                    "Phased LSTM time gate: every timestamp must be finite (NaN or inf found)"));

    Tensor* k = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({steps, batch, units}), &k));
    const Ttime* tau = period.flat<Ttime>().data();
    const Ttime* s = phase.flat<Ttime>().data();
    const T* r = ratio_on.flat<T>().data();
    std::vector<T> half_r(units);
    for (int64_t u = 0; u < units; ++u) half_r[u] = T(0.5) * r[u];  // TensorFlow's 0.5 * r_on
    const T alpha = leak.scalar<T>()();
    const bool* is_live = use_live_ ? live.flat<bool>().data() : nullptr;
    T* out = k->flat<T>().data();
    const bool per_unit = time_units != 1;

    // Rows of the output, [steps, batch]: row = step * batch + example.
    auto work = [&](int64_t first, int64_t end) {
      std::vector<Ttime> cycle(units);
      for (int64_t row = first; row < end; ++row) {
        const int64_t step = row / batch, example = row % batch;
        T* k_row = out + row * units;
        if (is_live != nullptr && !is_live[example * steps + step]) {
          std::fill_n(k_row, units, T(0));
          continue;
        }
        const Ttime* t_row =
            t + ((time_batch == 1 ? 0 : example) * steps + step) * time_units;
        if (per_unit) {
          if (!FastCycleRow<Ttime, true>(t_row, tau, s, units, cycle.data())) {
            ExactCycleRow<Ttime, true>(t_row, tau, s, units, cycle.data());
          }
        } else if (!FastCycleRow<Ttime, false>(t_row, tau, s, units, cycle.data())) {
          ExactCycleRow<Ttime, false>(t_row, tau, s, units, cycle.data());
        }
        GateRow<T, Ttime>(cycle.data(), r, half_r.data(), alpha, units, k_row);
      }
    };
    // About a dozen operations per element, three of them divisions.
    const int64_t cost_per_row = 40 * units;
    Shard(ctx->device()->tensorflow_cpu_worker_threads()->num_threads,
          ctx->device()->tensorflow_cpu_worker_threads()->workers, steps * batch, cost_per_row,
          work);
  }

 private:
  bool use_live_;
};

#define REGISTER(T, Ttime)                                                                \
  REGISTER_KERNEL_BUILDER(Name("PhasedTimeGate")                                          \
                              .Device(DEVICE_CPU)                                         \
                              .TypeConstraint<T>("T")                                     \
                              .TypeConstraint<Ttime>("Ttime"),                            \
                          PhasedTimeGateOp<T, Ttime>);

REGISTER(float, float);
REGISTER(float, double);
REGISTER(double, float);
REGISTER(double, double);
#undef REGISTER

}  // namespace
}  // namespace tensorflow
