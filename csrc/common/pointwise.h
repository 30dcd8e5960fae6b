// The float32 pointwise passes of the cells (bias + activations + state update, and their
// backward), one set of kernels per ISA, chosen once at run time from the CPU (as the packed
// micro-kernel is, common/packed_gemm.h):
//
//   avx512    16 lanes in one zmm, compiled with -mavx512f/bw/dq/vl (common/pointwise_avx512.cpp)
//   avx2      16 lanes in two ymm, AVX2 + FMA (common/pointwise_avx2.cpp)
//   portable  the cells' own C++ loops (common/activations.h): the reference, and float64's path
//
// The SIMD paths compute sigmoid and tanh without a division: 1/(1 + e) comes from the
// hardware estimate refined by Newton steps r <- r + r (1 - d r) (FMA): rcp14 (2^-14 relative
// error) once on avx512, rcpps (1.5·2^-12) twice on avx2, so 1/1 is exactly 1 on both and the
// result is within about an ulp of the quotient. With FMA in the polynomials and the range
// reduction the paths differ from each other and from the portable one by a few ulp (measured
// over [-20, 20]: tanh <= 2.75 ulp, sigmoid <= 3 ulp of float64's; tests/test_pointwise.py
// pins 4 ulp). NaN in -> NaN out, sigmoid(-inf) = 0, sigmoid(0) = 0.5, tanh(±inf) = ±1, as on
// the portable path. Every element is a function of its own inputs only (a partial last block
// runs the same code under a mask), so results do not depend on the thread count, the batch
// row or the lengths.
//
// Shape legend: B rows of the step, H hidden size, G gates; a unit block k holds units
// [16k, 16k + w) and its gates sit at blocked columns [base, base + G*w) (common/gates.h).
#pragma once

#include <cstddef>

namespace rnncore {

enum class PointwisePath { Portable = 0, Avx2 = 1, Avx512 = 2 };

// The float32 kernels of one SIMD path. Pointers are the cells' (common/gates.h layouts).
struct PointwiseKernels {
  // LSTM forward, one unit block of B rows: activates the gates (B,4H) in place at columns
  // [base, base + 4w) (i, f, g, o, w each) and writes c, h (B,H) at units [j0, j0 + w).
  void (*lstm_forward)(float *gates, float *c, float *h, const float *c_prev, const float *bias,
                       std::ptrdiff_t base, int j0, int w, int B, int H);
  // LSTM backward, unit blocks [k0, k1) (16 units each, the last may be partial) of B rows, row
  // by row: dgates (B,4H) from dh (+ dy, or nullptr) and dc; dc (B,H) becomes dc_{t-1} in
  // place.
  void (*lstm_backward)(float *dgates, float *dc, const float *dh, const float *dy,
                        const float *gates, const float *c, const float *c_prev, int k0, int k1,
                        int B, int H);
  // GRU (reset after), one unit block: gi (B,3H) input-side pre-activations -> activated
  // r, z, n in place; gh (B,3H) the step's h W_hh^T; aux (B,H) = W_hn h + b_hn; h (B,H).
  // Gate columns of the block: r at cr, z at cr + w, n at cr + 2w, in gi, gh and the biases.
  void (*gru_forward)(float *gi, const float *gh, const float *h_prev, float *aux, float *h,
                      const float *b_ih, const float *b_hh, std::ptrdiff_t cr, int j0, int w, int B,
                      int H);
  // GRU (reset after) backward, unit blocks [k0, k1) of B rows, row by row: from dh (+ dy) to
  // dgi and dgh (B,3H); dh (B,H) becomes the direct path's part of dh_{t-1}.
  void (*gru_backward)(float *dgi, float *dgh, float *dh, const float *dy, const float *gates,
                       const float *h_prev, const float *aux, int k0, int k1, int B, int H);
  // GRU (reset before), the two activation passes of a step for one unit block. rz: r, z
  // activated in place in gi (at ci, ci + w) from gi + gh (r, z at ch, ch + w in gh) and the
  // biases at the same columns; aux (B,H) = r ⊙ h_prev. n: n = tanh(gi + b_in + gh + b_hn)
  // in place in gi at ci + 2w (gh and b_hh at chn), then h (B,H) from z (gi at ci + w).
  void (*gru_rb_forward_rz)(float *gi, const float *gh, const float *h_prev, float *aux,
                            const float *b_ih, const float *b_hh, std::ptrdiff_t ci,
                            std::ptrdiff_t ch, int j0, int w, int B, int H);
  void (*gru_rb_forward_n)(float *gi, const float *gh, const float *h_prev, float *h,
                           const float *b_ih, const float *b_hh, std::ptrdiff_t ci,
                           std::ptrdiff_t chn, int j0, int w, int B, int H);
  // LSTM step of the sampler (batch 1, PyTorch's gate order): the pre-activations `gates`
  // (4H) as i, f, g, o blocks of H; c and h (H) are updated in place.
  void (*lstm_step_row)(float *h, float *c, const float *gates, int H);
  // RNN: h = tanh(h + bias) in place over columns [j0, j1) of B rows of width H.
  void (*rnn_tanh)(float *h, const float *bias, int B, int H, int j0, int j1);
  // y = tanh(x) or sigmoid(x), n elements (tests and probes).
  void (*tanh)(float *y, const float *x, std::ptrdiff_t n);
  void (*sigmoid)(float *y, const float *x, std::ptrdiff_t n);
  // The sampler's matrix-vector product: nb blocks of 32 rows packed [cols][32], `stride`
  // floats apart; y (32 nb) = init (32 nb) + each block's rows times x (cols), the FMAs over j
  // in order starting from init.
  void (*column_sums)(float *y, const float *blk, std::ptrdiff_t stride, const float *x, int cols,
                      int nb, const float *init);
};

PointwisePath pointwise_path();            // the path the float32 pointwise passes use
bool set_pointwise_path(PointwisePath p);  // false (and no change) if the CPU cannot run it
PointwisePath best_pointwise_path();       // what the CPU supports best
const char *pointwise_path_name(PointwisePath p);
// The kernels of the path in use, or nullptr on the portable path (the cells' own loops).
const PointwiseKernels *pointwise_kernels();

// Defined by the per-ISA translation units (only on x86-64).
extern const PointwiseKernels kPointwiseAvx2;
extern const PointwiseKernels kPointwiseAvx512;

}  // namespace rnncore
