// A packed float32 GEMM for the recurrent product of each time step.
//
// W_hh is the same for all T steps, so each thread packs its slice of it once per call into
// panels of NR columns (K rows of NR contiguous floats, zero-padded) and then runs a register-
// blocked micro-kernel over (MR rows of the state) x (one panel) for every step. OpenBLAS's
// small-M sgemm (M = 32..128) reached 100-190 GFLOP/s on one AVX-512 core where a packed kernel
// of this kind (oneDNN's) reached 210-250, and much less under OPENBLAS_CORETYPE=Haswell.
//
// Every element of C is one dot product accumulated over k = 0..K-1 in order, whatever the
// shape of the call: results do not depend on how the columns are split between threads.
//
// Kernels, chosen at run time from the CPU (not from OPENBLAS_CORETYPE):
//   avx512   MR = 12, NR = 32   (two zmm per row, 24 accumulators)
//   avx2     MR = 6,  NR = 16   (two ymm per row, 12 accumulators; AVX2 + FMA)
//   portable MR = 4,  NR = 16   (plain C++, always correct; the reference for the others)
// and "blas" sends the product back to OpenBLAS.
#pragma once

#include <cstddef>

namespace rnncore {

enum class GemmPath { Blas = 0, Portable = 1, Avx2 = 2, Avx512 = 3 };

GemmPath gemm_path();            // the path the float32 kernels use
bool set_gemm_path(GemmPath p);  // false (and no change) if the CPU cannot run it
GemmPath best_gemm_path();       // what the CPU supports best
const char *gemm_path_name(GemmPath p);
int packed_nr(GemmPath p);  // panel width of a path

// Floats needed to pack a K x N block with panel width NR.
inline std::size_t packed_floats(int K, int N, int NR) {
  return static_cast<std::size_t>(K) * static_cast<std::size_t>((N + NR - 1) / NR * NR);
}

// Pack columns [n0, n1) of op(W) (K x N_total) into `dst` (packed_floats(K, n1 - n0, NR)):
//   trans = true:  op(W) = W^T, W (N_total x K) row-major with leading dimension ldw;
//   trans = false: op(W) = W,   W (K x N_total) row-major with leading dimension ldw.
void pack_panels(float *dst, const float *w, int ldw, bool trans, int K, int n0, int n1, int NR);

// C (M x N) = A (M x K) . P  (or C += ... with accumulate), P packed by pack_panels for the
// same path; A and C row-major with leading dimensions lda and ldc.
void gemm_packed(GemmPath path, float *c, int ldc, const float *a, int lda, const float *packed,
                 int M, int N, int K, bool accumulate);

// The weight gradients of a cell: dW[c0:c1, :] = G[:, c0:c1]^T X for each operand (at most 4),
// G (K x ldg) and X (K x D) row-major, dW (rows, D) row-major (rows c0..c1 written). G is read
// in place by a kernel that takes A transposed; X is packed chunk by chunk into `scratch`
// (weight_grad_scratch_floats of the operands' total D). Only where has_weight_grad_kernel.
struct WeightGradOperand {
  const float *x;
  int D;
  float *dw;
};
constexpr int kWeightGradChunk = 256;
inline std::size_t weight_grad_scratch_floats(int total_d, int operands) {
  return static_cast<std::size_t>(kWeightGradChunk) *
         static_cast<std::size_t>(total_d + 32 * operands + 16 * 12);
}
bool has_weight_grad_kernel(GemmPath path);
void weight_grad_packed(GemmPath path, const float *g, int ldg, int K, int c0, int c1,
                        const WeightGradOperand *ops, int nops, float *scratch);

// The same products over rows that come in runs (a cell's rows of each step):
//   dw_o[c0_o:c1_o, :] = sum over the rows added of G_o[row, c0_o:c1_o]^T X_o[row, :]
// for each operand o (at most kMaxOperands). add() takes a run of consecutive rows (G_o's at
// g[o], leading dimension ldg_o; X_o's at x[o], leading dimension D_o); every kWeightGradChunk
// rows the window is multiplied out into dw (the first window overwrites it); finish() does the
// rest (dw = 0 if no row came). Each element is the sum over the windows, in order, of one
// k-ordered dot product per window: it depends on the rows and their order, not on the columns.
struct WindowOperand {
  int c0, c1, ldg, D;
  float *dw;
};
class RowWindow {
 public:
  static constexpr int kMaxOperands = 2;
  RowWindow() = default;
  RowWindow(GemmPath path, const WindowOperand *ops, int nops, float *scratch) {
    open(path, ops, nops, scratch);
  }
  void open(GemmPath path, const WindowOperand *ops, int nops, float *scratch);
  void add(const float *const *g, const float *const *x, int rows);
  void finish();

 private:
  void flush();
  struct Segment {
    const float *g[kMaxOperands], *x[kMaxOperands];
    int rows;
  };
  GemmPath path_ = GemmPath::Blas;
  WindowOperand ops_[kMaxOperands] = {};
  int nops_ = 0;
  float *scratch_ = nullptr;
  Segment segs_[kWeightGradChunk];
  int nsegs_ = 0, rows_ = 0;
  bool started_ = false;
};

}  // namespace rnncore
