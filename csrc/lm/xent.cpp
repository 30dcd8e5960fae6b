// Fused linear + softmax + cross-entropy (see xent.h for the shapes and equations).
//
// Threading: OpenMP over row blocks for the logits GEMM, the softmax pass and dh; over vocabulary
// rows for dw (each thread owns rows [v0, v1) of dw, so no reduction between threads). The loss
// is summed from the per-row losses in row order, after the parallel part.
#include "lm/xent.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "common/activations.h"
#include "common/blas.h"
#include "common/threading.h"

namespace rnncore {

namespace {
using idx = std::ptrdiff_t;
}

// exp of a non-positive argument: our vectorisable float32 exp, libm's for float64.
inline float exp_np(float x) {
  return exp_nonpositive(x);
}
inline double exp_np(double x) {
  return std::exp(x);
}

template <typename T>
void softmax_xent(T *row_loss, T *dlogits, const T *logits, const std::int32_t *y,
                  const std::uint8_t *keep, T scale, long long N, int V) {
  for (long long n = 0; n < N; ++n) {
    const T *z = logits + static_cast<idx>(n) * V;
    T *d = dlogits ? dlogits + static_cast<idx>(n) * V : nullptr;
    if (keep && !keep[n]) {  // dropped: neither its logits nor its target are read
      row_loss[n] = T(0);
      if (d) std::fill(d, d + V, T(0));
      continue;
    }
    T mx = z[0];
    for (int v = 1; v < V; ++v) mx = z[v] > mx ? z[v] : mx;
    const T zy = z[y[n]];  // read before d (which may alias z) is written
    // A NaN anywhere in the row makes z - mx NaN there (or mx itself NaN): the sum carries it
    // into this row's loss and gradient, and nowhere else.
    T sum = 0;
    if (d) {
#pragma omp simd reduction(+ : sum)
      for (int v = 0; v < V; ++v) {
        const T e = exp_np(z[v] - mx);
        d[v] = e;
        sum += e;
      }
      const T k = scale / sum;
#pragma omp simd
      for (int v = 0; v < V; ++v) d[v] *= k;
      d[y[n]] -= scale;
    } else {
#pragma omp simd reduction(+ : sum)
      for (int v = 0; v < V; ++v) sum += exp_np(z[v] - mx);
    }
    row_loss[n] = std::log(sum) + (mx - zy);
  }
}

template <typename T>
double linear_xent(T *dh, T *dw, T *db, T *logits, T *row_loss, const T *h, const T *w, const T *b,
                   const std::int32_t *y, const std::uint8_t *keep, int N, int H, int V) {
  long long K = N;
  if (keep) K = std::count_if(keep, keep + N, [](std::uint8_t k) { return k != 0; });
  if (K == 0) {
    if (dh) {
      std::fill(dh, dh + static_cast<idx>(N) * H, T(0));
      std::fill(dw, dw + static_cast<idx>(V) * H, T(0));
      if (db) std::fill(db, db + V, T(0));
    }
    return 0.0;
  }
  const T scale = T(1) / static_cast<T>(K);
  const double flops = 2.0 * N * H * V * (dh ? 3 : 1);
  const int nt = threads_for(flops, std::max(1, N / 8), 2.0e5);
#pragma omp parallel num_threads(nt)
  {
    const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
    const Range r = split(N, np, p, 8);
    const int rows = r.end - r.begin;
    T *lg = logits + static_cast<idx>(r.begin) * V;
    if (rows > 0) {
      // logits = h w^T + b for this thread's rows.
      if (b)
        for (int n = 0; n < rows; ++n) std::copy(b, b + V, lg + static_cast<idx>(n) * V);
      gemm<T>(false, true, rows, V, H, T(1), h + static_cast<idx>(r.begin) * H, H, w, H,
              b ? T(1) : T(0), lg, V);
      softmax_xent<T>(row_loss + r.begin, dh ? lg : nullptr, lg, y + r.begin,
                      keep ? keep + r.begin : nullptr, scale, rows, V);
      // dh = dlogits w for the same rows.
      if (dh)
        gemm<T>(false, false, rows, H, V, T(1), lg, V, w, H, T(0),
                dh + static_cast<idx>(r.begin) * H, H);
    }
    if (dh) {
#pragma omp barrier
      // dw rows [v0, v1) = dlogits[:, v0:v1]^T h; db likewise, summed over n in order.
      const Range rv = split(V, np, p, 1);
      if (rv.end > rv.begin) {
        gemm<T>(true, false, rv.end - rv.begin, H, N, T(1), logits + rv.begin, V, h, H, T(0),
                dw + static_cast<idx>(rv.begin) * H, H);
        if (db) {
          for (int v = rv.begin; v < rv.end; ++v) db[v] = T(0);
          for (int n = 0; n < N; ++n) {
            const T *d = logits + static_cast<idx>(n) * V;
            for (int v = rv.begin; v < rv.end; ++v) db[v] += d[v];
          }
        }
      }
    }
  }
  double total = 0.0;
  for (int n = 0; n < N; ++n) total += static_cast<double>(row_loss[n]);  // dropped rows: 0
  return total / static_cast<double>(K);
}

template void softmax_xent<float>(float *, float *, const float *, const std::int32_t *,
                                  const std::uint8_t *, float, long long, int);
template void softmax_xent<double>(double *, double *, const double *, const std::int32_t *,
                                   const std::uint8_t *, double, long long, int);
template double linear_xent<float>(float *, float *, float *, float *, float *, const float *,
                                   const float *, const float *, const std::int32_t *,
                                   const std::uint8_t *, int, int, int);
template double linear_xent<double>(double *, double *, double *, double *, double *,
                                    const double *, const double *, const double *,
                                    const std::int32_t *, const std::uint8_t *, int, int, int);

}  // namespace rnncore
