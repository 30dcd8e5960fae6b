// The sampling loop (see sample.h). Single-threaded: at batch 1 every product is a gemv of a
// few hundred rows, far below what a fork/join would pay for.
#include "lm/sample.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "common/activations.h"
#include "common/blas.h"
#include "common/pointwise.h"

namespace rnncore {

namespace {
using idx = std::ptrdiff_t;

inline std::uint64_t rotl(std::uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// y (rows) = b + W x (or W x without b) for a W fixed for the whole call, W (rows x cols)
// row-major. At batch 1 every product is a matrix-vector product whose cost is reading W:
// float32 packs W once per call into blocks of kRows rows stored column by column
// ([cols][kRows], the last block zero-padded), so each product streams W once, front to back,
// with kRows / 8 accumulators; OpenBLAS's sgemv reads row-major W about 1.6x slower here
// (measured: 2x128 LSTM, 26 -> 16 us per character), and the recurrent kernels' micro-kernel
// run on one row (gemm_packed, M = 1: two accumulators per 16-row panel, one FMA chain each)
// about 15% slower (41k against 48k characters per second). float64 calls OpenBLAS's dgemv.
template <typename T>
class Affine {
 public:
  Affine(const T *w, const T *b, int rows, int cols) : w_(w), b_(b), rows_(rows), cols_(cols) {}
  void operator()(T *y, const T *x) const {
    if (b_)
      std::copy(b_, b_ + rows_, y);
    else
      std::fill(y, y + rows_, T(0));
    gemv<T>(false, rows_, cols_, T(1), w_, cols_, x, T(1), y);
  }

 private:
  const T *w_, *b_;
  int rows_, cols_;
};

template <>
class Affine<float> {
 public:
  static constexpr int kRows = 32;
  Affine(const float *w, const float *b, int rows, int cols)
      : b_(b),
        rows_(rows),
        cols_(cols),
        p_(static_cast<std::size_t>(blocks()) * kRows * cols),
        acc_(static_cast<std::size_t>(blocks()) * kRows) {
    for (int r0 = 0, k = 0; r0 < rows; r0 += kRows, ++k) {
      float *blk = p_.data() + static_cast<idx>(k) * kRows * cols;
      const int n = std::min(kRows, rows - r0);
      for (int j = 0; j < cols; ++j)
        for (int i = 0; i < kRows; ++i)
          blk[static_cast<idx>(j) * kRows + i] =
              i < n ? w[static_cast<idx>(r0 + i) * cols + j] : 0.f;
    }
  }
  void operator()(float *y, const float *x) const {
    const int nb = blocks();
    const idx stride = static_cast<idx>(kRows) * cols_;
    if (const PointwiseKernels *pk = pointwise_kernels()) {
      pk->column_sums(acc_.data(), p_.data(), stride, x, cols_, nb);  // the ISA path
    } else {
      for (int k = 0; k < nb; ++k)
        column_sums(acc_.data() + static_cast<idx>(k) * kRows, p_.data() + k * stride, x);
    }
    for (int i = 0; i < rows_; ++i) y[i] = (b_ ? b_[i] : 0.f) + acc_[i];
  }

 private:
  int blocks() const { return (rows_ + kRows - 1) / kRows; }
  // acc[i] = sum over j of x[j] * blk[j][i], j in order: the portable path, one block. Written
  // out with intrinsics because GCC keeps a plain accumulator array in memory (a store and a
  // load per column).
  void column_sums(float *acc, const float *blk, const float *x) const {
#if defined(__AVX2__) && defined(__FMA__)
    static_assert(kRows == 32, "four ymm accumulators");
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int j = 0; j < cols_; ++j, blk += kRows) {
      const __m256 xj = _mm256_broadcast_ss(x + j);
      a0 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk), a0);
      a1 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk + 8), a1);
      a2 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk + 16), a2);
      a3 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk + 24), a3);
    }
    _mm256_storeu_ps(acc, a0);
    _mm256_storeu_ps(acc + 8, a1);
    _mm256_storeu_ps(acc + 16, a2);
    _mm256_storeu_ps(acc + 24, a3);
#else
    for (int i = 0; i < kRows; ++i) acc[i] = 0.f;
    for (int j = 0; j < cols_; ++j, blk += kRows)
      for (int i = 0; i < kRows; ++i) acc[i] = std::fma(x[j], blk[i], acc[i]);
#endif
  }
  const float *b_;
  int rows_, cols_;
  std::vector<float> p_;
  mutable std::vector<float> acc_;  // (blocks * kRows) the products of one call
};

// The products of one layer, packed once per call. Layer 0's input side is the table in
// sample_loop; GruResetBefore splits w_hh into its r, z rows and its n rows.
template <typename T>
struct LayerOps {
  Affine<T> ih, hh, hh_n;
  LayerOps(const SampleLayer<T> &ly, CellKind cell, int H, bool first)
      : ih(ly.w_ih, ly.b_ih, first ? 0 : cell_gates(cell) * H, ly.D),
        hh(ly.w_hh, ly.b_hh, (cell == CellKind::GruResetBefore ? 2 : cell_gates(cell)) * H, H),
        hh_n(cell == CellKind::GruResetBefore ? ly.w_hh + static_cast<idx>(2) * H * H : nullptr,
             cell == CellKind::GruResetBefore && ly.b_hh ? ly.b_hh + 2 * H : nullptr,
             cell == CellKind::GruResetBefore ? H : 0, H) {}
};

// One token through every layer: updates h, c in place. gx0 is layer 0's input projection
// (G*H, bias included); gx, gh, tmp are (G*H) scratch.
template <typename T>
void step(const SampleModel<T> &m, const std::vector<LayerOps<T>> &ops, T *h, T *c, const T *gx0,
          T *gx, T *gh, T *tmp) {
  const int H = m.H;
  for (std::size_t k = 0; k < m.layers.size(); ++k) {
    const LayerOps<T> &op = ops[k];
    T *hk = h + static_cast<idx>(k) * H;
    const T *x = gx0;
    if (k > 0) {
      op.ih(gx, h + static_cast<idx>(k - 1) * H);
      x = gx;
    }
    switch (m.cell) {
      case CellKind::RnnTanh:
      case CellKind::RnnRelu: {
        op.hh(gh, hk);
        const bool relu = m.cell == CellKind::RnnRelu;
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          const T a = x[j] + gh[j];
          hk[j] = relu ? relu_f(a) : tanh_f(a);
        }
        break;
      }
      case CellKind::Lstm: {
        T *ck = c + static_cast<idx>(k) * H;
        op.hh(gh, hk);
        if constexpr (std::is_same_v<T, float>)
          if (const PointwiseKernels *pk = pointwise_kernels()) {
            pk->lstm_step_row(hk, ck, x, gh, H);  // the ISA path (common/pointwise.h)
            break;
          }
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          const T i = sigmoid_f(x[j] + gh[j]), f = sigmoid_f(x[H + j] + gh[H + j]);
          const T g = tanh_f(x[2 * H + j] + gh[2 * H + j]);
          const T o = sigmoid_f(x[3 * H + j] + gh[3 * H + j]);
          const T ct = f * ck[j] + i * g;
          ck[j] = ct;
          hk[j] = o * tanh_f(ct);
        }
        break;
      }
      case CellKind::Gru: {  // n = tanh(x_n + r ⊙ (W_hn h + b_hn))
        op.hh(gh, hk);
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          const T r = sigmoid_f(x[j] + gh[j]), z = sigmoid_f(x[H + j] + gh[H + j]);
          const T nn = tanh_f(x[2 * H + j] + r * gh[2 * H + j]);
          hk[j] = (T(1) - z) * nn + z * hk[j];
        }
        break;
      }
      case CellKind::GruResetBefore: {  // n = tanh(x_n + W_hn (r ⊙ h) + b_hn)
        op.hh(gh, hk);                  // r and z rows only
#pragma omp simd
        for (int j = 0; j < H; ++j) tmp[j] = sigmoid_f(x[j] + gh[j]) * hk[j];  // r ⊙ h
        op.hh_n(gh + 2 * H, tmp);
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          const T z = sigmoid_f(x[H + j] + gh[H + j]);
          const T nn = tanh_f(x[2 * H + j] + gh[2 * H + j]);
          hk[j] = (T(1) - z) * nn + z * hk[j];
        }
        break;
      }
    }
  }
}

// A token from the logits: argmax, or a draw from softmax(logits / temperature) over the top k
// (ties broken towards the lower id). `order`, `p` and `e` are (V) scratch.
template <typename T>
int draw(const T *logits, int V, const SampleOptions &opt, Rng &rng, std::vector<int> &order,
         std::vector<double> &p, std::vector<float> &e) {
  if (opt.greedy) return static_cast<int>(std::max_element(logits, logits + V) - logits);
  int k = V;
  const int *ids = nullptr;
  if (opt.top_k > 0 && opt.top_k < V) {
    k = opt.top_k;
    std::iota(order.begin(), order.end(), 0);
    std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    ids = order.data();
  }
  double mx = -INFINITY;
  for (int i = 0; i < k; ++i) mx = std::max(mx, static_cast<double>(logits[ids ? ids[i] : i]));
  const double inv_t = 1.0 / opt.temperature;
  double sum = 0.0;
  if constexpr (std::is_same_v<T, float>) {
    // float32 weights: the exponentials in float32 and vectorised (a libm call each cost about
    // as much as a layer's pointwise update); the running sum stays in double.
    const float m = static_cast<float>(mx), it = static_cast<float>(inv_t);
    for (int i = 0; i < k; ++i) e[i] = (logits[ids ? ids[i] : i] - m) * it;
#pragma omp simd
    for (int i = 0; i < k; ++i) e[i] = exp_nonpositive(e[i]);
    for (int i = 0; i < k; ++i) p[i] = sum += e[i];  // running sum: the draw is a search in it
  } else {
    for (int i = 0; i < k; ++i) {
      sum += std::exp((static_cast<double>(logits[ids ? ids[i] : i]) - mx) * inv_t);
      p[i] = sum;
    }
  }
  const double u = rng.uniform() * sum;
  const int i = static_cast<int>(std::upper_bound(p.begin(), p.begin() + k, u) - p.begin());
  const int pick = std::min(i, k - 1);  // u < sum, but rounding could land on the edge
  return ids ? ids[pick] : pick;
}

}  // namespace

int cell_gates(CellKind k) {
  switch (k) {
    case CellKind::Lstm:
      return 4;
    case CellKind::Gru:
    case CellKind::GruResetBefore:
      return 3;
    default:
      return 1;
  }
}

std::uint64_t Rng::next() {
  const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
  const std::uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double Rng::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

template <typename T>
void sample_loop(const SampleModel<T> &m, T *h, T *c, const std::int32_t *prime, long long P,
                 long long n, const SampleOptions &opt, Rng rng, std::int32_t *out) {
  const int H = m.H, V = m.V, GH = cell_gates(m.cell) * H;
  const SampleLayer<T> &l0 = m.layers[0];
  // Layer 0's input projections, one row per token: embedding w_ih_0^T + b_ih_0 (V, G*H), or
  // the columns of w_ih_0 for one-hot input. Pays for itself after V tokens.
  std::vector<T> table(static_cast<std::size_t>(V) * GH);
  if (m.embedding) {
    gemm<T>(false, true, V, GH, l0.D, T(1), m.embedding, l0.D, l0.w_ih, l0.D, T(0), table.data(),
            GH);
  } else {
    for (int g = 0; g < GH; ++g)
      for (int v = 0; v < V; ++v)
        table[static_cast<std::size_t>(v) * GH + g] = l0.w_ih[static_cast<idx>(g) * V + v];
  }
  if (l0.b_ih)
    for (int v = 0; v < V; ++v)
      for (int g = 0; g < GH; ++g) table[static_cast<std::size_t>(v) * GH + g] += l0.b_ih[g];

  std::vector<LayerOps<T>> ops;
  ops.reserve(m.layers.size());
  for (std::size_t k = 0; k < m.layers.size(); ++k)
    ops.emplace_back(m.layers[k], m.cell, H, k == 0);
  const Affine<T> out_proj(m.w_out, m.b_out, V, H);
  std::vector<T> gx(GH), gh(GH), tmp(H), logits(V);
  std::vector<int> order(V);
  std::vector<double> p(V);
  std::vector<float> e(V);
  const T *top = h + static_cast<idx>(m.layers.size() - 1) * H;
  auto feed = [&](std::int32_t token) {
    step<T>(m, ops, h, c, table.data() + static_cast<std::size_t>(token) * GH, gx.data(), gh.data(),
            tmp.data());
  };
  for (long long i = 0; i < P; ++i) feed(prime[i]);
  for (long long i = 0; i < n; ++i) {
    out_proj(logits.data(), top);
    out[i] = draw<T>(logits.data(), V, opt, rng, order, p, e);
    if (i + 1 < n) feed(out[i]);
  }
}

double gemv_probe(int rows, int cols, long calls) {
  std::vector<float> w(static_cast<std::size_t>(rows) * cols), x(cols), y(rows);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 5) * 0.25f - 0.5f;
  for (int j = 0; j < cols; ++j) x[j] = static_cast<float>(j % 7) * 0.125f - 0.375f;
  const Affine<float> a(w.data(), nullptr, rows, cols);
  a(y.data(), x.data());  // warm: the packed copy in cache as far as it fits
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < calls; ++i) {
    if (i > 0) x[0] = y[0] * 1e-30f;  // each product depends on the last, as the sampler's do
    a(y.data(), x.data());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The product must be right for the time to mean anything.
  for (int i = 0; i < rows; i += std::max(1, rows / 64)) {
    double ref = 0.0;
    for (int j = 0; j < cols; ++j)
      ref += static_cast<double>(w[static_cast<idx>(i) * cols + j]) * x[j];
    if (!(std::abs(y[i] - ref) <= 1e-5 * cols + 1e-6))
      throw std::runtime_error("gemv_probe: wrong product at row " + std::to_string(i) + ": " +
                               std::to_string(y[i]) + ", expected " + std::to_string(ref));
  }
  return s;
}

template void sample_loop<float>(const SampleModel<float> &, float *, float *, const std::int32_t *,
                                 long long, long long, const SampleOptions &, Rng, std::int32_t *);
template void sample_loop<double>(const SampleModel<double> &, double *, double *,
                                  const std::int32_t *, long long, long long, const SampleOptions &,
                                  Rng, std::int32_t *);

}  // namespace rnncore
