// What the fused kernels share whatever calls them (TensorFlow ops, XLA FFI handlers): Eigen's
// row-major maps, the sizes of a call, scratch placed like an output, and how a batch is split
// into blocks of rows for threads. Needs Eigen/Core on the include path.

#ifndef PHASED_LSTM_KERNELS_KERNEL_COMMON_H_
#define PHASED_LSTM_KERNELS_KERNEL_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "Eigen/Core"

namespace phased_lstm {

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

// The alignment of the buffers the ops write (TensorFlow's Allocator::kAllocatorAlignment, which
// tf_kernel_common.h checks): OutputLikeScratch mimics it.
constexpr uintptr_t kOutputAlignment = 64;

// Sizes of one call: x [steps, batch, input_size], k [steps, k_batch (batch or 1), units].
struct Dims {
  int64_t steps, batch, k_batch, input_size, units;
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
  static constexpr uintptr_t kAlign = kOutputAlignment;
  static constexpr int64_t kPeriod = kAlign / sizeof(T);  // elements per alignment
  std::vector<T> buffer_;
};

// How many blocks of rows to split a batch into, given the threads there are.
inline int NumShards(int threads, int64_t batch) {
  return static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(threads, batch / kMinRowsPerShard)));
}

// work(shard, first_row, end_row) for one block of the batch.
using ShardWork = std::function<void(int, int64_t, int64_t)>;
// Runs work for `shards` contiguous blocks of a batch of `batch` rows, in parallel where it can,
// and returns when all are done.
using ShardRunner = std::function<void(int shards, int64_t batch, const ShardWork& work)>;

}  // namespace phased_lstm

#endif  // PHASED_LSTM_KERNELS_KERNEL_COMMON_H_
