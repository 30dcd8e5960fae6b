// The float32 pointwise kernels for AVX-512 (common/pointwise.h): one zmm holds a whole unit
// block of 16. CMakeLists.txt compiles this file alone with -mavx512f -mavx512bw -mavx512dq
// -mavx512vl; it runs only where pointwise.cpp found those features at run time.
#include <cstddef>

#include "common/pointwise.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>

namespace rnncore {

namespace {

struct V {
  __m512 v;
};
using Mask = __mmask16;

inline V set1(float a) {
  return {_mm512_set1_ps(a)};
}
inline V load(const float *p) {
  return {_mm512_loadu_ps(p)};
}
inline void store(float *p, V a) {
  _mm512_storeu_ps(p, a.v);
}
inline __mmask16 first(int n) {
  return static_cast<__mmask16>((1u << n) - 1u);  // 0 <= n < 16 here
}
inline V load_n(const float *p, int n) {
  return {_mm512_maskz_loadu_ps(first(n), p)};
}
inline void store_n(float *p, V a, int n) {
  _mm512_mask_storeu_ps(p, first(n), a.v);
}
inline V add(V a, V b) {
  return {_mm512_add_ps(a.v, b.v)};
}
inline V sub(V a, V b) {
  return {_mm512_sub_ps(a.v, b.v)};
}
inline V mul(V a, V b) {
  return {_mm512_mul_ps(a.v, b.v)};
}
inline V fmadd(V a, V b, V c) {
  return {_mm512_fmadd_ps(a.v, b.v, c.v)};
}
inline V fnmadd(V a, V b, V c) {
  return {_mm512_fnmadd_ps(a.v, b.v, c.v)};
}
inline V abs_v(V a) {
  return {_mm512_abs_ps(a.v)};
}
inline V min_v(V a, V b) {
  return {_mm512_min_ps(a.v, b.v)};  // b where either is NaN
}
inline Mask lt(V a, V b) {
  return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ);
}
inline V select(Mask m, V a, V b) {
  return {_mm512_mask_blend_ps(m, b.v, a.v)};
}
inline V rcp_nr(V d) {
  const __m512 r0 = _mm512_rcp14_ps(d.v);
  return {_mm512_fmadd_ps(r0, _mm512_fnmadd_ps(d.v, r0, _mm512_set1_ps(1.0f)), r0)};
}
// GCC 12 warns inside avx512fintrin.h that the _mm512_undefined_*() of some intrinsics "may be
// used uninitialized" (a false positive of the header, not of this code).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
inline V max_v(V a, V b) {
  return {_mm512_max_ps(a.v, b.v)};  // b where either is NaN
}
inline V neg_abs(V a) {
  return {_mm512_or_ps(a.v, _mm512_set1_ps(-0.0f))};
}
inline V or_sign(V r, V x) {  // r | (x & sign): one ternary-logic op
  return {_mm512_castsi512_ps(
      _mm512_ternarylogic_epi32(_mm512_castps_si512(r.v), _mm512_castps_si512(x.v),
                                _mm512_castps_si512(_mm512_set1_ps(-0.0f)), 0xF8))};
}
// p * 2^n (n a whole number: the same result as the AVX2 unit's multiply by the float whose bits
// are (bits(t) + 127) << 23), 0 where `zero`: one scalef with a zeroing mask.
inline V scale_or_zero(V p, V n, V, Mask zero) {
  return {_mm512_maskz_scalef_ps(static_cast<__mmask16>(~zero), p.v, n.v)};
}

constexpr int kSamplerBlocks = 4;  // sampler row blocks per pass: 8 zmm
#include "common/pointwise_simd.h"
#pragma GCC diagnostic pop

}  // namespace

const PointwiseKernels kPointwiseAvx512 = kKernels;

}  // namespace rnncore

#elif defined(__x86_64__) || defined(_M_X64)
#error "common/pointwise_avx512.cpp must be compiled with -mavx512f -mavx512dq (CMakeLists.txt)"
#endif
