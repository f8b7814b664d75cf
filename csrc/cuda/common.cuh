// Shared helpers of the CUDA kernels: accumulator type and launch error checks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastdnc_cuda {

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

inline int cdiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace fastdnc_cuda
