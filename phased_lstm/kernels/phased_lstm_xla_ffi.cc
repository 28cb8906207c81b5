// The Phased LSTM recurrence over a whole sequence as XLA FFI handlers, for JAX on the CPU.
//
// Built on first use by phased_lstm/jax_ffi.py (against JAX's FFI headers and an Eigen found
// without importing TensorFlow), loaded with ctypes and registered with
// jax.ffi.register_ffi_target; phased_lstm/jax_ffi.py wraps the handlers in a jax.custom_vjp.
// The recurrence is phased_lstm_core.h's, the same code as the TensorFlow ops
// (phased_lstm_sequence.cc, which documents the equations and layouts). Three handlers, each
// for float32 and float64 (the dtype of x; every buffer must share it):
//
//   PhasedLstmForward: x, k, c0, h0, kernel, bias, w_c_if, w_c_o -> h, c_final, h_final, c,
//     gates (c and gates saved for the gradient), as the op PhasedLSTMSequence.
//   PhasedLstmForwardOnly: the same inputs -> h, c_final, h_final, without writing c and gates
//     (PhasedLSTMSequenceInference): the same operations on the same values, equal to the
//     forward's outputs to rounding (bit for bit where XLA aligns its buffers as TensorFlow).
//   PhasedLstmGrad: x, k, c0, h0, kernel, w_c_if, w_c_o, h, c, gates, dh, dc_final, dh_final
//     -> dx, dk, dc0, dh0, dkernel, dbias, dw_c_if, dw_c_o (PhasedLSTMSequenceGrad).
//
// Attributes: use_peepholes (bool; without peepholes w_c_if and w_c_o are [0, 0]), threads
// (int64 >= 1: the most blocks the batch is split into, one std::thread each: JAX's CPU client
// lends custom calls no intra-op pool) and, for the gradient, gate_gradient_clip (float >= 0).

#include <cmath>
#include <cstdint>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "phased_lstm_core.h"
#include "xla/ffi/api/ffi.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace ffi = xla::ffi;

namespace phased_lstm {
namespace {

// Runs the blocks on threads of their own, the first on the calling thread. Where no more
// threads can be started, the calling thread runs the blocks left. An exception in any block
// (std::bad_alloc) is rethrown here once every thread has joined, so that the handler can
// return it as an error instead of terminating the process.
void RunOnThreads(int shards, int64_t batch, const ShardWork& work) {
  std::vector<std::exception_ptr> errors(shards);
  auto block = [&](int s) {
    try {
      work(s, batch * s / shards, batch * (s + 1) / shards);
    } catch (...) {
      errors[s] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(shards - 1);
  int started = 1;
  try {
    for (; started < shards; ++started) threads.emplace_back(block, started);
  } catch (const std::system_error&) {
    // The process may start no more threads: the blocks left run below.
  }
  for (int s = started; s < shards; ++s) block(s);
  block(0);
  for (std::thread& thread : threads) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

// Runs the kernel, turning a C++ exception into the handler's error.
template <typename Kernel>
ffi::Error Guarded(const Kernel& kernel) {
  try {
    kernel();
  } catch (const std::exception& exception) {
    return ffi::Error::Internal(std::string("PhasedLstm: ") + exception.what());
  }
  return ffi::Error::Success();
}

// Asks Linux to back the 2 MiB-aligned part of a result buffer with huge pages before the
// kernel first writes it. XLA's CPU client maps large buffers afresh for each call (the saved
// gates alone are [steps, batch, 4 units]), and faulting them in 4 KiB pages costs more than
// the recurrence (measured: docs/speed.md). A hint only: where transparent huge pages are off,
// or the call fails, nothing changes.
void AdviseHugePages(ffi::Result<ffi::AnyBuffer>& buffer) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(buffer->untyped_data());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (begin + buffer->size_bytes()) & ~(kHuge - 1);
  if (end > first) madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE);
#endif
}

std::string ShapeText(const ffi::AnyBuffer& buffer) {
  std::string text = "[";
  for (int64_t size : buffer.dimensions()) {
    text += (text.size() > 1 ? ", " : "") + std::to_string(size);
  }
  return text + "]";
}

bool HasShape(const ffi::AnyBuffer& buffer, std::vector<int64_t> want) {
  const auto dims = buffer.dimensions();
  return std::vector<int64_t>(dims.begin(), dims.end()) == want;
}

// The sizes of a call, from x, k, c0, h0 and kernel, checked against each other.
ffi::Error GetDims(const ffi::AnyBuffer& x, const ffi::AnyBuffer& k, const ffi::AnyBuffer& c0,
                   const ffi::AnyBuffer& h0, const ffi::AnyBuffer& kernel, Dims* dims) {
  const std::string shapes = "x " + ShapeText(x) + " [steps, batch, input_size], k " +
                             ShapeText(k) + " [steps, batch or 1, units], c0 " + ShapeText(c0) +
                             " and h0 " + ShapeText(h0) + " [batch, units], kernel " +
                             ShapeText(kernel) + " [input_size + units, 4 units]";
  if (x.dimensions().size() != 3 || k.dimensions().size() != 3 || c0.dimensions().size() != 2 ||
      h0.dimensions().size() != 2 || kernel.dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("PhasedLstm: wrong ranks: " + shapes);
  }
  Dims& d = *dims;
  d.steps = x.dimensions()[0];
  d.batch = x.dimensions()[1];
  d.input_size = x.dimensions()[2];
  d.units = c0.dimensions()[1];
  d.k_batch = k.dimensions()[1];
  if (!HasShape(c0, {d.batch, d.units}) || !HasShape(h0, {d.batch, d.units}) ||
      k.dimensions()[0] != d.steps || (d.k_batch != d.batch && d.k_batch != 1) ||
      k.dimensions()[2] != d.units || !HasShape(kernel, {d.input_size + d.units, 4 * d.units})) {
    return ffi::Error::InvalidArgument("PhasedLstm: inconsistent shapes: " + shapes);
  }
  return ffi::Error::Success();
}

// An error unless every buffer has x's dtype, float32 or float64, and threads >= 1.
ffi::Error CheckDtypes(const std::vector<const ffi::AnyBuffer*>& buffers, int64_t threads) {
  const ffi::DataType dtype = buffers[0]->element_type();
  if (dtype != ffi::DataType::F32 && dtype != ffi::DataType::F64) {
    return ffi::Error::InvalidArgument("PhasedLstm: float32 or float64 only");
  }
  for (const ffi::AnyBuffer* buffer : buffers) {
    if (buffer->element_type() != dtype) {
      return ffi::Error::InvalidArgument("PhasedLstm: every input must have x's dtype");
    }
  }
  if (threads < 1) return ffi::Error::InvalidArgument("PhasedLstm: threads must be >= 1");
  return ffi::Error::Success();
}

ffi::Error CheckPeepholes(const ffi::AnyBuffer& w_c_if, const ffi::AnyBuffer& w_c_o,
                          bool use_peepholes, const Dims& d) {
  const int64_t n = use_peepholes ? d.units : 0;
  if (!HasShape(w_c_if, {n, 2 * n}) || !HasShape(w_c_o, {n, n})) {
    return ffi::Error::InvalidArgument(
        "PhasedLstm: w_c_if " + ShapeText(w_c_if) + " and w_c_o " + ShapeText(w_c_o) +
        " must be [units, 2 units] and [units, units] with peepholes, else [0, 0]");
  }
  return ffi::Error::Success();
}

// An error unless each result has its shape in `shapes` and the dtype `dtype`: the kernel
// writes them through pointers sized from the inputs.
ffi::Error CheckResults(const std::vector<ffi::Result<ffi::AnyBuffer>*>& results,
                        const std::vector<std::vector<int64_t>>& shapes, ffi::DataType dtype) {
  for (size_t i = 0; i < results.size(); ++i) {
    const ffi::AnyBuffer& result = **results[i];
    if (result.element_type() != dtype || !HasShape(result, shapes[i])) {
      return ffi::Error::InvalidArgument("PhasedLstm: result " + std::to_string(i) +
                                         " has shape " + ShapeText(result) +
                                         " or a dtype other than x's");
    }
  }
  return ffi::Error::Success();
}

template <typename T>
const T* In(const ffi::AnyBuffer& buffer) {
  return static_cast<const T*>(buffer.untyped_data());
}

template <typename T>
T* Out(ffi::Result<ffi::AnyBuffer>& buffer) {
  return static_cast<T*>(buffer->untyped_data());
}

template <bool SaveForGradient>
ffi::Error ForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::AnyBuffer c0, ffi::AnyBuffer h0,
                       ffi::AnyBuffer kernel, ffi::AnyBuffer bias, ffi::AnyBuffer w_c_if,
                       ffi::AnyBuffer w_c_o, ffi::RemainingRets rets, bool use_peepholes,
                       int64_t threads) {
  Dims d;
  ffi::Error error = GetDims(x, k, c0, h0, kernel, &d);
  if (error.failure()) return error;
  error = CheckDtypes({&x, &k, &c0, &h0, &kernel, &bias, &w_c_if, &w_c_o}, threads);
  if (error.failure()) return error;
  if (!HasShape(bias, {4 * d.units})) {
    return ffi::Error::InvalidArgument("PhasedLstm: bias must be [4 units]; got " +
                                       ShapeText(bias));
  }
  error = CheckPeepholes(w_c_if, w_c_o, use_peepholes, d);
  if (error.failure()) return error;
  if (rets.size() != (SaveForGradient ? 5 : 3)) {
    return ffi::Error::InvalidArgument("PhasedLstm: wrong number of results");
  }
  std::vector<ffi::Result<ffi::AnyBuffer>> out;
  for (size_t i = 0; i < rets.size(); ++i) {
    ffi::ErrorOr<ffi::Result<ffi::AnyBuffer>> ret = rets.get<ffi::AnyBuffer>(i);
    if (ret.has_error()) return ret.error();
    out.push_back(ret.value());
  }
  const std::vector<int64_t> sequence{d.steps, d.batch, d.units}, state{d.batch, d.units};
  std::vector<ffi::Result<ffi::AnyBuffer>*> results;
  for (ffi::Result<ffi::AnyBuffer>& result : out) results.push_back(&result);
  error = CheckResults(results, {sequence, state, state, sequence,
                                 {d.steps, d.batch, 4 * d.units}},
                       x.element_type());
  if (error.failure()) return error;
  for (ffi::Result<ffi::AnyBuffer>& result : out) AdviseHugePages(result);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const Weights<T> weights{In<T>(kernel), In<T>(bias),
                             use_peepholes ? In<T>(w_c_if) : nullptr,
                             use_peepholes ? In<T>(w_c_o) : nullptr};
    const ForwardOutputs<T> outputs{Out<T>(out[0]), Out<T>(out[1]), Out<T>(out[2]),
                                    SaveForGradient ? Out<T>(out[3]) : nullptr,
                                    SaveForGradient ? Out<T>(out[4]) : nullptr};
    Forward<T, SaveForGradient>(d, use_peepholes, In<T>(x), In<T>(k), In<T>(c0), In<T>(h0),
                                weights, outputs, NumShards(static_cast<int>(threads), d.batch),
                                RunOnThreads);
  };
  return Guarded([&] {
    if (x.element_type() == ffi::DataType::F32) {
      run(float{0});
    } else {
      run(double{0});
    }
  });
}

ffi::Error GradImpl(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::AnyBuffer c0, ffi::AnyBuffer h0,
                    ffi::AnyBuffer kernel, ffi::AnyBuffer w_c_if, ffi::AnyBuffer w_c_o,
                    ffi::AnyBuffer h, ffi::AnyBuffer c, ffi::AnyBuffer gates, ffi::AnyBuffer dh,
                    ffi::AnyBuffer dc_final, ffi::AnyBuffer dh_final,
                    ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dk,
                    ffi::Result<ffi::AnyBuffer> dc0, ffi::Result<ffi::AnyBuffer> dh0,
                    ffi::Result<ffi::AnyBuffer> dkernel, ffi::Result<ffi::AnyBuffer> dbias,
                    ffi::Result<ffi::AnyBuffer> dw_c_if, ffi::Result<ffi::AnyBuffer> dw_c_o,
                    bool use_peepholes, float gate_gradient_clip, int64_t threads) {
  Dims d;
  ffi::Error error = GetDims(x, k, c0, h0, kernel, &d);
  if (error.failure()) return error;
  error = CheckDtypes(
      {&x, &k, &c0, &h0, &kernel, &w_c_if, &w_c_o, &h, &c, &gates, &dh, &dc_final, &dh_final},
      threads);
  if (error.failure()) return error;
  error = CheckPeepholes(w_c_if, w_c_o, use_peepholes, d);
  if (error.failure()) return error;
  const std::vector<int64_t> sequence{d.steps, d.batch, d.units}, state{d.batch, d.units};
  if (!HasShape(h, sequence) || !HasShape(c, sequence) || !HasShape(dh, sequence) ||
      !HasShape(gates, {d.steps, d.batch, 4 * d.units}) || !HasShape(dc_final, state) ||
      !HasShape(dh_final, state)) {
    return ffi::Error::InvalidArgument(
        "PhasedLstm: h, c and dh must be [steps, batch, units], gates [steps, batch, 4 units], "
        "dc_final and dh_final [batch, units]");
  }
  if (!(gate_gradient_clip >= 0) || !std::isfinite(gate_gradient_clip)) {
    return ffi::Error::InvalidArgument(
        "PhasedLstm: gate_gradient_clip must be finite and >= 0 (0: no clipping); got " +
        std::to_string(gate_gradient_clip));
  }
  const int64_t n = use_peepholes ? d.units : 0;
  error = CheckResults({&dx, &dk, &dc0, &dh0, &dkernel, &dbias, &dw_c_if, &dw_c_o},
                       {{d.steps, d.batch, d.input_size}, {d.steps, d.k_batch, d.units}, state,
                        state, {d.input_size + d.units, 4 * d.units}, {4 * d.units}, {n, 2 * n},
                        {n, n}},
                       x.element_type());
  if (error.failure()) return error;
  for (ffi::Result<ffi::AnyBuffer>* buffer : {&dx, &dk, &dc0, &dh0}) AdviseHugePages(*buffer);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const Weights<T> weights{In<T>(kernel), nullptr, use_peepholes ? In<T>(w_c_if) : nullptr,
                             use_peepholes ? In<T>(w_c_o) : nullptr};
    const BackwardInputs<T> inputs{In<T>(x), In<T>(k),     In<T>(c0), In<T>(h0),
                                   In<T>(h), In<T>(c),     In<T>(gates), In<T>(dh),
                                   In<T>(dc_final), In<T>(dh_final)};
    const Gradients<T> gradients{Out<T>(dx),      Out<T>(dk),    Out<T>(dc0),
                                 Out<T>(dh0),     Out<T>(dkernel), Out<T>(dbias),
                                 Out<T>(dw_c_if), Out<T>(dw_c_o)};
    Backward<T>(d, use_peepholes, static_cast<T>(gate_gradient_clip), weights, inputs,
                gradients, NumShards(static_cast<int>(threads), d.batch), RunOnThreads);
  };
  return Guarded([&] {
    if (x.element_type() == ffi::DataType::F32) {
      run(float{0});
    } else {
      run(double{0});
    }
  });
}

}  // namespace
}  // namespace phased_lstm

// The library is built with -fvisibility=hidden: the three handlers are its only exports.
#define PHASED_LSTM_EXPORT extern "C" __attribute__((visibility("default")))
PHASED_LSTM_EXPORT XLA_FFI_Error* PhasedLstmForward(XLA_FFI_CallFrame* call_frame);
PHASED_LSTM_EXPORT XLA_FFI_Error* PhasedLstmForwardOnly(XLA_FFI_CallFrame* call_frame);
PHASED_LSTM_EXPORT XLA_FFI_Error* PhasedLstmGrad(XLA_FFI_CallFrame* call_frame);

#define PHASED_LSTM_FORWARD_BINDING                                                       \
  ffi::Ffi::Bind()                                                                        \
      .Arg<ffi::AnyBuffer>() /* x */                                                      \
      .Arg<ffi::AnyBuffer>() /* k */                                                      \
      .Arg<ffi::AnyBuffer>() /* c0 */                                                     \
      .Arg<ffi::AnyBuffer>() /* h0 */                                                     \
      .Arg<ffi::AnyBuffer>() /* kernel */                                                 \
      .Arg<ffi::AnyBuffer>() /* bias */                                                   \
      .Arg<ffi::AnyBuffer>() /* w_c_if */                                                 \
      .Arg<ffi::AnyBuffer>() /* w_c_o */                                                  \
      .RemainingRets()       /* h, c_final, h_final (, c, gates) */                       \
      .Attr<bool>("use_peepholes")                                                        \
      .Attr<int64_t>("threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(PhasedLstmForward, phased_lstm::ForwardImpl<true>,
                              PHASED_LSTM_FORWARD_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(PhasedLstmForwardOnly, phased_lstm::ForwardImpl<false>,
                              PHASED_LSTM_FORWARD_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(PhasedLstmGrad, phased_lstm::GradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // c0
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // kernel
                                  .Arg<ffi::AnyBuffer>()  // w_c_if
                                  .Arg<ffi::AnyBuffer>()  // w_c_o
                                  .Arg<ffi::AnyBuffer>()  // h
                                  .Arg<ffi::AnyBuffer>()  // c
                                  .Arg<ffi::AnyBuffer>()  // gates
                                  .Arg<ffi::AnyBuffer>()  // dh
                                  .Arg<ffi::AnyBuffer>()  // dc_final
                                  .Arg<ffi::AnyBuffer>()  // dh_final
                                  .Ret<ffi::AnyBuffer>()  // dx
                                  .Ret<ffi::AnyBuffer>()  // dk
                                  .Ret<ffi::AnyBuffer>()  // dc0
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Ret<ffi::AnyBuffer>()  // dkernel
                                  .Ret<ffi::AnyBuffer>()  // dbias
                                  .Ret<ffi::AnyBuffer>()  // dw_c_if
                                  .Ret<ffi::AnyBuffer>()  // dw_c_o
                                  .Attr<bool>("use_peepholes")
                                  .Attr<float>("gate_gradient_clip")
                                  .Attr<int64_t>("threads"));
