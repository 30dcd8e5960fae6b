#include "common/pointwise.h"

#include <atomic>

// The AVX2 unit is built with the baseline flags: it exists when they include AVX2 + FMA (the
// default x86-64 build; not a -march=native build on an older CPU). The AVX-512 unit is always
// built on x86-64, with its own flags (CMakeLists.txt).
#if defined(__x86_64__) || defined(_M_X64)
#define RNNCORE_X86 1
#if defined(__AVX2__) && defined(__FMA__)
#define RNNCORE_HAVE_AVX2 1
#endif
#endif

namespace rnncore {

namespace {

PointwisePath detect() {
#ifdef RNNCORE_X86
  __builtin_cpu_init();
  // The AVX-512 unit is compiled with F, BW, DQ and VL (every AVX-512 CPU since Skylake-SP).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return PointwisePath::Avx512;
#ifdef RNNCORE_HAVE_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return PointwisePath::Avx2;
#endif
#endif
  return PointwisePath::Portable;
}

std::atomic<int> g_path{-1};

}  // namespace

PointwisePath best_pointwise_path() {
  static const PointwisePath best = detect();
  return best;
}

PointwisePath pointwise_path() {
  const int p = g_path.load(std::memory_order_relaxed);
  return p < 0 ? best_pointwise_path() : static_cast<PointwisePath>(p);
}

bool set_pointwise_path(PointwisePath p) {
#ifndef RNNCORE_HAVE_AVX2
  if (p == PointwisePath::Avx2) return false;  // not built (see above)
#endif
  if (static_cast<int>(p) > static_cast<int>(best_pointwise_path())) return false;
  g_path.store(static_cast<int>(p), std::memory_order_relaxed);
  return true;
}

const char *pointwise_path_name(PointwisePath p) {
  switch (p) {
    case PointwisePath::Portable:
      return "portable";
    case PointwisePath::Avx2:
      return "avx2";
    case PointwisePath::Avx512:
      return "avx512";
  }
  return "?";
}

const PointwiseKernels *pointwise_kernels() {
#ifdef RNNCORE_X86
  switch (pointwise_path()) {
    case PointwisePath::Avx512:
      return &kPointwiseAvx512;
#ifdef RNNCORE_HAVE_AVX2
    case PointwisePath::Avx2:
      return &kPointwiseAvx2;
#endif
    default:
      break;
  }
#endif
  return nullptr;
}

}  // namespace rnncore
