// Shared helpers of the CUDA kernels: the accumulator type (float for float32, double for float64).
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

}  // namespace fastdnc_cuda
