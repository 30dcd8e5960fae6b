// Gate-blocked weight layout shared by the gated cells (LSTM G = 4, GRU G = 3).
//
// PyTorch stores gate g of hidden unit j in row g*H + j of W_ih (G*H, D) and W_hh (G*H, H). The
// kernels re-lay those rows in blocks of kUnitBlock hidden units: block k holds units
// [16k, 16k + w) (w = 16, or what is left for the last block) and, inside it, the G gates one
// after another:
//
//   PyTorch row g*H + 16k + u   ->   blocked row 16*G*k + g*w + u
//
// So the gates of any unit range [j0, j1) with j0 a multiple of 16 are the contiguous rows
// [G*j0, G*j1): a thread that owns those units computes all their gates with one GEMM per step
// and applies the pointwise update itself, without waiting for other threads. W is constant
// over the sequence, so the re-lay is paid once per call (it is part of copying the weights
// into the cache). The same permutation applies to the gate columns of the workspace and to
// the biases; gradients are permuted back on the way out.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

namespace rnncore {

constexpr int kUnitBlock = 16;

struct GateBlocks {
  int H, G;
  int blocks() const { return (H + kUnitBlock - 1) / kUnitBlock; }
  int width(int k) const { return std::min(kUnitBlock, H - kUnitBlock * k); }
  // First blocked row (or column) of block k.
  std::ptrdiff_t begin(int k) const { return static_cast<std::ptrdiff_t>(kUnitBlock) * G * k; }
  std::ptrdiff_t row(int g, int j) const {
    const int k = j / kUnitBlock;
    return begin(k) + static_cast<std::ptrdiff_t>(g) * width(k) + (j - kUnitBlock * k);
  }
};

// Calls f(std::integral_constant<int, W>) with W = kUnitBlock for a full block, else W = 0 (a
// partial last block, width known only at run time). A loop of constant trip count kUnitBlock
// compiles to two plain vector iterations; with a run-time width GCC adds remainder handling
// that costs as much as the activations (measured on the LSTM's pointwise loops).
template <typename F>
inline void with_block_width(int width, F &&f) {
  if (width == kUnitBlock)
    f(std::integral_constant<int, kUnitBlock>{});
  else
    f(std::integral_constant<int, 0>{});
}

// f(k, w) for each unit block k in [k0, k1), w its width: std::integral_constant<int, kUnitBlock>
// for a full block (with_block_width), an int for a partial last one.
template <typename F>
void for_unit_blocks(GateBlocks gb, int k0, int k1, F &&f) {
  for (int k = k0; k < k1; ++k)
    with_block_width(gb.width(k), [&](auto width) {
      if constexpr (decltype(width)::value != 0)
        f(k, width);
      else
        f(k, gb.width(k));
    });
}

// dst (G*H, cols) blocked <- src (G*H, cols) in PyTorch order; cols = 1 for a bias.
template <typename T>
void block_gate_rows(T *dst, const T *src, GateBlocks gb, std::ptrdiff_t cols) {
  for (int g = 0; g < gb.G; ++g)
    for (int j = 0; j < gb.H; ++j)
      std::memcpy(dst + gb.row(g, j) * cols,
                  src + (static_cast<std::ptrdiff_t>(g) * gb.H + j) * cols,
                  static_cast<std::size_t>(cols) * sizeof(T));
}

// dst (G*H, cols) in PyTorch order <- the rows of src (blocked) that belong to units [j0, j1).
template <typename T>
void unblock_gate_rows(T *dst, const T *src, GateBlocks gb, std::ptrdiff_t cols, int j0, int j1) {
  for (int g = 0; g < gb.G; ++g)
    for (int j = j0; j < j1; ++j)
      std::memcpy(dst + (static_cast<std::ptrdiff_t>(g) * gb.H + j) * cols,
                  src + gb.row(g, j) * cols, static_cast<std::size_t>(cols) * sizeof(T));
}

// dst (G*H) blocked = b_ih + b_hh, zeros where absent: the one bias of a cell whose two biases
// add (RNN, LSTM).
template <typename T>
void sum_bias_blocked(T *dst, const T *b_ih, const T *b_hh, GateBlocks gb) {
  for (int g = 0; g < gb.G; ++g)
    for (int j = 0; j < gb.H; ++j) {
      const std::ptrdiff_t i = static_cast<std::ptrdiff_t>(g) * gb.H + j;
      dst[gb.row(g, j)] = (b_ih ? b_ih[i] : T(0)) + (b_hh ? b_hh[i] : T(0));
    }
}

}  // namespace rnncore
