// The language model's output layer: linear projection, softmax and cross-entropy, fused.
//
// Shape legend: N positions (T*B rows), H hidden size, V vocabulary size.
//   h (N,H)   w (V,H) PyTorch's nn.Linear layout   b (V)   targets (N)   logits (N,V)
//
//   logits = h w^T + b,   loss = mean_{n kept} [ logsumexp(logits_n) - logits_n[target_n] ]
//   dlogits = (softmax(logits) - onehot(targets)) / K on the K kept rows, 0 on the others
// (keep (N) of 0/1, or nullptr: every row kept, K = N).
//   dh = dlogits w,   dw = dlogits^T h,   db = sum_n dlogits_n
#pragma once

#include <cstdint>

namespace rnncore {

// Fused softmax + cross-entropy of rows [0, N): writes every row's loss (nats) to row_loss and,
// when dlogits is not null, the gradient of the *mean* loss (scale = 1/K) into dlogits, which
// may alias logits (each row is read before it is overwritten). Max-subtracted log-sum-exp:
// finite for any finite logits; a NaN in a row gives NaN in that row only. A dropped row
// (keep[n] == 0) is not read: its loss is 0 and its gradient row 0, and its target is ignored.
template <typename T>
void softmax_xent(T *row_loss,               // (N) out
                  T *dlogits,                // (N,V) out, or nullptr
                  const T *logits,           // (N,V)
                  const std::int32_t *y,     // (N) in [0, V) where kept
                  const std::uint8_t *keep,  // (N) 0/1, or nullptr (all kept)
                  T scale,                   // d(mean loss)/d(row loss): 1/K
                  long long N, int V);

// The whole head, threaded: logits, loss and, when dh is not null, the gradients (dw and db
// overwritten, not accumulated). `logits` is (N,V) scratch. Returns the mean loss over the K
// kept rows, summed in row order (the thread count changes it only through the rounding of each
// thread's GEMM); with K = 0 the loss is 0 and every gradient 0.
template <typename T>
double linear_xent(T *dh,                     // (N,H) out, or nullptr (loss only)
                   T *dw,                     // (V,H) out (when dh)
                   T *db,                     // (V) out (when dh), or nullptr for no bias
                   T *logits,                 // (N,V) scratch
                   T *row_loss,               // (N) scratch
                   const T *h,                // (N,H)
                   const T *w,                // (V,H)
                   const T *b,                // (V) or nullptr
                   const std::int32_t *y,     // (N)
                   const std::uint8_t *keep,  // (N) 0/1, or nullptr (all kept)
                   int N, int H, int V);

}  // namespace rnncore
