// Per-sample Gauss–Newton core for all k vectors at once:
//   out[j, i, :] = B_i (B_iᵀ u[j, i, :]),   B_iᵀ = roots[i] ∈ R^{K×p},  j = 0 … k−1.
//
// One block per sample i. The sample's K×p root is read from global memory once, into shared
// memory, and reused for every vector j (the old kernel re-read it per (i, j) and refused K > 64).
// Per vector: u[j, i] is staged in shared memory (coalesced), each warp reduces the projections
// w_c = ⟨B_i e_c, u⟩ for its rows c with shuffles, then every thread forms out[a] = Σ_c B[c, a] w_c
// for its columns a (coalesced stores). Accumulation in float for float32, double for float64.
// Bytes moved per call: N·K·p (roots, once) + 2·k·N·p (u in, out); flops 4·k·N·K·p.
#include "common.cuh"
#include "kernels.cuh"

namespace fastdnc_cuda {

constexpr int kCoreThreads = 256;
constexpr int kWarp = 32;

template <typename T>
size_t gn_sample_core_smem(int64_t kk, int64_t p) {
  using A = typename Acc<T>::type;
  return static_cast<size_t>(kk * p + kk + p) * sizeof(A);
}

template <typename A>
__device__ __forceinline__ A warp_sum(A s) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset);
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kCoreThreads)
    gn_core_kernel(const T* __restrict__ roots, const T* __restrict__ u, T* __restrict__ out, int64_t k, int64_t n,
                   int64_t kk, int64_t p) {
  using A = typename Acc<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* rs = reinterpret_cast<A*>(smem_raw);  // K × p, the sample's root
  A* w = rs + kk * p;                      // K projections
  A* us = w + kk;                          // p, the current vector
  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, warps = blockDim.x / kWarp;
  const T* b = roots + i * kk * p;
  for (int64_t e = tid; e < kk * p; e += blockDim.x) rs[e] = static_cast<A>(b[e]);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t row = (j * n + i) * p;
    for (int64_t a = tid; a < p; a += blockDim.x) us[a] = static_cast<A>(u[row + a]);
    __syncthreads();  // the root (first pass) and u are in shared memory
    for (int64_t c = warp; c < kk; c += warps) {
      A s = 0;
      for (int64_t a = lane; a < p; a += kWarp) s += rs[c * p + a] * us[a];
      s = warp_sum(s);
      if (lane == 0) w[c] = s;
    }
    __syncthreads();  // every w_c is ready
    for (int64_t a = tid; a < p; a += blockDim.x) {
      A s = 0;
      for (int64_t c = 0; c < kk; ++c) s += rs[c * p + a] * w[c];
      out[row + a] = static_cast<T>(s);
    }
    __syncthreads();  // us and w are free for the next vector
  }
}

template <typename T>
cudaError_t gn_sample_core(const T* roots, const T* u, T* out, int64_t k, int64_t n, int64_t kk, int64_t p,
                           size_t smem_limit, cudaStream_t stream) {
  const size_t smem = gn_sample_core_smem<T>(kk, p);
  if (smem > smem_limit || n > 2147483647LL) return cudaErrorInvalidValue;  // the binding checks first
  if (n == 0 || k == 0) return cudaSuccess;
  if (smem > 48 * 1024) {
    cudaError_t err =
        cudaFuncSetAttribute(gn_core_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  gn_core_kernel<T><<<static_cast<unsigned>(n), kCoreThreads, smem, stream>>>(roots, u, out, k, n, kk, p);
  return cudaGetLastError();
}

template size_t gn_sample_core_smem<float>(int64_t, int64_t);
template size_t gn_sample_core_smem<double>(int64_t, int64_t);
template cudaError_t gn_sample_core<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                                           size_t, cudaStream_t);
template cudaError_t gn_sample_core<double>(const double*, const double*, double*, int64_t, int64_t, int64_t,
                                            int64_t, size_t, cudaStream_t);

}  // namespace fastdnc_cuda
