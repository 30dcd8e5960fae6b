#include "common/packed_gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RNNCORE_X86 1
#endif

namespace rnncore {

namespace {

using idx = std::ptrdiff_t;

// --- portable: the reference the SIMD kernels are checked against ----------------------------
//
// std::fma, not a * b + c: GCC contracts that into an FMA in some instantiations and not in
// others (measured: MR = 1, 2 fused, MR = 3, 4 not), so an element's value depended on how many
// rows its block had, and with it on the thread count once threads split the rows
// (common/sequence.h row_groups). With std::fma every element is the same chain of fused
// multiply-adds in k order as on the SIMD paths, whatever the block.

template <int MR>
void ukernel_portable(const float *a, int lda, const float *p, int K, float *c, int ldc, int n,
                      bool acc) {
  constexpr int NR = 16;
  float s[MR][NR] = {};
  for (int k = 0; k < K; ++k) {
    const float *pk = p + static_cast<idx>(k) * NR;
    for (int m = 0; m < MR; ++m) {
      const float am = a[static_cast<idx>(m) * lda + k];
      for (int j = 0; j < NR; ++j) s[m][j] = std::fma(am, pk[j], s[m][j]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    float *cm = c + static_cast<idx>(m) * ldc;
    for (int j = 0; j < n; ++j) cm[j] = acc ? cm[j] + s[m][j] : s[m][j];
  }
}

#ifdef RNNCORE_X86

// Where A's element (m, k) lies: A row-major (M x K), or, for AT, A^T row-major (K x M), so that
// C = A^T P reads a (K x M) matrix in place (the weight gradients, common/weight_grad.h).
template <bool AT>
inline idx a_index(int m, int k, int lda) {
  return AT ? static_cast<idx>(k) * lda + m : static_cast<idx>(m) * lda + k;
}

// A transposed: each k reads MR floats of a new row of A^T (its rows are a whole gradient
// row apart, 2 KB at 4H = 512), a line the hardware prefetchers do not fetch in time (perf: the
// FMAs after the first broadcast of a row stalled). So the row kPrefetchRows ahead is asked
// for in software, both lines its MR floats may span. Prefetching past the end is harmless.
constexpr int kPrefetchRows = 10;
template <int MR>
inline void prefetch_row(const float *a, int k, int lda) {
  const char *row = reinterpret_cast<const char *>(a + static_cast<idx>(k) * lda);
  _mm_prefetch(row, _MM_HINT_T0);
  _mm_prefetch(row + (MR - 1) * sizeof(float), _MM_HINT_T0);
}

// --- AVX2 + FMA: 6 x 16 ----------------------------------------------------------------------
//
// Every loop over the MR rows is unrolled (#pragma GCC unroll), the store-out included: if any
// of them is left as a loop, GCC keeps the accumulator arrays in memory and stores all of them
// on every k (measured: 10 stores per 12 FMAs, the kernel at a third of its speed).

template <int MR, bool AT = false>
__attribute__((target("avx2,fma"))) void ukernel_avx2(const float *a, int lda, const float *p,
                                                      int K, float *c, int ldc, int n, bool acc) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) c0[m] = c1[m] = _mm256_setzero_ps();
  for (int k = 0; k < K; ++k) {
    if constexpr (AT) prefetch_row<MR>(a, k + kPrefetchRows, lda);
    const __m256 b0 = _mm256_loadu_ps(p + static_cast<idx>(k) * 16);
    const __m256 b1 = _mm256_loadu_ps(p + static_cast<idx>(k) * 16 + 8);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m256 am = _mm256_broadcast_ss(a + a_index<AT>(m, k, lda));
      c0[m] = _mm256_fmadd_ps(am, b0, c0[m]);
      c1[m] = _mm256_fmadd_ps(am, b1, c1[m]);
    }
  }
  if (n == 16) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      float *cm = c + static_cast<idx>(m) * ldc;
      if (acc) {
        c0[m] = _mm256_add_ps(c0[m], _mm256_loadu_ps(cm));
        c1[m] = _mm256_add_ps(c1[m], _mm256_loadu_ps(cm + 8));
      }
      _mm256_storeu_ps(cm, c0[m]);
      _mm256_storeu_ps(cm + 8, c1[m]);
    }
    return;
  }
  // A partial panel: through a small buffer, never touching C past column n.
  alignas(32) float tmp[MR][16];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    _mm256_store_ps(tmp[m], c0[m]);
    _mm256_store_ps(tmp[m] + 8, c1[m]);
  }
  for (int m = 0; m < MR; ++m) {
    float *cm = c + static_cast<idx>(m) * ldc;
    for (int j = 0; j < n; ++j) cm[j] = acc ? cm[j] + tmp[m][j] : tmp[m][j];
  }
}

// --- AVX-512: 12 x 32 ------------------------------------------------------------------------

template <int MR, bool AT = false>
__attribute__((target("avx512f"))) void ukernel_avx512(const float *a, int lda, const float *p,
                                                       int K, float *c, int ldc, int n, bool acc) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) c0[m] = c1[m] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    if constexpr (AT) prefetch_row<MR>(a, k + kPrefetchRows, lda);
    const __m512 b0 = _mm512_loadu_ps(p + static_cast<idx>(k) * 32);
    const __m512 b1 = _mm512_loadu_ps(p + static_cast<idx>(k) * 32 + 16);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 am = _mm512_set1_ps(a[a_index<AT>(m, k, lda)]);
      c0[m] = _mm512_fmadd_ps(am, b0, c0[m]);
      c1[m] = _mm512_fmadd_ps(am, b1, c1[m]);
    }
  }
  const __mmask16 k0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  const __mmask16 k1 = n >= 32 ? __mmask16(0xFFFF) : n > 16 ? __mmask16((1u << (n - 16)) - 1) : 0;
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    float *cm = c + static_cast<idx>(m) * ldc;
    if (acc) {
      c0[m] = _mm512_add_ps(c0[m], _mm512_maskz_loadu_ps(k0, cm));
      c1[m] = _mm512_add_ps(c1[m], _mm512_maskz_loadu_ps(k1, cm + 16));
    }
    _mm512_mask_storeu_ps(cm, k0, c0[m]);
    _mm512_mask_storeu_ps(cm + 16, k1, c1[m]);
  }
}

#endif  // RNNCORE_X86

// A micro-kernel for a compile-time row count MR, so the accumulators stay in registers:
// C (MR x n) (+)= A (MR x K) . panel (K x NR), n <= NR.
using Ukernel = void (*)(const float *, int, const float *, int, float *, int, int, bool);

// Indexed by the row count 1..MR (slot 0 unused).
constexpr Ukernel kPortable[] = {nullptr, &ukernel_portable<1>, &ukernel_portable<2>,
                                 &ukernel_portable<3>, &ukernel_portable<4>};
#ifdef RNNCORE_X86
template <bool AT>
constexpr Ukernel kAvx2[] = {nullptr,
                             &ukernel_avx2<1, AT>,
                             &ukernel_avx2<2, AT>,
                             &ukernel_avx2<3, AT>,
                             &ukernel_avx2<4, AT>,
                             &ukernel_avx2<5, AT>,
                             &ukernel_avx2<6, AT>};
template <bool AT>
constexpr Ukernel kAvx512[] = {nullptr,
                               &ukernel_avx512<1, AT>,
                               &ukernel_avx512<2, AT>,
                               &ukernel_avx512<3, AT>,
                               &ukernel_avx512<4, AT>,
                               &ukernel_avx512<5, AT>,
                               &ukernel_avx512<6, AT>,
                               &ukernel_avx512<7, AT>,
                               &ukernel_avx512<8, AT>,
                               &ukernel_avx512<9, AT>,
                               &ukernel_avx512<10, AT>,
                               &ukernel_avx512<11, AT>,
                               &ukernel_avx512<12, AT>};
#endif

struct PathInfo {
  const Ukernel *table;  // A row-major
  const Ukernel *at;     // A transposed (nullptr: the path has none)
  int mr, nr;
};

PathInfo info(GemmPath p) {
  switch (p) {
#ifdef RNNCORE_X86
    case GemmPath::Avx512:
      return {kAvx512<false>, kAvx512<true>, 12, 32};
    case GemmPath::Avx2:
      return {kAvx2<false>, kAvx2<true>, 6, 16};
#endif
    default:
      return {kPortable, nullptr, 4, 16};
  }
}

GemmPath detect() {
#ifdef RNNCORE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return GemmPath::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmPath::Avx2;
#endif
  return GemmPath::Portable;
}

std::atomic<int> g_path{-1};

}  // namespace

GemmPath best_gemm_path() {
  static const GemmPath best = detect();
  return best;
}

GemmPath gemm_path() {
  const int p = g_path.load(std::memory_order_relaxed);
  return p < 0 ? best_gemm_path() : static_cast<GemmPath>(p);
}

bool set_gemm_path(GemmPath p) {
  if (static_cast<int>(p) > static_cast<int>(best_gemm_path())) return false;
  g_path.store(static_cast<int>(p), std::memory_order_relaxed);
  return true;
}

const char *gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::Blas:
      return "blas";
    case GemmPath::Portable:
      return "portable";
    case GemmPath::Avx2:
      return "avx2";
    case GemmPath::Avx512:
      return "avx512";
  }
  return "?";
}

int packed_nr(GemmPath p) {
  return info(p).nr;
}

namespace {

#ifdef RNNCORE_X86
// dst[i * ldd + j] = src[j * lds + i] for an 8 x 8 block (AVX: unpack, shuffle, lane swap).
__attribute__((target("avx2"))) void transpose8x8(const float *src, int lds, float *dst, int ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + static_cast<idx>(i) * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + static_cast<idx>(i) * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + static_cast<idx>(i + 4) * ldd,
                     _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
#endif

}  // namespace

// Packing is paid once per call for every weight a call multiplies by (0.13 ms of a 2-layer
// LSTM's 0.5 ms fixed cost per forward + backward at H = 128 when it was element by element):
// rows are copied as plain loops (no memcpy call per 32 floats), and the transposing case goes
// by 8 x 8 blocks.
void pack_panels(float *dst, const float *w, int ldw, bool trans, int K, int n0, int n1, int NR) {
  const int N = n1 - n0;
  const bool avx2 = best_gemm_path() >= GemmPath::Avx2;  // the CPU has AVX2
  for (int j0 = 0; j0 < N; j0 += NR) {
    const int nb = std::min(NR, N - j0);
    float *panel = dst + static_cast<idx>(j0) * K;  // K x NR
    int k = 0;
#ifdef RNNCORE_X86
    if (trans && avx2)  // panel[k][j] = w[n0 + j0 + j][k], 8 x 8 at a time
      for (; k + 8 <= K; k += 8) {
        int j = 0;
        for (; j + 8 <= nb; j += 8)
          transpose8x8(w + static_cast<idx>(n0 + j0 + j) * ldw + k, ldw,
                       panel + static_cast<idx>(k) * NR + j, NR);
        for (int kk = k; kk < k + 8; ++kk) {
          float *row = panel + static_cast<idx>(kk) * NR;
          for (int jj = j; jj < nb; ++jj) row[jj] = w[static_cast<idx>(n0 + j0 + jj) * ldw + kk];
          for (int jj = nb; jj < NR; ++jj) row[jj] = 0.0f;
        }
      }
#endif
    (void)avx2;
    for (; k < K; ++k) {
      float *row = panel + static_cast<idx>(k) * NR;
      if (trans) {
        for (int j = 0; j < nb; ++j) row[j] = w[static_cast<idx>(n0 + j0 + j) * ldw + k];
      } else {
        const float *src = w + static_cast<idx>(k) * ldw + n0 + j0;
        for (int j = 0; j < nb; ++j) row[j] = src[j];
      }
      for (int j = nb; j < NR; ++j) row[j] = 0.0f;
    }
  }
}

namespace {

// C (M x N) (+)= op(A) . P for the kernels of `table` (row-major A, or transposed: at).
void run_packed(const PathInfo &pi, const Ukernel *table, bool at, float *c, int ldc,
                const float *a, int lda, const float *packed, int M, int N, int K,
                bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int m = 0; m < M; ++m)
        std::fill(c + static_cast<idx>(m) * ldc, c + static_cast<idx>(m) * ldc + N, 0.0f);
    return;
  }
  // Row chunks of 16 row blocks (a few dozen KB of A, kept in L2 while every panel passes over
  // them), then panel-outer inside a chunk: one panel (K x NR floats) stays in L1 while every
  // row block of the chunk uses it. A step's product (M <= 16 MR) is a single chunk. Each
  // element of C is still one dot product in k order: the chunking changes no result.
  const int chunk = 16 * pi.mr;
  for (int mc = 0; mc < M; mc += chunk) {
    const int m_end = std::min(M, mc + chunk);
    for (int j0 = 0; j0 < N; j0 += pi.nr) {
      const int nb = std::min(pi.nr, N - j0);
      const float *panel = packed + static_cast<idx>(j0) * K;
      // The chunk's rows in as few blocks as MR allows, of sizes differing by at most one
      // (50 rows: 5 x 10, not 4 x 12 + 2): a block of 1-3 rows runs its FMAs at a fraction
      // of the kernel's rate (too few accumulators to hide their latency).
      const int blocks = (m_end - mc + pi.mr - 1) / pi.mr;
      for (int b = 0, m0 = mc; b < blocks; ++b) {
        const int rows = (m_end - m0) / (blocks - b);
        table[rows](a + (at ? static_cast<idx>(m0) : static_cast<idx>(m0) * lda), lda, panel, K,
                    c + static_cast<idx>(m0) * ldc + j0, ldc, nb, accumulate);
        m0 += rows;
      }
    }
  }
}

}  // namespace

void gemm_packed(GemmPath path, float *c, int ldc, const float *a, int lda, const float *packed,
                 int M, int N, int K, bool accumulate) {
  const PathInfo pi = info(path);
  run_packed(pi, pi.table, false, c, ldc, a, lda, packed, M, N, K, accumulate);
}

bool has_weight_grad_kernel(GemmPath path) {
  return info(path).at != nullptr;
}

void RowWindow::open(GemmPath path, const WindowOperand *ops, int nops, float *scratch) {
  path_ = path;
  nops_ = std::min(nops, kMaxOperands);
  scratch_ = scratch;
  for (int o = 0; o < nops_; ++o) ops_[o] = ops[o];
  nsegs_ = rows_ = 0;
  started_ = false;
}

void RowWindow::add(const float *const *g, const float *const *x, int rows) {
  for (int done = 0; done < rows;) {
    if (rows_ == kWeightGradChunk) flush();
    const int take = std::min(rows - done, kWeightGradChunk - rows_);
    Segment &sg = segs_[nsegs_++];
    for (int o = 0; o < nops_; ++o) {
      sg.g[o] = g[o] + static_cast<idx>(done) * ops_[o].ldg;
      sg.x[o] = x[o] + static_cast<idx>(done) * ops_[o].D;
    }
    sg.rows = take;
    rows_ += take;
    done += take;
  }
}

void RowWindow::finish() {
  if (rows_ > 0) flush();
  if (started_) return;
  for (int o = 0; o < nops_; ++o) {  // no row at all: dW = 0
    const WindowOperand &op = ops_[o];
    std::fill(op.dw + static_cast<idx>(op.c0) * op.D, op.dw + static_cast<idx>(op.c1) * op.D, 0.0f);
  }
}

// Every operand's panels of X's window rows are packed once (in L2 while the window is used);
// then the gate columns go by groups of 16 row blocks of the kernel: the group's columns of G's
// window rows are copied into a contiguous block (256 x 192 floats at MR = 12, 192 KB, in L2: in
// place, rows a whole gradient row apart fell into a few cache sets) over which each panel
// (256 x NR floats, 32 KB, in L1) passes. An operand that reads the same columns of the same G
// as the one before it reuses the block.
void RowWindow::flush() {
  const PathInfo pi = info(path_);
  const int K = rows_;
  float *packed[kMaxOperands];
  float *next = scratch_;
  for (int o = 0; o < nops_; ++o) {
    const WindowOperand &op = ops_[o];
    packed[o] = next;
    for (int j0 = 0; j0 < op.D; j0 += pi.nr) {
      float *panel = next + static_cast<idx>(j0) * K;
      for (int i = 0, r = 0; i < nsegs_; r += segs_[i].rows, ++i)
        pack_panels(panel + static_cast<idx>(r) * pi.nr, segs_[i].x[o], op.D, false, segs_[i].rows,
                    j0, std::min(op.D, j0 + pi.nr), pi.nr);
    }
    next += packed_floats(K, op.D, pi.nr);
  }
  bool shares[kMaxOperands] = {};
  for (int o = 1; o < nops_; ++o) {
    shares[o] = ops_[o].c0 == ops_[o - 1].c0 && ops_[o].c1 == ops_[o - 1].c1 &&
                ops_[o].ldg == ops_[o - 1].ldg;
    for (int i = 0; i < nsegs_ && shares[o]; ++i) shares[o] = segs_[i].g[o] == segs_[i].g[o - 1];
  }
  const int group = 16 * pi.mr;
  int M = 0;
  for (int o = 0; o < nops_; ++o) M = std::max(M, ops_[o].c1 - ops_[o].c0);
  float *a = next;  // K x group
  for (int m0 = 0; m0 < M; m0 += group) {
    for (int o = 0; o < nops_; ++o) {
      const WindowOperand &op = ops_[o];
      const int mb = std::min(group, op.c1 - op.c0 - m0);
      if (mb <= 0) continue;
      if (!shares[o])
        for (int i = 0, r = 0; i < nsegs_; r += segs_[i].rows, ++i)
          for (int k = 0; k < segs_[i].rows; ++k)
            std::memcpy(a + static_cast<idx>(r + k) * mb,
                        segs_[i].g[o] + static_cast<idx>(k) * op.ldg + op.c0 + m0,
                        static_cast<std::size_t>(mb) * sizeof(float));
      run_packed(pi, pi.at, true, op.dw + static_cast<idx>(op.c0 + m0) * op.D, op.D, a, mb,
                 packed[o], mb, op.D, K, started_);
    }
  }
  started_ = true;
  nsegs_ = rows_ = 0;
}

void weight_grad_packed(GemmPath path, const float *g, int ldg, int K, int c0, int c1,
                        const WeightGradOperand *ops, int nops, float *scratch) {
  if (c1 <= c0) return;
  WindowOperand w[RowWindow::kMaxOperands];
  nops = std::min(nops, RowWindow::kMaxOperands);
  for (int o = 0; o < nops; ++o) w[o] = {c0, c1, ldg, ops[o].D, ops[o].dw};
  RowWindow win(path, w, nops, scratch);
  const float *gs[RowWindow::kMaxOperands], *xs[RowWindow::kMaxOperands];
  for (int o = 0; o < nops; ++o) gs[o] = g, xs[o] = ops[o].x;
  win.add(gs, xs, K);
  win.finish();
}

}  // namespace rnncore
