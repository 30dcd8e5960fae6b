// The sampling loop (see sample.h). Single-threaded: at batch 1 every product is a gemv of a
// few hundred rows, far below what a fork/join would pay for.
#include "lm/sample.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <memory>
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

constexpr int kRows = 32;  // float32 rows per packed block; also the padding of every vector

inline int padded(int n) {
  return (n + kRows - 1) / kRows * kRows;
}

// y = bias + W x for a W = [A | B] fixed for the whole call: A (rows x ca) and B (rows x cb)
// row-major, B optional (cb = 0), joined column-wise so that a layer above the first reads
// [h_{k-1}; h_k] (contiguous in the (L, H) state) in one product; bias = b_a + b_b, either
// optional. y is padded(rows) long (the rows past `rows` are scratch), and a call may start
// from its own `init` (padded(rows), e.g. a table row holding both biases) in place of the bias.
//
// At batch 1 every product is a matrix-vector product whose cost is reading W: float32 packs W
// once (per Sampler) into blocks of kRows rows stored column by column ([cols][kRows], the last
// block zero-padded), so each product streams W once, front to back, its accumulators starting
// from the bias; OpenBLAS's sgemv reads row-major W about 1.6x slower here (measured: 2x128
// LSTM, 26 -> 16 us per character), and the recurrent kernels' micro-kernel run on one row
// (gemm_packed, M = 1: two accumulators per 16-row panel, one FMA chain each) about 15% slower
// (41k against 48k characters per second). float64 calls OpenBLAS's dgemv on a row-major copy.
template <typename T>
class Affine {
 public:
  Affine(int rows, const T *a, int ca, const T *b_a, const T *b = nullptr, int cb = 0,
         const T *b_b = nullptr)
      : rows_(rows), cols_(ca + cb), bias_(padded(rows), T(0)) {
    auto w = [&](int i, int j) -> T {
      return j < ca ? a[static_cast<idx>(i) * ca + j] : b[static_cast<idx>(i) * cb + j - ca];
    };
    if constexpr (std::is_same_v<T, float>) {
      w_.assign(static_cast<std::size_t>(blocks()) * kRows * cols_, 0.f);
      for (int r0 = 0, k = 0; r0 < rows; r0 += kRows, ++k) {
        float *blk = w_.data() + static_cast<idx>(k) * kRows * cols_;
        for (int j = 0; j < cols_; ++j)
          for (int i = 0; i < std::min(kRows, rows - r0); ++i)
            blk[static_cast<idx>(j) * kRows + i] = w(r0 + i, j);
      }
    } else {
      w_.resize(static_cast<std::size_t>(rows) * cols_);
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols_; ++j) w_[static_cast<std::size_t>(i) * cols_ + j] = w(i, j);
    }
    for (int i = 0; i < rows; ++i) bias_[i] = (b_a ? b_a[i] : T(0)) + (b_b ? b_b[i] : T(0));
  }
  void operator()(T *y, const T *x, const T *init = nullptr) const {
    if (!init) init = bias_.data();
    if constexpr (std::is_same_v<T, float>) {
      const int nb = blocks();
      const idx stride = static_cast<idx>(kRows) * cols_;
      if (const PointwiseKernels *pk = pointwise_kernels()) {
        pk->column_sums(y, w_.data(), stride, x, cols_, nb, init);  // the ISA path
      } else {
        for (int k = 0; k < nb; ++k)
          column_sums(y + k * kRows, w_.data() + k * stride, x, init + k * kRows);
      }
    } else {
      std::copy(init, init + rows_, y);
      gemv<T>(false, rows_, cols_, T(1), w_.data(), cols_, x, T(1), y);
    }
  }

 private:
  int blocks() const { return (rows_ + kRows - 1) / kRows; }
  // y[i] = init[i] + the sum over j of x[j] * blk[j][i], j in order: the portable path, one
  // block. Written out with intrinsics because GCC keeps a plain accumulator array in memory
  // (a store and a load per column).
  void column_sums(float *y, const float *blk, const float *x, const float *init) const {
#if defined(__AVX2__) && defined(__FMA__)
    static_assert(kRows == 32, "four ymm accumulators");
    __m256 a0 = _mm256_loadu_ps(init), a1 = _mm256_loadu_ps(init + 8);
    __m256 a2 = _mm256_loadu_ps(init + 16), a3 = _mm256_loadu_ps(init + 24);
    for (int j = 0; j < cols_; ++j, blk += kRows) {
      const __m256 xj = _mm256_broadcast_ss(x + j);
      a0 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk), a0);
      a1 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk + 8), a1);
      a2 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk + 16), a2);
      a3 = _mm256_fmadd_ps(xj, _mm256_loadu_ps(blk + 24), a3);
    }
    _mm256_storeu_ps(y, a0);
    _mm256_storeu_ps(y + 8, a1);
    _mm256_storeu_ps(y + 16, a2);
    _mm256_storeu_ps(y + 24, a3);
#else
    for (int i = 0; i < kRows; ++i) y[i] = init[i];
    for (int j = 0; j < cols_; ++j, blk += kRows)
      for (int i = 0; i < kRows; ++i) y[i] = std::fma(x[j], blk[i], y[i]);
#endif
  }
  int rows_, cols_;
  std::vector<T> w_;     // float32: blocks() packed blocks; float64: (rows, cols) row-major
  std::vector<T> bias_;  // (padded(rows)) b_a + b_b, zeros past rows
};

// True for the cells whose pre-activations are one sum, x and h sides together (LSTM, RNN):
// their layers run one product over [x; h]; the GRUs keep W_hn h apart from W_in x.
bool fused_cell(CellKind cell) {
  return cell == CellKind::Lstm || cell == CellKind::RnnTanh || cell == CellKind::RnnRelu;
}

// The products of one layer, packed once per Sampler. Fused cells: hh is [W_ih | W_hh] over
// [h_{k-1}; h_k] with bias b_ih + b_hh, or for layer 0 W_hh alone started from the table row
// (both biases in it), and ih is empty. The GRUs: ih (W_ih, b_ih; empty for layer 0, whose
// input side is the table) and hh (W_hh, b_hh); GruResetBefore splits hh into its r, z rows and
// hh_n, its n rows.
template <typename T>
struct LayerOps {
  Affine<T> ih, hh, hh_n;
  LayerOps(const SampleLayer<T> &ly, CellKind cell, int H, bool first)
      : ih(fused_cell(cell) || first ? 0 : cell_gates(cell) * H, ly.w_ih, ly.D, ly.b_ih),
        hh(make_hh(ly, cell, H, first)),
        hh_n(cell == CellKind::GruResetBefore ? H : 0,
             cell == CellKind::GruResetBefore ? ly.w_hh + static_cast<idx>(2) * H * H : nullptr, H,
             cell == CellKind::GruResetBefore && ly.b_hh ? ly.b_hh + 2 * H : nullptr) {}

 private:
  static Affine<T> make_hh(const SampleLayer<T> &ly, CellKind cell, int H, bool first) {
    const int G = cell_gates(cell);
    if (cell == CellKind::GruResetBefore) return Affine<T>(2 * H, ly.w_hh, H, ly.b_hh);
    if (!fused_cell(cell) || first)
      return Affine<T>(G * H, ly.w_hh, H, fused_cell(cell) ? nullptr : ly.b_hh);
    return Affine<T>(G * H, ly.w_ih, ly.D, ly.b_ih, ly.w_hh, H, ly.b_hh);
  }
};

// One token through every layer: updates h, c in place. x0 is layer 0's row of the table
// (padded(G*H), the biases in it as the cell needs them); gx, gh, tmp are padded(G*H) scratch.
template <typename T>
void step(CellKind cell, int H, const std::vector<LayerOps<T>> &ops, T *h, T *c, const T *x0, T *gx,
          T *gh, T *tmp) {
  for (std::size_t k = 0; k < ops.size(); ++k) {
    const LayerOps<T> &op = ops[k];
    T *hk = h + static_cast<idx>(k) * H;
    if (fused_cell(cell)) {  // gh = the pre-activations, x and h sides summed
      if (k == 0)
        op.hh(gh, hk, x0);
      else
        op.hh(gh, hk - H);  // [h_{k-1}; h_k]: layer k-1 is already at this token
    }
    switch (cell) {
      case CellKind::RnnTanh:
      case CellKind::RnnRelu: {
        const bool relu = cell == CellKind::RnnRelu;
#pragma omp simd
        for (int j = 0; j < H; ++j) hk[j] = relu ? relu_f(gh[j]) : tanh_f(gh[j]);
        break;
      }
      case CellKind::Lstm: {
        T *ck = c + static_cast<idx>(k) * H;
        if constexpr (std::is_same_v<T, float>)
          if (const PointwiseKernels *pk = pointwise_kernels()) {
            pk->lstm_step_row(hk, ck, gh, H);  // the ISA path (common/pointwise.h)
            break;
          }
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          const T i = sigmoid_f(gh[j]), f = sigmoid_f(gh[H + j]), g = tanh_f(gh[2 * H + j]);
          const T o = sigmoid_f(gh[3 * H + j]);
          const T ct = f * ck[j] + i * g;
          ck[j] = ct;
          hk[j] = o * tanh_f(ct);
        }
        break;
      }
      case CellKind::Gru:
      case CellKind::GruResetBefore: {
        const T *x = x0;
        if (k > 0) {
          op.ih(gx, hk - H);
          x = gx;
        }
        op.hh(gh, hk);                // GruResetBefore: the r and z rows only
        if (cell == CellKind::Gru) {  // n = tanh(x_n + r ⊙ (W_hn h + b_hn))
#pragma omp simd
          for (int j = 0; j < H; ++j) {
            const T r = sigmoid_f(x[j] + gh[j]), z = sigmoid_f(x[H + j] + gh[H + j]);
            const T nn = tanh_f(x[2 * H + j] + r * gh[2 * H + j]);
            hk[j] = (T(1) - z) * nn + z * hk[j];
          }
          break;
        }
        // n = tanh(x_n + W_hn (r ⊙ h) + b_hn)
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
struct Sampler<T>::Impl {
  CellKind cell;
  int H, V, S;                   // S = padded(G*H): the stride of the table and the scratch
  std::vector<T> table;          // (V, S) layer 0's input side per token
  std::vector<LayerOps<T>> ops;  // L of them
  Affine<T> out_proj;

  explicit Impl(const SampleModel<T> &m)
      : cell(m.cell),
        H(m.H),
        V(m.V),
        S(padded(cell_gates(m.cell) * m.H)),
        table(static_cast<std::size_t>(V) * S, T(0)),
        out_proj(m.V, m.w_out, m.H, m.b_out) {
    const int GH = cell_gates(cell) * H;
    const SampleLayer<T> &l0 = m.layers[0];
    // Layer 0's input projections, one row of S per token: embedding w_ih_0^T + b_ih_0
    // (+ b_hh_0 for the fused cells), or the columns of w_ih_0 for one-hot input.
    if (m.embedding) {
      gemm<T>(false, true, V, GH, l0.D, T(1), m.embedding, l0.D, l0.w_ih, l0.D, T(0), table.data(),
              S);
    } else {
      for (int g = 0; g < GH; ++g)
        for (int v = 0; v < V; ++v)
          table[static_cast<std::size_t>(v) * S + g] = l0.w_ih[static_cast<idx>(g) * V + v];
    }
    for (const T *b : {l0.b_ih, fused_cell(cell) ? l0.b_hh : nullptr})
      if (b)
        for (int v = 0; v < V; ++v)
          for (int g = 0; g < GH; ++g) table[static_cast<std::size_t>(v) * S + g] += b[g];
    ops.reserve(m.layers.size());
    for (std::size_t k = 0; k < m.layers.size(); ++k)
      ops.emplace_back(m.layers[k], cell, H, k == 0);
  }
};

template <typename T>
Sampler<T>::Sampler(const SampleModel<T> &m) : impl_(std::make_unique<Impl>(m)) {}
template <typename T>
Sampler<T>::~Sampler() = default;
template <typename T>
Sampler<T>::Sampler(Sampler &&) noexcept = default;

template <typename T>
int Sampler<T>::layers() const {
  return static_cast<int>(impl_->ops.size());
}
template <typename T>
int Sampler<T>::hidden() const {
  return impl_->H;
}
template <typename T>
int Sampler<T>::vocab() const {
  return impl_->V;
}
template <typename T>
CellKind Sampler<T>::cell() const {
  return impl_->cell;
}

template <typename T>
void Sampler<T>::run(T *h, T *c, const std::int32_t *prime, long long P, long long n,
                     const SampleOptions &opt, Rng rng, std::int32_t *out) const {
  const Impl &m = *impl_;
  std::vector<T> gx(m.S), gh(m.S + kRows), tmp(m.H), logits(padded(m.V));  // hh_n writes past 2H
  std::vector<int> order(m.V);
  std::vector<double> p(m.V);
  std::vector<float> e(m.V);
  const T *top = h + static_cast<idx>(m.ops.size() - 1) * m.H;
  auto feed = [&](std::int32_t token) {
    step<T>(m.cell, m.H, m.ops, h, c, m.table.data() + static_cast<std::size_t>(token) * m.S,
            gx.data(), gh.data(), tmp.data());
  };
  for (long long i = 0; i < P; ++i) feed(prime[i]);
  for (long long i = 0; i < n; ++i) {
    m.out_proj(logits.data(), top);
    out[i] = draw<T>(logits.data(), m.V, opt, rng, order, p, e);
    if (i + 1 < n) feed(out[i]);
  }
}

double gemv_probe(int rows, int cols, long calls) {
  std::vector<float> w(static_cast<std::size_t>(rows) * cols), x(cols), y(padded(rows));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 5) * 0.25f - 0.5f;
  for (int j = 0; j < cols; ++j) x[j] = static_cast<float>(j % 7) * 0.125f - 0.375f;
  const Affine<float> a(rows, w.data(), cols, nullptr);
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

template class Sampler<float>;
template class Sampler<double>;

}  // namespace rnncore
