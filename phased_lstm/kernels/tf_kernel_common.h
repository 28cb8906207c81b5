// What the TensorFlow ops of the fused kernels share: input checks and the split of a batch into
// blocks of rows over TensorFlow's intra-op thread pool (kernel_common.h has the rest).

#ifndef PHASED_LSTM_KERNELS_TF_KERNEL_COMMON_H_
#define PHASED_LSTM_KERNELS_TF_KERNEL_COMMON_H_

#include <cstdint>

#include "kernel_common.h"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace phased_lstm_tf {

// OutputLikeScratch mimics the outputs' alignment (the forward-only ops' bit-for-bit promise
// rests on it).
static_assert(::phased_lstm::kOutputAlignment == Allocator::kAllocatorAlignment,
              "kernel_common.h's kOutputAlignment must be TensorFlow's");

// Whether input `index` (called `name`) of op `op` has shape `want`; if not, sets ctx's status.
inline bool CheckShape(OpKernelContext* ctx, const char* op, int index, const char* name,
                       const TensorShape& want) {
  if (ctx->input(index).shape() == want) return true;
  ctx->SetStatus(errors::InvalidArgument(op, ": ", name, " must have shape ", want.DebugString(),
                                         "; got ", ctx->input(index).shape().DebugString()));
  return false;
}

// Runs work(shard, first_row, end_row) for `shards` contiguous blocks of the batch, in the
// intra-op thread pool.
inline void ForEachShard(OpKernelContext* ctx, int shards, int64_t batch,
                         const ::phased_lstm::ShardWork& work) {
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

// How many blocks to split a batch of `batch` rows into on this op's thread pool.
inline int NumShards(OpKernelContext* ctx, int64_t batch) {
  return ::phased_lstm::NumShards(
      ctx->device()->tensorflow_cpu_worker_threads()->num_threads, batch);
}

// A ShardRunner (kernel_common.h) on this op's intra-op thread pool.
inline ::phased_lstm::ShardRunner Runner(OpKernelContext* ctx) {
  return [ctx](int shards, int64_t batch, const ::phased_lstm::ShardWork& work) {
    ForEachShard(ctx, shards, batch, work);
  };
}

}  // namespace phased_lstm_tf
}  // namespace tensorflow

#endif  // PHASED_LSTM_KERNELS_TF_KERNEL_COMMON_H_
