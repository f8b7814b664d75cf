// Host-side declarations of the CUDA launchers (implemented in gauss_newton.cu).
//
// Only fused kernels live here: a plain GEMM (the two-sided Kronecker product, the packed
// Gauss–Newton assembly's GEMM) goes to cuBLAS through torch, which a hand-written GEMM does not beat.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fastdnc_cuda {

// Dynamic shared memory (bytes) that gn_sample_core needs for K roots of length p.
template <typename T>
size_t gn_sample_core_smem(int64_t kk, int64_t p);

// out[j, i] = B_i (B_iᵀ u[j, i]) for all k vectors j; roots (N, K, p), u and out (k, N, p),
// contiguous. `smem_limit`: the most dynamic shared memory a block may use on this device.
template <typename T>
cudaError_t gn_sample_core(const T* roots, const T* u, T* out, int64_t k, int64_t n, int64_t kk, int64_t p,
                           size_t smem_limit, cudaStream_t stream);

}  // namespace fastdnc_cuda
