// The sampling loop of a character-level language model: one token at a time, batch 1.
//
// Shape legend: L layers, H hidden size, G gates (1 RNN, 4 LSTM i,f,g,o, 3 GRU r,z,n),
// V vocabulary size, E embedding size, D_k the input size of layer k (E, V for one-hot, or H).
//   w_ih_k (G*H, D_k)   w_hh_k (G*H, H)   b_ih_k, b_hh_k (G*H)   PyTorch's layout and gate order
//   embedding (V, E)    w_out (V, H)      b_out (V)
//   h, c (L, H)         the state, read and updated in place
//
// Per token: layer 0's input projection is a row of a table computed once per Sampler
// (embedding w_ih_0^T + b_ih_0, V x G*H), every other product a gemv (one over [x; h] for the
// LSTM and the RNN), then the output logits and a draw from softmax(logits / temperature),
// optionally restricted to the top k.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace rnncore {

enum class CellKind { RnnTanh, RnnRelu, Lstm, Gru, GruResetBefore };

int cell_gates(CellKind k);

template <typename T>
struct SampleLayer {
  const T *w_ih;  // (G*H, D)
  const T *w_hh;  // (G*H, H)
  const T *b_ih;  // (G*H) or nullptr
  const T *b_hh;  // (G*H) or nullptr
  int D;
};

template <typename T>
struct SampleModel {
  CellKind cell;
  int H, V;
  std::vector<SampleLayer<T>> layers;  // L of them
  const T *embedding;                  // (V, E), or nullptr for one-hot input (D_0 = V)
  const T *w_out;                      // (V, H)
  const T *b_out;                      // (V) or nullptr
};

struct SampleOptions {
  double temperature;  // > 0
  int top_k;           // 0: the whole vocabulary
  bool greedy;         // argmax instead of a draw
};

// xoshiro256** (Blackman and Vigna): 4 x 64-bit state, advanced in place.
struct Rng {
  std::uint64_t *s;
  std::uint64_t next();
  double uniform();  // [0, 1), 53 random bits
};

// One model made ready to sample from: its weights packed for the per-token products and layer
// 0's table (embedding w_ih_0^T + biases, V x G*H), built once and used by every run. It copies
// what it needs: m's arrays may be freed or changed afterwards (a run samples the weights as they
// were when the Sampler was built). run is const and may be called from several threads at once
// with their own h, c, rng and out.
template <typename T>
class Sampler {
 public:
  explicit Sampler(const SampleModel<T> &m);  // m has at least one layer, H >= 1, V >= 1
  ~Sampler();
  Sampler(Sampler &&) noexcept;
  Sampler(const Sampler &) = delete;
  Sampler &operator=(const Sampler &) = delete;

  int layers() const;
  int hidden() const;
  int vocab() const;
  CellKind cell() const;

  // Feed prime[0..P) (P >= 1, ids < V), then draw n tokens into out: out[0] from the
  // distribution after the last prime token, out[i] after out[i-1]. The last drawn token is
  // *not* fed: a continuation run passes it as its prime. h and c (LSTM only, else nullptr),
  // each (L, H), are updated in place.
  void run(T *h, T *c, const std::int32_t *prime, long long P, long long n,
           const SampleOptions &opt, Rng rng, std::int32_t *out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Seconds for `calls` float32 products y = W x of a (rows, cols) W through the sampler's own
// matrix-vector kernel: the benchmarks' ceiling for sample_loop, whose every token reads its
// weights once. Throws if the product is wrong.
double gemv_probe(int rows, int cols, long calls);

}  // namespace rnncore
