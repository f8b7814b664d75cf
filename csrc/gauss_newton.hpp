// Per-sample core of the batched Gauss–Newton product:
//   out[j, i, :] = B_i (B_iᵀ u[j, i, :]),   B_i = roots[i] ∈ R^{p×K}, stored as roots (N, K, p).
// B_i = J_iᵀ L_i folds the ReLU masks, the layers above and the output Hessian Λ_i = L_i L_iᵀ of
// sample i, so J_iᵀ Λ_i J_i u = B_i B_iᵀ u. Each sample's K×p root is read once per vector while
// it sits in L1; the work is split over samples with OpenMP. Cost: 4·k·N·K·p flops.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kronecker.hpp"  // FASTDNC_CLONES

namespace fastdnc {

template <typename T>
FASTDNC_CLONES void gn_sample_core(const T* roots, const T* u, T* out, int64_t k, int64_t n, int64_t kk,
                                   int64_t p) {
#pragma omp parallel
  {
    T w[64];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* b = roots + i * kk * p;
      for (int64_t j = 0; j < k; ++j) {
        const T* ui = u + (j * n + i) * p;
        T* oi = out + (j * n + i) * p;
        for (int64_t c0 = 0; c0 < kk; c0 += 64) {
          const int64_t cn = std::min<int64_t>(64, kk - c0);
          for (int64_t c = 0; c < cn; ++c) {
            const T* bc = b + (c0 + c) * p;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t a = 0; a < p; ++a) s += bc[a] * ui[a];
            w[c] = s;
          }
          if (c0 == 0) {
            const T w0 = w[0];
            const T* bc = b;
#pragma omp simd
            for (int64_t a = 0; a < p; ++a) oi[a] = w0 * bc[a];
          }
          for (int64_t c = (c0 == 0 ? 1 : 0); c < cn; ++c) {
            const T wc = w[c];
            const T* bc = b + (c0 + c) * p;
#pragma omp simd
            for (int64_t a = 0; a < p; ++a) oi[a] += wc * bc[a];
          }
        }
      }
    }
  }
}

// Explicit block out[(a, b), (a', b')] = scale Σ_i x[b, i] G_i[a, a'] x[b', i], G_i = B_i B_iᵀ,
// one triangle of slabs: for each output row slab a (one OpenMP task), only the columns with
// a' ≥ a are computed. Samples are taken `chunk` at a time, S[i, (a', b')] = G_i[a, a'] · xt[i, b']
// (a' ≥ a) is formed in a thread-local buffer (chunk × (p − a)q) and slab += x[:, chunk] · S with
// the register-tiled kernel; afterwards the slabs a' > a are mirrored into the lower triangle.
// Flops ≈ P²N (half of the full block). x (q, N), xt = xᵀ (N, q), roots (N, K, p).
template <typename T>
void gn_assemble(const T* x, const T* xt, const T* roots, T* out, int64_t q, int64_t n, int64_t kk, int64_t p,
                 T scale, int64_t chunk) {
  const int64_t size = p * q;
#pragma omp parallel
  {
    std::vector<T> s(static_cast<size_t>(chunk * size));
    std::vector<T> g(static_cast<size_t>(chunk * p));
#pragma omp for schedule(dynamic, 1)
    for (int64_t a = 0; a < p; ++a) {
      const int64_t first = a * q, width = size - first;  // columns (a', b') with a' ≥ a
      T* slab = out + a * q * size + first;                // row stride: size
      for (int64_t b = 0; b < q; ++b) std::fill(slab + b * size, slab + b * size + width, T(0));
      for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        const int64_t m = std::min(chunk, n - i0);
        for (int64_t t = 0; t < m; ++t) {  // g[t, a'] = Σ_c B[a, c] B[a', c] for sample i0 + t, a' ≥ a
          const T* r = roots + (i0 + t) * kk * p;
          T* gt = g.data() + t * p;
          std::fill(gt + a, gt + p, T(0));
          for (int64_t c = 0; c < kk; ++c) {
            const T ra = r[c * p + a];
#pragma omp simd
            for (int64_t a2 = a; a2 < p; ++a2) gt[a2] += ra * r[c * p + a2];
          }
          const T* xi = xt + (i0 + t) * q;
          T* st = s.data() + t * width;
          for (int64_t a2 = a; a2 < p; ++a2) {
            const T ga = gt[a2] * scale;
#pragma omp simd
            for (int64_t b2 = 0; b2 < q; ++b2) st[(a2 - a) * q + b2] = ga * xi[b2];
          }
        }
        for (int64_t b0 = 0; b0 < q; b0 += kRows) {
          const int64_t rows = std::min(kRows, q - b0);
          row_block_times<T, true>(x + b0 * n + i0, n, rows, s.data(), m, width, slab + b0 * size, size);
        }
      }
    }
    // lower triangle: out[(a', b'), (a, b)] = out[(a, b), (a', b')] for a' > a
#pragma omp for schedule(dynamic, 4)
    for (int64_t row = q; row < size; ++row) {
      const int64_t upto = (row / q) * q;  // columns (a, b) with a < a'
      for (int64_t col = 0; col < upto; ++col) out[row * size + col] = out[col * size + row];
    }
  }
}

// Sample-space Gram, accumulated: out[r, c] += scale · (R_r · R_c) · G[r / K, c / K] for the M = N·K
// rows r of roots (N, K, p) seen as an (M × p) matrix R, and G the (N × N) Gram of the inputs. One
// triangle (c >= r) is computed and mirrored: each pair (r, c) belongs to the thread of row r, so
// no two threads write the same entry. Cost: M²p flops (half of a full R Rᵀ).
template <typename T>
FASTDNC_CLONES void gn_gram(const T* roots, const T* gram, T* out, int64_t n, int64_t kk, int64_t p, T scale) {
  const int64_t m = n * kk;
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t r = 0; r < m; ++r) {
    const T* rr = roots + r * p;
    const T* grow = gram + (r / kk) * n;
    for (int64_t c = r; c < m; ++c) {
      const T* rc = roots + c * p;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t a = 0; a < p; ++a) s += rr[a] * rc[a];
      const T v = scale * s * grow[c / kk];
      out[r * m + c] += v;
      if (c != r) out[c * m + r] += v;
    }
  }
}

}  // namespace fastdnc
