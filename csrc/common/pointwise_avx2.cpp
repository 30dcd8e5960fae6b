// The float32 pointwise kernels for AVX2 + FMA (common/pointwise.h): a unit block of 16 in two
// ymm. Compiled with the baseline flags (-mavx2 -mfma, CMakeLists.txt).
#include <cstddef>

#include "common/pointwise.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace rnncore {

namespace {

struct V {
  __m256 lo, hi;
};
struct Mask {
  __m256 lo, hi;
};

inline V set1(float a) {
  return {_mm256_set1_ps(a), _mm256_set1_ps(a)};
}
inline V load(const float *p) {
  return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
inline void store(float *p, V a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
// Lanes [0, n) of 16 as two integer masks for maskload / maskstore.
inline void first(int n, __m256i &lo, __m256i &hi) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
  hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8), iota);
}
inline V load_n(const float *p, int n) {
  __m256i lo, hi;
  first(n, lo, hi);
  return {_mm256_maskload_ps(p, lo), _mm256_maskload_ps(p + 8, hi)};
}
inline void store_n(float *p, V a, int n) {
  __m256i lo, hi;
  first(n, lo, hi);
  _mm256_maskstore_ps(p, lo, a.lo);
  _mm256_maskstore_ps(p + 8, hi, a.hi);
}
#define RNNCORE_V2(expr_lo, expr_hi) {expr_lo, expr_hi}
inline V add(V a, V b) {
  return RNNCORE_V2(_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi));
}
inline V sub(V a, V b) {
  return RNNCORE_V2(_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi));
}
inline V mul(V a, V b) {
  return RNNCORE_V2(_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi));
}
inline V fmadd(V a, V b, V c) {
  return RNNCORE_V2(_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi));
}
inline V fnmadd(V a, V b, V c) {
  return RNNCORE_V2(_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi));
}
inline V abs_v(V a) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  return RNNCORE_V2(_mm256_andnot_ps(sign, a.lo), _mm256_andnot_ps(sign, a.hi));
}
inline V min_v(V a, V b) {
  return RNNCORE_V2(_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi));  // b where NaN
}
inline Mask lt(V a, V b) {
  return {_mm256_cmp_ps(a.lo, b.lo, _CMP_LT_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_LT_OQ)};
}
inline V select(Mask m, V a, V b) {
  return RNNCORE_V2(_mm256_blendv_ps(b.lo, a.lo, m.lo), _mm256_blendv_ps(b.hi, a.hi, m.hi));
}
// rcpps has 1.5·2^-12 relative error: one Newton step leaves ~2^-22 (1/1 would come out as
// 1 - 2^-24, so sigmoid(0) = 0.5 - 2^-25 and tanh(inf) < 1), a second one ~1 ulp.
inline __m256 rcp_nr1(__m256 d) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 r = _mm256_rcp_ps(d);
  r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, one), r);
  return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, one), r);
}
inline V rcp_nr(V d) {
  return {rcp_nr1(d.lo), rcp_nr1(d.hi)};
}
inline __m256 pow2_bits1(__m256 t) {
  const __m256i bits = _mm256_castps_si256(t);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(127)), 23));
}
inline V pow2_bits(V t) {
  return {pow2_bits1(t.lo), pow2_bits1(t.hi)};
}
inline V max_v(V a, V b) {
  return RNNCORE_V2(_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi));  // b where NaN
}
inline V neg_abs(V a) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  return RNNCORE_V2(_mm256_or_ps(a.lo, sign), _mm256_or_ps(a.hi, sign));
}
inline V or_sign(V r, V x) {  // r | (x & sign)
  const __m256 sign = _mm256_set1_ps(-0.0f);
  return RNNCORE_V2(_mm256_or_ps(r.lo, _mm256_and_ps(sign, x.lo)),
                    _mm256_or_ps(r.hi, _mm256_and_ps(sign, x.hi)));
}
inline V scale_or_zero(V p, V, V t, Mask zero) {  // p * 2^n (n in t's low bits), 0 where `zero`
  return select(zero, set1(0.0f), mul(p, pow2_bits(t)));
}
#undef RNNCORE_V2

constexpr int kSamplerBlocks = 2;  // sampler row blocks per pass: 8 ymm
#include "common/pointwise_simd.h"

}  // namespace

const PointwiseKernels kPointwiseAvx2 = kKernels;

}  // namespace rnncore

#endif
