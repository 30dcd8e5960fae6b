// The sampling loop (see sample.h). Single-threaded: at batch 1 every product is a gemv of a
// few hundred rows, far below what a fork/join would pay for.
#include "lm/sample.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>

#include "common/activations.h"
#include "common/blas.h"

namespace rnncore {

namespace {
using idx = std::ptrdiff_t;

inline std::uint64_t rotl(std::uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// y (rows) = W (rows x cols) x + b (or 0 without b), W row-major.
template <typename T>
void affine(T *y, const T *w, const T *x, const T *b, int rows, int cols) {
  if (b)
    std::copy(b, b + rows, y);
  else
    std::fill(y, y + rows, T(0));
  gemv<T>(false, rows, cols, T(1), w, cols, x, T(1), y);
}

// One token through every layer: updates h, c in place. gx0 is layer 0's input projection
// (G*H, bias included); gx, gh, tmp are (G*H) scratch.
template <typename T>
void step(const SampleModel<T> &m, T *h, T *c, const T *gx0, T *gx, T *gh, T *tmp) {
  const int H = m.H;
  for (std::size_t k = 0; k < m.layers.size(); ++k) {
    const SampleLayer<T> &ly = m.layers[k];
    T *hk = h + static_cast<idx>(k) * H;
    const int GH = cell_gates(m.cell) * H;
    const T *x = gx0;
    if (k > 0) {
      affine<T>(gx, ly.w_ih, h + static_cast<idx>(k - 1) * H, ly.b_ih, GH, ly.D);
      x = gx;
    }
    switch (m.cell) {
      case CellKind::RnnTanh:
      case CellKind::RnnRelu: {
        affine<T>(gh, ly.w_hh, hk, ly.b_hh, H, H);
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
        affine<T>(gh, ly.w_hh, hk, ly.b_hh, GH, H);
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
        affine<T>(gh, ly.w_hh, hk, ly.b_hh, GH, H);
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          const T r = sigmoid_f(x[j] + gh[j]), z = sigmoid_f(x[H + j] + gh[H + j]);
          const T nn = tanh_f(x[2 * H + j] + r * gh[2 * H + j]);
          hk[j] = (T(1) - z) * nn + z * hk[j];
        }
        break;
      }
      case CellKind::GruResetBefore: {                  // n = tanh(x_n + W_hn (r ⊙ h) + b_hn)
        affine<T>(gh, ly.w_hh, hk, ly.b_hh, 2 * H, H);  // r and z rows only
#pragma omp simd
        for (int j = 0; j < H; ++j) tmp[j] = sigmoid_f(x[j] + gh[j]) * hk[j];  // r ⊙ h
        affine<T>(gh + 2 * H, ly.w_hh + static_cast<idx>(2) * H * H, tmp,
                  ly.b_hh ? ly.b_hh + 2 * H : nullptr, H, H);
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
// (ties broken towards the lower id). `order` and `p` are (V) scratch.
template <typename T>
int draw(const T *logits, int V, const SampleOptions &opt, Rng &rng, std::vector<int> &order,
         std::vector<double> &p) {
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
  for (int i = 0; i < k; ++i) {
    sum += std::exp((static_cast<double>(logits[ids ? ids[i] : i]) - mx) * inv_t);
    p[i] = sum;  // running sum: the draw is a search in it
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
void sample_loop(const SampleModel<T> &m, T *h, T *c, const std::int64_t *prime, long long P,
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

  std::vector<T> gx(GH), gh(GH), tmp(H), logits(V);
  std::vector<int> order(V);
  std::vector<double> p(V);
  const T *top = h + static_cast<idx>(m.layers.size() - 1) * H;
  auto feed = [&](std::int64_t token) {
    step<T>(m, h, c, table.data() + static_cast<std::size_t>(token) * GH, gx.data(), gh.data(),
            tmp.data());
  };
  for (long long i = 0; i < P; ++i) feed(prime[i]);
  for (long long i = 0; i < n; ++i) {
    affine<T>(logits.data(), m.w_out, top, m.b_out, V, H);
    out[i] = draw<T>(logits.data(), V, opt, rng, order, p);
    if (i + 1 < n) feed(out[i]);
  }
}

template void sample_loop<float>(const SampleModel<float> &, float *, float *, const std::int64_t *,
                                 long long, long long, const SampleOptions &, Rng, std::int32_t *);
template void sample_loop<double>(const SampleModel<double> &, double *, double *,
                                  const std::int64_t *, long long, long long, const SampleOptions &,
                                  Rng, std::int32_t *);

}  // namespace rnncore
