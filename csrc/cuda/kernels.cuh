// Host-side declarations of the CUDA launchers (implemented in two_sided.cu and gauss_newton.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastdnc_cuda {

template <typename T>
cudaError_t two_sided_product(const T* o, const T* v, const T* in, T* tmp, T* out, int64_t batch, int64_t p,
                              int64_t q, cudaStream_t stream);
template <typename T>
cudaError_t gn_sample_core(const T* roots, const T* u, T* out, int64_t k, int64_t n, int64_t kk, int64_t p,
                           cudaStream_t stream);
template <typename T>
cudaError_t gn_assemble(const T* x, const T* roots, T* out, int64_t q, int64_t n, int64_t kk, int64_t p, T scale,
                        cudaStream_t stream);

}  // namespace fastdnc_cuda
