// The float32 pointwise kernels written once over a 16-lane vector type, for the per-ISA
// translation units (common/pointwise_avx2.cpp, common/pointwise_avx512.cpp). Included inside
// an unnamed namespace of each unit, after it has defined the vector operations:
//
//   V (16 floats), Mask; set1, load, store, load_n / store_n (the first n lanes, others 0 /
//   untouched), add, sub, mul, fmadd(a, b, c) = a b + c, fnmadd(a, b, c) = c - a b, abs_v,
//   neg_abs (-|a|), min_v(a, b) / max_v(a, b) (b if either is NaN), lt (ordered compare, false
//   on NaN), select(m, a, b) (m ? a : b), or_sign(r, x) (r with x's sign bit or'ed in), rcp_nr
//   (1/d: the hardware estimate refined by Newton steps), scale_or_zero(p, n, t, m) (p * 2^n,
//   n a whole number whose bits (bits(t) + 127) << 23 make 2^n; 0 where m).
//
// So it includes nothing: each unit's copy has internal linkage and its own ISA, and the
// linker can never merge an AVX-512 copy of a function into the AVX2 path. The formulas are
// those of common/activations.h (the same polynomials and range reduction), with FMA and the
// reciprocal estimate in place of the divisions.

// exp(y) for y <= 0 (common/activations.h exp_nonpositive): 0 below -87, NaN propagates.
inline V exp_nonpositive_v(V y) {
  const Mask under = lt(y, set1(-87.0f));
  y = max_v(set1(-87.0f), y);           // NaN stays NaN
  const V shifter = set1(12582912.0f);  // 1.5 * 2^23
  const V t = fmadd(y, set1(1.44269504088896341f), shifter);
  const V n = sub(t, shifter);
  V r = fnmadd(n, set1(0.693145751953125f), y);
  r = fnmadd(n, set1(1.42860682030941723e-06f), r);
  V p = set1(1.0f / 5040.0f);
  p = fmadd(p, r, set1(1.0f / 720.0f));
  p = fmadd(p, r, set1(1.0f / 120.0f));
  p = fmadd(p, r, set1(1.0f / 24.0f));
  p = fmadd(p, r, set1(1.0f / 6.0f));
  p = fmadd(p, r, set1(0.5f));
  p = fmadd(p, r, set1(1.0f));
  p = fmadd(p, r, set1(1.0f));
  return scale_or_zero(p, n, t, under);
}

inline V tanh_v(V x) {
  const V a = abs_v(x);
  const V s = mul(a, a);
  V p = set1(-0.005691985599696636f);
  p = fmadd(p, s, set1(0.020626291632652283f));
  p = fmadd(p, s, set1(-0.05373531952500343f));
  p = fmadd(p, s, set1(0.13331381976604462f));
  p = fmadd(p, s, set1(-0.3333328068256378f));
  const V small = fmadd(mul(a, s), p, a);
  const V e = exp_nonpositive_v(mul(a, set1(-2.0f)));  // in [0, 1]
  // (1 - e) / (1 + e), capped at 1 (the estimate may round a hair above); NaN stays NaN.
  const V large = min_v(set1(1.0f), mul(sub(set1(1.0f), e), rcp_nr(add(set1(1.0f), e))));
  // Both branches are >= 0 (or NaN): the sign of x is or'ed in.
  return or_sign(select(lt(a, set1(0.625f)), small, large), x);
}

inline V sigmoid_v(V x) {
  const V e = exp_nonpositive_v(neg_abs(x));  // NaN in, NaN out
  const V pos = rcp_nr(add(set1(1.0f), e));   // sigmoid(|x|)
  // sigmoid(x) = e / (1 + e) for x < 0; 1 * pos is pos exactly.
  return mul(select(lt(x, set1(0.0f)), e, set1(1.0f)), pos);
}

// Loads and stores of a block row: all 16 lanes, or the first w (a partial last block).
template <bool Full>
inline V ld(const float *p, int w) {
  if constexpr (Full)
    return load(p);
  else
    return load_n(p, w);
}
template <bool Full>
inline void st(float *p, V v, int w) {
  if constexpr (Full)
    store(p, v);
  else
    store_n(p, v, w);
}

using idx = std::ptrdiff_t;

template <bool Full>
void lstm_forward_rows(float *gates, float *c, float *h, const float *c_prev, const float *bias,
                       idx base, int j0, int w, int B, int H) {
  const V bi = ld<Full>(bias + base, w), bf = ld<Full>(bias + base + w, w);
  const V bg = ld<Full>(bias + base + 2 * w, w), bo = ld<Full>(bias + base + 3 * w, w);
  for (int b = 0; b < B; ++b) {
    float *gi = gates + static_cast<idx>(b) * 4 * H + base;
    float *gf = gi + w, *gg = gf + w, *go = gg + w;
    const idx r = static_cast<idx>(b) * H + j0;
    const V i = sigmoid_v(add(ld<Full>(gi, w), bi)), f = sigmoid_v(add(ld<Full>(gf, w), bf));
    const V g = tanh_v(add(ld<Full>(gg, w), bg)), o = sigmoid_v(add(ld<Full>(go, w), bo));
    const V ct = fmadd(f, ld<Full>(c_prev + r, w), mul(i, g));
    st<Full>(gi, i, w), st<Full>(gf, f, w), st<Full>(gg, g, w), st<Full>(go, o, w);
    st<Full>(c + r, ct, w);
    st<Full>(h + r, mul(o, tanh_v(ct)), w);
  }
}

void lstm_forward(float *gates, float *c, float *h, const float *c_prev, const float *bias,
                  idx base, int j0, int w, int B, int H) {
  if (w == 16)
    lstm_forward_rows<true>(gates, c, h, c_prev, bias, base, j0, w, B, H);
  else
    lstm_forward_rows<false>(gates, c, h, c_prev, bias, base, j0, w, B, H);
}

// One row of one unit block (width w, gates at blocked columns [base, base + 4w)).
template <bool Full>
inline void lstm_backward_row(float *di, float *dcr, const float *dhr, const float *dyr,
                              const float *pi, const float *cr, const float *cpr, int w) {
  const V one = set1(1.0f);
  const V i = ld<Full>(pi, w), f = ld<Full>(pi + w, w);
  const V g = ld<Full>(pi + 2 * w, w), o = ld<Full>(pi + 3 * w, w);
  const V tc = tanh_v(ld<Full>(cr, w));
  V dht = ld<Full>(dhr, w);
  if (dyr) dht = add(dht, ld<Full>(dyr, w));
  const V dct = fmadd(mul(dht, o), fnmadd(tc, tc, one), ld<Full>(dcr, w));
  st<Full>(di + 3 * w, mul(mul(mul(dht, tc), o), sub(one, o)), w);
  st<Full>(di, mul(mul(mul(dct, g), i), sub(one, i)), w);
  st<Full>(di + 2 * w, mul(mul(dct, i), fnmadd(g, g, one)), w);
  st<Full>(di + w, mul(mul(mul(dct, ld<Full>(cpr, w)), f), sub(one, f)), w);
  st<Full>(dcr, mul(dct, f), w);
}

// Unit blocks [k0, k1) of B rows, row by row: each row's gates are read front to back, as they
// lie in memory (the forward wrote them a sequence earlier; block by block, 256-byte pieces of
// rows 4H floats apart left the prefetchers behind).
void lstm_backward(float *dgates, float *dc, const float *dh, const float *dy, const float *gates,
                   const float *c, const float *c_prev, int k0, int k1, int B, int H) {
  for (int b = 0; b < B; ++b)
    for (int k = k0; k < k1; ++k) {
      const int j0 = 16 * k, w = H - j0 < 16 ? H - j0 : 16;
      const idx go_ = static_cast<idx>(b) * 4 * H + static_cast<idx>(64) * k;
      const idx r = static_cast<idx>(b) * H + j0;
      const float *dyr = dy ? dy + r : nullptr;
      if (w == 16)
        lstm_backward_row<true>(dgates + go_, dc + r, dh + r, dyr, gates + go_, c + r, c_prev + r,
                                w);
      else
        lstm_backward_row<false>(dgates + go_, dc + r, dh + r, dyr, gates + go_, c + r, c_prev + r,
                                 w);
    }
}

template <bool Full>
void gru_forward_rows(float *gi, const float *gh, const float *h_prev, float *aux, float *h,
                      const float *b_ih, const float *b_hh, idx cr, int j0, int w, int B, int H) {
  const idx cz = cr + w, cn = cr + 2 * w, H3 = 3 * static_cast<idx>(H);
  const V bir = ld<Full>(b_ih + cr, w), biz = ld<Full>(b_ih + cz, w), bin = ld<Full>(b_ih + cn, w);
  const V bhr = ld<Full>(b_hh + cr, w), bhz = ld<Full>(b_hh + cz, w), bhn = ld<Full>(b_hh + cn, w);
  for (int b = 0; b < B; ++b) {
    float *ib = gi + b * H3;
    const float *hb = gh + b * H3;
    const idx o = static_cast<idx>(b) * H + j0;
    // The portable loop's order of the additions: ((i + b_i) + h) + b_h.
    const V rr = sigmoid_v(add(add(add(ld<Full>(ib + cr, w), bir), ld<Full>(hb + cr, w)), bhr));
    const V zz = sigmoid_v(add(add(add(ld<Full>(ib + cz, w), biz), ld<Full>(hb + cz, w)), bhz));
    const V hnu = add(ld<Full>(hb + cn, w), bhn);
    const V nn = tanh_v(fmadd(rr, hnu, add(ld<Full>(ib + cn, w), bin)));
    st<Full>(ib + cr, rr, w), st<Full>(ib + cz, zz, w), st<Full>(ib + cn, nn, w);
    st<Full>(aux + o, hnu, w);
    st<Full>(h + o, fmadd(zz, sub(ld<Full>(h_prev + o, w), nn), nn), w);
  }
}

void gru_forward(float *gi, const float *gh, const float *h_prev, float *aux, float *h,
                 const float *b_ih, const float *b_hh, idx cr, int j0, int w, int B, int H) {
  if (w == 16)
    gru_forward_rows<true>(gi, gh, h_prev, aux, h, b_ih, b_hh, cr, j0, w, B, H);
  else
    gru_forward_rows<false>(gi, gh, h_prev, aux, h, b_ih, b_hh, cr, j0, w, B, H);
}

template <bool Full>
void gru_backward_rows(float *dgi, float *dgh, float *dh, const float *dy, const float *gates,
                       const float *h_prev, const float *aux, idx cr, int j0, int w, int B, int H) {
  const idx cz = cr + w, cn = cr + 2 * w, H3 = 3 * static_cast<idx>(H);
  const V one = set1(1.0f);
  for (int b = 0; b < B; ++b) {
    const idx o = static_cast<idx>(b) * H + j0;
    const float *gb = gates + b * H3;
    float *dib = dgi + b * H3, *dhb = dgh + b * H3;
    const V rr = ld<Full>(gb + cr, w), zz = ld<Full>(gb + cz, w), nn = ld<Full>(gb + cn, w);
    V g = ld<Full>(dh + o, w);
    if (dy) g = add(g, ld<Full>(dy + o, w));
    const V dn = mul(mul(g, sub(one, zz)), fnmadd(nn, nn, one));
    const V dz = mul(mul(mul(g, sub(ld<Full>(h_prev + o, w), nn)), zz), sub(one, zz));
    const V dr = mul(mul(mul(dn, ld<Full>(aux + o, w)), rr), sub(one, rr));
    st<Full>(dh + o, mul(g, zz), w);
    st<Full>(dib + cn, dn, w), st<Full>(dib + cz, dz, w), st<Full>(dib + cr, dr, w);
    st<Full>(dhb + cr, dr, w), st<Full>(dhb + cz, dz, w), st<Full>(dhb + cn, mul(dn, rr), w);
  }
}

// Unit blocks [k0, k1) of B rows, row by row (each row's gates front to back, as the LSTM's).
void gru_backward(float *dgi, float *dgh, float *dh, const float *dy, const float *gates,
                  const float *h_prev, const float *aux, int k0, int k1, int B, int H) {
  const idx H3 = 3 * static_cast<idx>(H);
  for (int b = 0; b < B; ++b) {
    const idx g = b * H3, o = static_cast<idx>(b) * H;
    const float *dyb = dy ? dy + o : nullptr;
    for (int k = k0; k < k1; ++k) {
      const int j0 = 16 * k, w = H - j0 < 16 ? H - j0 : 16;
      const idx cr = static_cast<idx>(48) * k;
      if (w == 16)
        gru_backward_rows<true>(dgi + g, dgh + g, dh + o, dyb, gates + g, h_prev + o, aux + o, cr,
                                j0, w, 1, H);
      else
        gru_backward_rows<false>(dgi + g, dgh + g, dh + o, dyb, gates + g, h_prev + o, aux + o, cr,
                                 j0, w, 1, H);
    }
  }
}

template <bool Full>
void gru_rb_forward_rz_rows(float *gi, const float *gh, const float *h_prev, float *aux,
                            const float *b_ih, const float *b_hh, idx ci, idx ch, int j0, int w,
                            int B, int H) {
  const idx H3 = 3 * static_cast<idx>(H);
  const V bir = ld<Full>(b_ih + ci, w), biz = ld<Full>(b_ih + ci + w, w);
  const V bhr = ld<Full>(b_hh + ch, w), bhz = ld<Full>(b_hh + ch + w, w);
  for (int b = 0; b < B; ++b) {
    float *ib = gi + b * H3 + ci;
    const float *hb = gh + b * H3 + ch;
    const idx o = static_cast<idx>(b) * H + j0;
    const V rr = sigmoid_v(add(add(add(ld<Full>(ib, w), bir), ld<Full>(hb, w)), bhr));
    const V zz = sigmoid_v(add(add(add(ld<Full>(ib + w, w), biz), ld<Full>(hb + w, w)), bhz));
    st<Full>(ib, rr, w), st<Full>(ib + w, zz, w);
    st<Full>(aux + o, mul(rr, ld<Full>(h_prev + o, w)), w);
  }
}

void gru_rb_forward_rz(float *gi, const float *gh, const float *h_prev, float *aux,
                       const float *b_ih, const float *b_hh, idx ci, idx ch, int j0, int w, int B,
                       int H) {
  if (w == 16)
    gru_rb_forward_rz_rows<true>(gi, gh, h_prev, aux, b_ih, b_hh, ci, ch, j0, w, B, H);
  else
    gru_rb_forward_rz_rows<false>(gi, gh, h_prev, aux, b_ih, b_hh, ci, ch, j0, w, B, H);
}

template <bool Full>
void gru_rb_forward_n_rows(float *gi, const float *gh, const float *h_prev, float *h,
                           const float *b_ih, const float *b_hh, idx ci, idx chn, int j0, int w,
                           int B, int H) {
  const idx H3 = 3 * static_cast<idx>(H), cn = ci + 2 * w;
  const V bin = ld<Full>(b_ih + cn, w), bhn = ld<Full>(b_hh + chn, w);
  for (int b = 0; b < B; ++b) {
    float *ib = gi + b * H3;
    const idx o = static_cast<idx>(b) * H + j0;
    const V nn =
        tanh_v(add(add(add(ld<Full>(ib + cn, w), bin), ld<Full>(gh + b * H3 + chn, w)), bhn));
    st<Full>(ib + cn, nn, w);
    st<Full>(h + o, fmadd(ld<Full>(ib + ci + w, w), sub(ld<Full>(h_prev + o, w), nn), nn), w);
  }
}

void gru_rb_forward_n(float *gi, const float *gh, const float *h_prev, float *h, const float *b_ih,
                      const float *b_hh, idx ci, idx chn, int j0, int w, int B, int H) {
  if (w == 16)
    gru_rb_forward_n_rows<true>(gi, gh, h_prev, h, b_ih, b_hh, ci, chn, j0, w, B, H);
  else
    gru_rb_forward_n_rows<false>(gi, gh, h_prev, h, b_ih, b_hh, ci, chn, j0, w, B, H);
}

void lstm_step_row(float *h, float *c, const float *gates, int H) {
  for (int j = 0; j < H; j += 16) {
    const int w = H - j < 16 ? H - j : 16;
    auto pre = [&](int gate) {
      const idx o = static_cast<idx>(gate) * H + j;
      return w == 16 ? load(gates + o) : load_n(gates + o, w);
    };
    const V i = sigmoid_v(pre(0)), f = sigmoid_v(pre(1)), g = tanh_v(pre(2)), o = sigmoid_v(pre(3));
    const V ct = fmadd(f, w == 16 ? load(c + j) : load_n(c + j, w), mul(i, g));
    const V ht = mul(o, tanh_v(ct));
    if (w == 16) {
      store(c + j, ct), store(h + j, ht);
    } else {
      store_n(c + j, ct, w), store_n(h + j, ht, w);
    }
  }
}

void rnn_tanh(float *h, const float *bias, int B, int H, int j0, int j1) {
  for (int b = 0; b < B; ++b) {
    float *row = h + static_cast<idx>(b) * H;
    int j = j0;
    for (; j + 16 <= j1; j += 16) store(row + j, tanh_v(add(load(row + j), load(bias + j))));
    if (j < j1)
      store_n(row + j, tanh_v(add(load_n(row + j, j1 - j), load_n(bias + j, j1 - j))), j1 - j);
  }
}

// The sampler's matrix-vector product (lm/sample.cpp) over nb packed blocks of 32 rows, each
// [cols][32], `stride` floats apart: y[32 b + i] = init[32 b + i] + the sum over j of
// x[j] blk_b[j][i], j in order (the same FMAs in the same order however the blocks are grouped:
// results do not change). kSamplerBlocks blocks per pass (set by each unit: as many as its
// registers hold), then the remaining ones in one pass: at one block the accumulator chains
// wait on the FMA latency.
template <int NB>
inline void column_sums_n(float *y, const float *blk, idx stride, const float *x, int cols,
                          const float *init) {
  V a[2 * NB];
#pragma GCC unroll 8
  for (int i = 0; i < 2 * NB; ++i) a[i] = load(init + 16 * i);
  for (int j = 0; j < cols; ++j, blk += 32) {
    const V xj = set1(x[j]);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      a[2 * b] = fmadd(xj, load(blk + b * stride), a[2 * b]);
      a[2 * b + 1] = fmadd(xj, load(blk + b * stride + 16), a[2 * b + 1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < 2 * NB; ++i) store(y + 16 * i, a[i]);
}

// The last nb (< kSamplerBlocks) blocks in one pass.
template <int NB>
inline void column_sums_tail(float *y, const float *blk, idx stride, const float *x, int cols,
                             const float *init, int nb) {
  if constexpr (NB > 0) {
    if (nb == NB) return column_sums_n<NB>(y, blk, stride, x, cols, init);
    column_sums_tail<NB - 1>(y, blk, stride, x, cols, init, nb);
  }
}

void column_sums(float *y, const float *blk, idx stride, const float *x, int cols, int nb,
                 const float *init) {
  int b = 0;
  for (; b + kSamplerBlocks <= nb; b += kSamplerBlocks)
    column_sums_n<kSamplerBlocks>(y + 32 * b, blk + b * stride, stride, x, cols, init + 32 * b);
  column_sums_tail<kSamplerBlocks - 1>(y + 32 * b, blk + b * stride, stride, x, cols, init + 32 * b,
                                       nb - b);
}

template <V (*F)(V)>
void map_array(float *y, const float *x, idx n) {
  idx i = 0;
  for (; i + 16 <= n; i += 16) store(y + i, F(load(x + i)));
  if (i < n) store_n(y + i, F(load_n(x + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

void tanh_array(float *y, const float *x, idx n) {
  map_array<tanh_v>(y, x, n);
}
void sigmoid_array(float *y, const float *x, idx n) {
  map_array<sigmoid_v>(y, x, n);
}

// The table a unit exports.
constexpr PointwiseKernels kKernels = {&lstm_forward,  &lstm_backward,     &gru_forward,
                                       &gru_backward,  &gru_rb_forward_rz, &gru_rb_forward_n,
                                       &lstm_step_row, &rnn_tanh,          &tanh_array,
                                       &sigmoid_array, &column_sums};
