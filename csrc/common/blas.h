// BLAS entry points of the vendored OpenBLAS (scipy-openblas32: 32-bit integers, `scipy_`
// symbol prefix) and thin typed wrappers. Everything here is row-major.
//
// The prototypes are declared by hand rather than taken from the wheel's cblas.h: that header
// declares a few names the library does not export, and we want exactly what links.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

extern "C" {
enum RnncoreCblasOrder { RnncoreRowMajor = 101 };
enum RnncoreCblasTrans { RnncoreNoTrans = 111, RnncoreTrans = 112 };

void scipy_cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                       int lda, const float *b, int ldb, float beta, float *c, int ldc);
void scipy_cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha,
                       const double *a, int lda, const double *b, int ldb, double beta, double *c,
                       int ldc);
void scipy_cblas_sgemv(int order, int trans, int m, int n, float alpha, const float *a, int lda,
                       const float *x, int incx, float beta, float *y, int incy);
void scipy_cblas_dgemv(int order, int trans, int m, int n, double alpha, const double *a, int lda,
                       const double *x, int incx, double beta, double *y, int incy);
void scipy_openblas_set_num_threads(int num_threads);
int scipy_openblas_get_num_threads(void);
char *scipy_openblas_get_corename(void);
char *scipy_openblas_get_config(void);
}

namespace rnncore {

// C (m,n) = alpha * op(A) (m,k) * op(B) (k,n) + beta * C, row-major, single-threaded BLAS call.
// Empty operands are handled here (BLAS rejects ld < 1): k == 0 leaves beta * C.
template <typename T>
inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T *a, int lda,
                 const T *b, int ldb, T beta, T *c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int i = 0; i < m; ++i) {
      T *row = c + static_cast<std::ptrdiff_t>(i) * ldc;
      if (beta == T(0))
        std::fill(row, row + n, T(0));
      else
        for (int j = 0; j < n; ++j) row[j] *= beta;
    }
    return;
  }
  const int ta = trans_a ? RnncoreTrans : RnncoreNoTrans;
  const int tb = trans_b ? RnncoreTrans : RnncoreNoTrans;
  lda = std::max(lda, 1);
  ldb = std::max(ldb, 1);
  ldc = std::max(ldc, 1);
  if constexpr (sizeof(T) == 4)
    scipy_cblas_sgemm(RnncoreRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    scipy_cblas_dgemm(RnncoreRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// y (m or n) = alpha * op(A) x + beta * y with A (m,n) row-major. Used where a GEMM would have a
// single row: OpenBLAS's sgemm with M = 1 is about 4x slower than its sgemv.
template <typename T>
inline void gemv(bool trans, int m, int n, T alpha, const T *a, int lda, const T *x, T beta, T *y) {
  const int out = trans ? n : m, in = trans ? m : n;
  if (out <= 0) return;
  if (in <= 0) {
    for (int i = 0; i < out; ++i) y[i] = beta == T(0) ? T(0) : beta * y[i];
    return;
  }
  const int t = trans ? RnncoreTrans : RnncoreNoTrans;
  lda = std::max(lda, 1);
  if constexpr (sizeof(T) == 4)
    scipy_cblas_sgemv(RnncoreRowMajor, t, m, n, alpha, a, lda, x, 1, beta, y, 1);
  else
    scipy_cblas_dgemv(RnncoreRowMajor, t, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

// Row block [r0, r1) of C (m,n) = op(A) op(B): the product restricted to rows r0..r1 of op(A).
// Lets each OpenMP thread run its own single-threaded BLAS call on a partition.
template <typename T>
inline void gemm_rows(int r0, int r1, bool trans_a, bool trans_b, int n, int k, const T *a, int lda,
                      const T *b, int ldb, T beta, T *c, int ldc) {
  const T *a0 = trans_a ? a + r0 : a + static_cast<std::ptrdiff_t>(r0) * lda;
  gemm<T>(trans_a, trans_b, r1 - r0, n, k, T(1), a0, lda, b, ldb, beta,
          c + static_cast<std::ptrdiff_t>(r0) * ldc, ldc);
}

// Column block [c0, c1) of C (m,n) = op(A) op(B): the product restricted to columns c0..c1 of
// op(B).
template <typename T>
inline void gemm_cols(int c0, int c1, bool trans_a, bool trans_b, int m, int k, const T *a, int lda,
                      const T *b, int ldb, T beta, T *c, int ldc) {
  const T *b0 = trans_b ? b + static_cast<std::ptrdiff_t>(c0) * ldb : b + c0;
  gemm<T>(trans_a, trans_b, m, c1 - c0, k, T(1), a, lda, b0, ldb, beta, c + c0, ldc);
}

}  // namespace rnncore
