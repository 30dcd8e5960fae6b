// Pointwise activations written so that GCC vectorises them inside `#pragma omp simd` loops
// (plain arithmetic and selects, no calls into libm for float32), and numerically safe: no
// overflow for any input, finite for |x| = 1e4, NaN in -> NaN out.
//
// float32 tanh/sigmoid use our own exp on a non-positive argument (so it can never overflow)
// and a short odd polynomial for tanh near 0, where 1 - 2/(e^2x + 1) would cancel. Relative
// error is a few ulp; float64 uses libm.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace rnncore {

// exp(y) for y <= 0 (larger y is not needed and not supported). Cody-Waite range reduction
// y = n ln2 + r, |r| <= ln2/2, then a degree-7 Taylor polynomial (truncation error < 6e-9).
// Inputs below -87 give 0. NaN propagates. No float->int conversion, so no undefined
// behaviour on NaN.
inline float exp_nonpositive(float y) {
  const float y_in = y;
  y = y < -87.0f ? -87.0f : y;                   // keeps 2^n normal; exp(-87) ~ 1.6e-38
  const float shifter = 12582912.0f;             // 1.5 * 2^23: adding it rounds to an integer
  float t = y * 1.44269504088896341f + shifter;  // n + shifter, n in the low mantissa bits
  const float n = t - shifter;
  float r = y - n * 0.693145751953125f;  // ln2 split in a high part exact in float ...
  r = r - n * 1.42860682030941723e-06f;  // ... and the low remainder
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  std::uint32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 127u) << 23;  // low bits of t hold n (two's complement): 2^n as a float
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  // Below the clamp the true value is a denormal or 0: flush it to 0, so that sigmoid(-inf) is
  // exactly 0 and 0 * inf downstream is NaN, as in NumPy and PyTorch (not inf, or a number).
  return y_in < -87.0f ? 0.0f : p * scale;
}

inline float tanh_f(float x) {
  const float a = std::fabs(x);
  // |x| < 0.625: x + x^3 P(x^2), P fitted by weighted least squares (relative error < 5e-9).
  const float s = a * a;
  float p = -0.005691985599696636f;
  p = p * s + 0.020626291632652283f;
  p = p * s - 0.05373531952500343f;
  p = p * s + 0.13331381976604462f;
  p = p * s - 0.3333328068256378f;
  const float small = a + a * s * p;
  const float e = exp_nonpositive(-2.0f * a);  // in (0, 1]: never overflows
  const float large = (1.0f - e) / (1.0f + e);
  const float r = a < 0.625f ? small : large;
  return std::copysign(r, x);
}

inline float sigmoid_f(float x) {
  const float e = exp_nonpositive(-std::fabs(x));     // in (0, 1]
  const float pos = 1.0f / (1.0f + e);                // sigmoid(|x|)
  return x >= 0.0f ? pos : (x < 0.0f ? e * pos : x);  // the last arm passes NaN through
}

inline double tanh_f(double x) {
  return std::tanh(x);
}

inline double sigmoid_f(double x) {
  const double e = std::exp(-std::fabs(x));
  const double pos = 1.0 / (1.0 + e);
  return x >= 0.0 ? pos : (x < 0.0 ? e * pos : x);
}

// ReLU that propagates NaN (as torch.relu does): NaN < 0 is false.
template <typename T>
inline T relu_f(T x) {
  return x < T(0) ? T(0) : x;
}

}  // namespace rnncore
