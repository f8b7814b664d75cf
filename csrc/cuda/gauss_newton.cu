// Gauss–Newton kernels.
//  * gn_sample_core: out[j, i] = B_i (B_iᵀ u[j, i]); one block per (sample i, vector j), the K
//    projections reduced in shared memory. roots (N, K, p), u/out (k, N, p).
//  * gn_assemble: out[(a, b), (a', b')] = scale Σ_i x[b, i] (Σ_c R[i,c,a] R[i,c,a']) x[b', i], the
//    operand S_a generated tile by tile in shared memory (never stored). x (q, N), roots (N, K, p).
#include "common.cuh"

namespace fastdnc_cuda {

constexpr int kCoreThreads = 128;
constexpr int kMaxOutputs = 64;

template <typename T>
__global__ void gn_core_kernel(const T* __restrict__ roots, const T* __restrict__ u, T* __restrict__ out, int64_t n,
                               int64_t kk, int64_t p) {
  using A = typename Acc<T>::type;
  __shared__ A partial[kCoreThreads];
  __shared__ A w[kMaxOutputs];
  const int64_t i = blockIdx.x, j = blockIdx.y;
  const T* b = roots + i * kk * p;
  const T* ui = u + (j * n + i) * p;
  T* oi = out + (j * n + i) * p;
  for (int64_t c = 0; c < kk; ++c) {
    A s = 0;
    for (int64_t a = threadIdx.x; a < p; a += blockDim.x) s += static_cast<A>(b[c * p + a]) * static_cast<A>(ui[a]);
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) w[c] = partial[0];
    __syncthreads();
  }
  for (int64_t a = threadIdx.x; a < p; a += blockDim.x) {
    A s = 0;
    for (int64_t c = 0; c < kk; ++c) s += static_cast<A>(b[c * p + a]) * w[c];
    oi[a] = static_cast<T>(s);
  }
}

template <typename T>
cudaError_t gn_sample_core(const T* roots, const T* u, T* out, int64_t k, int64_t n, int64_t kk, int64_t p,
                           cudaStream_t stream) {
  if (kk > kMaxOutputs) return cudaErrorInvalidValue;
  dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(k));
  gn_core_kernel<T><<<grid, kCoreThreads, 0, stream>>>(roots, u, out, n, kk, p);
  return cudaGetLastError();
}

constexpr int kTm = 16, kTn = 16, kTk = 16;

template <typename T>
__global__ void gn_assemble_kernel(const T* __restrict__ x, const T* __restrict__ roots, T* __restrict__ out,
                                   int64_t q, int64_t n, int64_t kk, int64_t p, T scale) {
  using A = typename Acc<T>::type;
  __shared__ A xs[kTm][kTk];
  __shared__ A ss[kTk][kTn + 1];
  const int64_t a = blockIdx.z;
  const int64_t size = p * q;
  const int64_t b = blockIdx.y * kTm + threadIdx.y;
  const int64_t col = blockIdx.x * kTn + threadIdx.x;
  A acc = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kTk) {
    const int64_t ia = i0 + threadIdx.x;
    xs[threadIdx.y][threadIdx.x] = (b < q && ia < n) ? static_cast<A>(x[b * n + ia]) : A(0);
    // S tile: rows = samples i0 + ty, cols = output columns (a', b')
    const int64_t is = i0 + threadIdx.y;
    A sv = 0;
    if (is < n && col < size) {
      const int64_t a2 = col / q, b2 = col % q;
      const T* r = roots + is * kk * p;
      A g = 0;
      for (int64_t c = 0; c < kk; ++c) g += static_cast<A>(r[c * p + a]) * static_cast<A>(r[c * p + a2]);
      sv = g * static_cast<A>(x[b2 * n + is]);
    }
    ss[threadIdx.y][threadIdx.x] = sv;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kTk; ++t) acc += xs[threadIdx.y][t] * ss[t][threadIdx.x];
    __syncthreads();
  }
  if (b < q && col < size) out[(a * q + b) * size + col] = static_cast<T>(acc * static_cast<A>(scale));
}

template <typename T>
cudaError_t gn_assemble(const T* x, const T* roots, T* out, int64_t q, int64_t n, int64_t kk, int64_t p, T scale,
                        cudaStream_t stream) {
  dim3 block(kTn, kTm);
  dim3 grid(cdiv(p * q, kTn), cdiv(q, kTm), static_cast<unsigned>(p));
  gn_assemble_kernel<T><<<grid, block, 0, stream>>>(x, roots, out, q, n, kk, p, scale);
  return cudaGetLastError();
}

template cudaError_t gn_sample_core<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                                           cudaStream_t);
template cudaError_t gn_sample_core<double>(const double*, const double*, double*, int64_t, int64_t, int64_t,
                                            int64_t, cudaStream_t);
template cudaError_t gn_assemble<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                                        float, cudaStream_t);
template cudaError_t gn_assemble<double>(const double*, const double*, double*, int64_t, int64_t, int64_t,
                                         int64_t, double, cudaStream_t);

}  // namespace fastdnc_cuda
