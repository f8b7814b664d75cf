// Batched two-sided products Y_j = O · V_j · I  (the matvec of a Kronecker operator O ⊗ I under
// the row-major vec convention: (O ⊗ I) vec(V) = vec(O V Iᵀ), and I is symmetric here).
//
// O: output_factor (p×p), I: input_factor (q×q), V: (batch, p, q), all row-major and contiguous.
// Each output row y = (Σ_s O[i,s] V[s,:]) · I is computed for a block of ROWS rows at once: the
// intermediate row block (ROWS × q) lives in a thread-local buffer, so the (p × q) product O·V is
// never materialised and every load of a row of V or I serves ROWS fused multiply-adds.
// Work is split over (batch, row block) pairs with OpenMP.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#ifdef FASTDNC_OPENMP
#include <omp.h>
#endif

namespace fastdnc {

constexpr int64_t kRows = 4;   // output rows per register tile
constexpr int64_t kCols = 32;  // output columns per register tile (4 × 32 accumulators)

// Compile the hot loops for AVX-512, AVX2 and baseline x86-64 and pick one at load time, so the
// extension is fast on the machine it runs on yet never uses an instruction it lacks.
#if defined(__x86_64__) && defined(__GNUC__)
#define FASTDNC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTDNC_CLONES
#endif

// acc[r, j] (+)= Σ_s left[r, s] · right[s, j] for r < rows (≤ kRows), j < n; left has row stride
// ls, right is (k × n) row-major, acc has row stride lda (default n; Accumulate: add to acc
// instead of overwriting it). The kRows × kCols tile of acc stays in registers for the whole
// reduction over s; each loaded element of right feeds kRows FMAs.
template <typename T, bool Accumulate = false>
FASTDNC_CLONES void row_block_times(const T* left, int64_t ls, int64_t rows, const T* right, int64_t k,
                                    int64_t n, T* acc, int64_t lda = -1) {
  if (lda < 0) lda = n;
  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int64_t w = std::min(kCols, n - j0);
    T tile[kRows][kCols] = {};
    if (Accumulate)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < w; ++j) tile[r][j] = acc[r * lda + j0 + j];
    if (rows == kRows && w == kCols) {
      for (int64_t s = 0; s < k; ++s) {
        const T* b = right + s * n + j0;
        const T c0 = left[s], c1 = left[ls + s], c2 = left[2 * ls + s], c3 = left[3 * ls + s];
#pragma omp simd
        for (int64_t j = 0; j < kCols; ++j) {
          tile[0][j] += c0 * b[j];
          tile[1][j] += c1 * b[j];
          tile[2][j] += c2 * b[j];
          tile[3][j] += c3 * b[j];
        }
      }
    } else {
      for (int64_t s = 0; s < k; ++s) {
        const T* b = right + s * n + j0;
        for (int64_t r = 0; r < rows; ++r) {
          const T c = left[r * ls + s];
          for (int64_t j = 0; j < w; ++j) tile[r][j] += c * b[j];
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < w; ++j) acc[r * lda + j0 + j] = tile[r][j];
  }
}

template <typename T>
void two_sided_product(const T* output_factor, const T* v, const T* input_factor, T* out,
                       int64_t batch, int64_t p, int64_t q) {
  const int64_t blocks = (p + kRows - 1) / kRows;
  const int64_t tasks = batch * blocks;
#pragma omp parallel
  {
    std::vector<T> tmp(static_cast<size_t>(kRows * q));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t j = t / blocks;
      const int64_t i0 = (t % blocks) * kRows;
      const int64_t rows = std::min(kRows, p - i0);
      // tmp = O[i0:i0+rows, :] · V_j ;  out_j[i0:i0+rows, :] = tmp · I
      row_block_times(output_factor + i0 * p, p, rows, v + j * p * q, p, q, tmp.data());
      row_block_times(tmp.data(), q, rows, input_factor, q, q, out + j * p * q + i0 * q);
    }
  }
}

}  // namespace fastdnc
