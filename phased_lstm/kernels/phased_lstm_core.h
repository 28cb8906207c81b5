// The Phased LSTM recurrence over a whole sequence, forward and gradient, on raw pointers.
//
// The backend-free core of the fused kernels: phased_lstm_sequence.cc (the TensorFlow ops) and
// phased_lstm_xla_ffi.cc (the XLA FFI handlers that JAX calls) include it and add only their
// shape checks, memory and threads. The equations, the layouts and the split of the batch into
// blocks are documented in phased_lstm_sequence.cc. Needs Eigen/Core on the include path.

#ifndef PHASED_LSTM_KERNELS_PHASED_LSTM_CORE_H_
#define PHASED_LSTM_KERNELS_PHASED_LSTM_CORE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "Eigen/Core"
#include "kernel_common.h"

namespace phased_lstm {

// The weights of one call: w_c_if and w_c_o are null without peepholes.
template <typename T>
struct Weights {
  const T* kernel;  // [input_size + units, 4 units]
  const T* bias;    // [4 units]
  const T* w_c_if;  // [units, 2 units]
  const T* w_c_o;   // [units, units]
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

// The forward over the whole batch: ForwardRows for each of `shards` blocks.
template <typename T, bool SaveForGradient>
void Forward(const Dims& d, bool use_peepholes, const T* x, const T* k, const T* c0,
             const T* h0, const Weights<T>& weights, const ForwardOutputs<T>& out, int shards,
             const ShardRunner& run) {
  run(shards, d.batch, [&](int, int64_t b0, int64_t b1) {
    (use_peepholes ? ForwardRows<T, true, SaveForGradient>
                   : ForwardRows<T, false, SaveForGradient>)(d, x, k, c0, h0, weights, out, b0,
                                                             b1);
  });
}

// What the gradient reads: the forward's inputs and saved outputs, and the outputs' gradients.
template <typename T>
struct BackwardInputs {
  const T *x, *k, *c0, *h0;  // as the forward's
  const T *h, *c, *gates;    // the forward's outputs
  const T *dh, *dc_final, *dh_final;
};

// Where the gradient writes, each shaped as its variable (dw_c_if and dw_c_o [0, 0] and unused
// without peepholes).
template <typename T>
struct Gradients {
  T *dx, *dk, *dc0, *dh0, *dkernel, *dbias, *dw_c_if, *dw_c_o;
};

// The gradient over the whole batch: BackwardRows for each of `shards` blocks, then the blocks'
// partial sums added up in block order (the same sums whatever thread ran which block).
template <typename T>
void Backward(const Dims& d, bool use_peepholes, T gate_gradient_clip, const Weights<T>& weights,
              const BackwardInputs<T>& in, const Gradients<T>& out, int shards,
              const ShardRunner& run) {
  const bool shared_k = d.k_batch == 1;
  const int64_t n = use_peepholes ? d.units : 0;  // the peephole matrices' rows
  std::vector<Partials<T>> partials(shards);
  for (Partials<T>& p : partials) {
    p.dkernel = Matrix<T>::Zero(d.input_size + d.units, 4 * d.units);
    p.dbias = Array<T>::Zero(4 * d.units);
    p.dk = Array<T>::Zero(shared_k ? d.steps * d.units : 0);
    p.dw_c_if = Matrix<T>::Zero(n, 2 * n);
    p.dw_c_o = Matrix<T>::Zero(n, n);
  }
  run(shards, d.batch, [&](int s, int64_t b0, int64_t b1) {
    (use_peepholes ? BackwardRows<T, true> : BackwardRows<T, false>)(
        d, in.x, in.k, in.c0, in.h0, weights, in.h, in.c, in.gates, in.dh, in.dc_final,
        in.dh_final, gate_gradient_clip, out.dx, out.dk, out.dc0, out.dh0, &partials[s], b0, b1);
  });
  MatrixMap<T> dkernel(out.dkernel, d.input_size + d.units, 4 * d.units);
  ArrayMap<T> dbias(out.dbias, 4 * d.units);
  MatrixMap<T> dw_c_if(out.dw_c_if, n, 2 * n);
  MatrixMap<T> dw_c_o(out.dw_c_o, n, n);
  dkernel = partials[0].dkernel;
  dbias = partials[0].dbias;
  dw_c_if = partials[0].dw_c_if;
  dw_c_o = partials[0].dw_c_o;
  if (shared_k) ArrayMap<T>(out.dk, d.steps * d.units) = partials[0].dk;
  for (int s = 1; s < shards; ++s) {
    dkernel += partials[s].dkernel;
    dbias += partials[s].dbias;
    dw_c_if += partials[s].dw_c_if;
    dw_c_o += partials[s].dw_c_o;
    if (shared_k) ArrayMap<T>(out.dk, d.steps * d.units) += partials[s].dk;
  }
}

}  // namespace phased_lstm

#endif  // PHASED_LSTM_KERNELS_PHASED_LSTM_CORE_H_
