// Batched two-sided product Y_j = O · V_j · I as two launches of a shared-memory tiled batched
// GEMM (C[z] = A[z] B[z]; a batch stride of 0 broadcasts an operand). Row-major, contiguous rows.
#include "common.cuh"

namespace fastdnc_cuda {

constexpr int kTile = 32;

template <typename T>
__global__ void bmm_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c, int64_t m,
                           int64_t n, int64_t k, int64_t sa, int64_t sb, int64_t sc) {
  using A = typename Acc<T>::type;
  __shared__ T ta[kTile][kTile];
  __shared__ T tb[kTile][kTile + 1];
  const int64_t z = blockIdx.z;
  const int64_t row = blockIdx.y * kTile + threadIdx.y;
  const int64_t col = blockIdx.x * kTile + threadIdx.x;
  const T* az = a + z * sa;
  const T* bz = b + z * sb;
  A acc = 0;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
    ta[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? az[row * k + ka] : T(0);
    tb[threadIdx.y][threadIdx.x] = (kb < k && col < n) ? bz[kb * n + col] : T(0);
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kTile; ++t) acc += static_cast<A>(ta[threadIdx.y][t]) * static_cast<A>(tb[t][threadIdx.x]);
    __syncthreads();
  }
  if (row < m && col < n) c[z * sc + row * n + col] = static_cast<T>(acc);
}

template <typename T>
cudaError_t batched_matmul(const T* a, const T* b, T* c, int64_t batch, int64_t m, int64_t n, int64_t k,
                           bool broadcast_a, bool broadcast_b, cudaStream_t stream) {
  dim3 block(kTile, kTile);
  dim3 grid(cdiv(n, kTile), cdiv(m, kTile), static_cast<unsigned>(batch));
  bmm_kernel<T><<<grid, block, 0, stream>>>(a, b, c, m, n, k, broadcast_a ? 0 : m * k, broadcast_b ? 0 : k * n, m * n);
  return cudaGetLastError();
}

// out[j] = O · v[j] · I; tmp holds batch · p · q elements.
template <typename T>
cudaError_t two_sided_product(const T* o, const T* v, const T* in, T* tmp, T* out, int64_t batch, int64_t p,
                              int64_t q, cudaStream_t stream) {
  cudaError_t err = batched_matmul<T>(o, v, tmp, batch, p, q, p, true, false, stream);
  if (err != cudaSuccess) return err;
  return batched_matmul<T>(tmp, in, out, batch, p, q, q, false, true, stream);
}

template cudaError_t two_sided_product<float>(const float*, const float*, const float*, float*, float*, int64_t,
                                              int64_t, int64_t, cudaStream_t);
template cudaError_t two_sided_product<double>(const double*, const double*, const double*, double*, double*,
                                               int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace fastdnc_cuda
