// The recurrent product of one time step (and the input side's big products), restricted to one
// thread's columns:
//
//   C[:, c0:c1] (+)= A (M x K) . op(W)[:, c0:c1],   op(W) = W^T (trans) or W
//
// float32 runs on the packed micro-kernel (common/packed_gemm.h): the thread packs its slice of
// W once per call, then every step reuses the panels. float64, or the "blas" path, calls
// OpenBLAS (gemv for a single row). The cells only ever see StepGemm::run, so the kernel
// behind it can change without touching them.
#pragma once

#include <cstddef>
#include <type_traits>

#include "common/blas.h"
#include "common/packed_gemm.h"
#include "common/workspace.h"

namespace rnncore {

template <typename T>
class StepGemm {
 public:
  StepGemm(const T *w, int ldw, bool trans, int K, int c0, int c1, const float *packed,
           GemmPath path)
      : w_(w), ldw_(ldw), trans_(trans), K_(K), c0_(c0), c1_(c1), packed_(packed), path_(path) {}

  void run(T *c, int ldc, const T *a, int lda, int M, bool accumulate) const {
    run_part(c, ldc, a, lda, M, accumulate, 0, c1_ - c0_);
  }

  // Columns [c0 + off, c0 + off + cols) only; on the packed path off is a multiple of panel().
  void run_part(T *c, int ldc, const T *a, int lda, int M, bool accumulate, int off,
                int cols) const {
    if (cols <= 0 || M <= 0) return;
    if constexpr (std::is_same_v<T, float>) {
      if (packed_) {
        gemm_packed(path_, c + c0_ + off, ldc, a, lda,
                    packed_ + static_cast<std::ptrdiff_t>(off) * K_, M, cols, K_, accumulate);
        return;
      }
    }
    const T beta = accumulate ? T(1) : T(0);
    const int c0 = c0_ + off, c1 = c0 + cols;
    if (M == 1)
      gemv<T>(!trans_, trans_ ? c1 - c0 : K_, trans_ ? K_ : c1 - c0, T(1),
              trans_ ? w_ + static_cast<std::ptrdiff_t>(c0) * ldw_ : w_ + c0, ldw_, a, beta,
              c + c0);
    else
      gemm_cols<T>(c0, c1, false, trans_, M, K_, a, lda, w_, ldw_, beta, c, ldc);
  }

  // Panel width of the packed path (its column tiles), 0 on OpenBLAS.
  int panel() const {
    if constexpr (std::is_same_v<T, float>)
      if (packed_) return packed_nr(path_);
    return 0;
  }

 private:
  const T *w_;
  int ldw_;
  bool trans_;
  int K_, c0_, c1_;
  const float *packed_;
  GemmPath path_;
};

// Room for the packed slices of every thread of one parallel region; allocated before the
// region (no allocation inside it), one slice per thread.
template <typename T>
class PackArena {
 public:
  // K: the product's inner size; N: total columns of op(W); threads: the region's size;
  // packed = false: every slice runs on OpenBLAS.
  PackArena(int K, int N, int threads, bool packed = true)
      : path_(std::is_same_v<T, float> && packed ? gemm_path() : GemmPath::Blas),
        nr_(packed_nr(path_)),
        K_(K),
        block_(path_ == GemmPath::Blas ? 0
                                       : packed_floats(K, N + threads * nr_, nr_) * sizeof(float)) {
  }

  // Thread p's StepGemm for columns [c0, c1); packs them (float32) on the calling thread. On a
  // grid of row groups (common/sequence.h row_groups) each group packs its own copy: the arena
  // is then sized for groups * N columns and group g's slices start at column base = g * N.
  StepGemm<T> slice(const T *w, int ldw, bool trans, int c0, int c1, int p, int base = 0) const {
    if constexpr (std::is_same_v<T, float>) {
      if (path_ != GemmPath::Blas && c1 > c0) {
        // Thread p's slice starts at column base + c0 + p*NR of the arena: slices never overlap.
        float *dst = block_.as<float>() + static_cast<std::ptrdiff_t>(K_) * (base + c0 + p * nr_);
        pack_panels(dst, w, ldw, trans, K_, c0, c1, nr_);
        return StepGemm<T>(w, ldw, trans, K_, c0, c1, dst, path_);
      }
    }
    (void)p;
    (void)base;
    return StepGemm<T>(w, ldw, trans, K_, c0, c1, nullptr, GemmPath::Blas);
  }

 private:
  GemmPath path_;
  int nr_, K_;
  Block block_;
};

// Whether the input side's big products (x W_ih^T, dgates W_ih) run on the packed kernel: only
// while the packed weights (K x N floats) fit in a core's L2 next to the rows streaming past
// them. gemm_packed does not block K, so past that every row chunk streams the whole packed W
// from L3 again (measured: the medium-L2 LSTM backward, K = 2048, scaled 1.6x on 2 threads
// instead of 1.9x); OpenBLAS blocks K and keeps those products.
inline bool input_side_packed(int K, int N) {
  return static_cast<std::size_t>(K) * static_cast<std::size_t>(N) * sizeof(float) <=
         (std::size_t(512) << 10);
}

// Whole copies of op(W), one per thread, for a product each thread runs over all columns on its
// own rows (dx = dgates W_ih): allocated before the region, each thread packs its own copy
// (packed = false: OpenBLAS, nothing packed).
template <typename T>
class PackCopies {
 public:
  PackCopies(int K, int N, int threads, bool packed = true)
      : path_(std::is_same_v<T, float> && packed ? gemm_path() : GemmPath::Blas),
        K_(K),
        N_(N),
        stride_(path_ == GemmPath::Blas ? 0 : packed_floats(K, N, packed_nr(path_))),
        block_(stride_ * static_cast<std::size_t>(threads) * sizeof(float)) {}

  // Thread p's StepGemm over every column of op(W); packs them (float32) on the calling thread.
  StepGemm<T> copy(const T *w, int ldw, bool trans, int p) const {
    if constexpr (std::is_same_v<T, float>) {
      if (path_ != GemmPath::Blas && N_ > 0) {
        float *dst = block_.as<float>() + stride_ * static_cast<std::size_t>(p);
        pack_panels(dst, w, ldw, trans, K_, 0, N_, packed_nr(path_));
        return StepGemm<T>(w, ldw, trans, K_, 0, N_, dst, path_);
      }
    }
    (void)p;
    return StepGemm<T>(w, ldw, trans, K_, 0, N_, nullptr, GemmPath::Blas);
  }

 private:
  GemmPath path_;
  int K_, N_;
  std::size_t stride_;
  Block block_;
};

}  // namespace rnncore
