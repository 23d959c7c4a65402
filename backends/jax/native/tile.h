// What the native kernels share: AVX-512 vector helpers, the MR x NR register tile that multiplies
// rows of a row-major matrix by a column panel, a whole product against packed panels, and a
// parallel loop (on helper threads that spin between loops, workers.h).
//
// A panel is NR consecutive columns of a [K, N] right operand stored [K][NR] (zero-padded past N),
// so the tile streams it with two aligned-or-not vector loads per k. Products are blocked along K
// (kDepth) so a group's panel slices stay in L2 while every row tile reuses them (PanelProduct).

#pragma once

#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <memory>
#include <utility>
#include <vector>

#include "workers.h"
#include "xla/ffi/api/ffi.h"

namespace kiln {

namespace ffi = xla::ffi;

#if !defined(__AVX512F__)
#error "the native kernels need AVX-512"
#endif

using Vec = __m512;
constexpr int kLanes = 16;          // floats per vector
constexpr int kRows = 12;           // MR: rows per register tile (24 accumulators)
constexpr int kPanel = 2 * kLanes;  // NR: columns per panel
constexpr int kDepth = 384;         // K block: with groups of 4 panels, a 196 KB weight slice (this one and the next fit L2)

inline Vec Load(const float* p) { return _mm512_loadu_ps(p); }

// The first min(remaining, 16) lanes: a row's last, partial vector
inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << remaining) - 1);
}
inline void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }

// exp of 16 floats: 2^n * p(r), r = x - n ln 2 (Cephes' expf polynomial, ~1 ulp); exactly 0 below
// -87.3 (so -inf, a masked score, gives 0)
inline Vec Exp(Vec x) {
  const Vec tiny = _mm512_set1_ps(-87.3f);
  const __mmask16 live = _mm512_cmp_ps_mask(x, tiny, _CMP_GE_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, tiny), _mm512_set1_ps(88.3f));
  const Vec n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Vec r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  Vec p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(live, p, _mm512_castsi512_ps(bits));
}

// Activations a product may apply to its output as it is stored (ONNX Gelu's two forms, Relu,
// HardSwish).
enum Activation : int64_t { kNone = 0, kGeluErf = 1, kGeluTanh = 2, kRelu = 3, kHardSwish = 4 };

// GELU of 16 floats: 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7),
// or the tanh form 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), tanh(u) = 1 - 2 / (1 + e^2u)
inline Vec Gelu(Vec x, int64_t form) {
  const Vec half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  if (form == kGeluTanh) {
    const Vec inner = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                    _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), x), _mm512_mul_ps(x, x), x));
    const Vec e = Exp(_mm512_add_ps(inner, inner));
    const Vec tanh = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(one, e)));
    return _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, tanh));
  }
  const Vec z = _mm512_mul_ps(x, _mm512_set1_ps(0.7071067811865476f));
  const Vec az = _mm512_abs_ps(z);
  const Vec t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), az, one));
  Vec p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const Vec erf_abs = _mm512_fnmadd_ps(p, Exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az))), one);
  const Vec erf = _mm512_mask_sub_ps(erf_abs, _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ),
                                     _mm512_setzero_ps(), erf_abs);
  return _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, erf));
}

// c[r, j..j+16) = update(c[r, j..j+16), r, j, lanes) over rows x width floats of c (row stride ldc),
// the last vector of a row masked to the width: the epilogues below, on a tile just stored and in L1
template <typename Update>
inline void UpdateTile(float* c, int64_t ldc, int rows, int64_t width, Update update) {
  for (int r = 0; r < rows; ++r)
    for (int64_t j = 0; j < width; j += kLanes) {
      const __mmask16 lanes = TailMask(width - j);
      _mm512_mask_storeu_ps(c + r * ldc + j, lanes, update(_mm512_maskz_loadu_ps(lanes, c + r * ldc + j), r, j, lanes));
    }
}

inline bool KnownActivation(int64_t form) { return form >= kNone && form <= kHardSwish; }

// ONNX HardSwish of 16 floats: x * clamp(x / 6 + 1/2, 0, 1)
inline Vec HardSwish(Vec x) {
  const Vec gate = _mm512_fmadd_ps(x, _mm512_set1_ps(1.0f / 6.0f), _mm512_set1_ps(0.5f));
  return _mm512_mul_ps(x, _mm512_min_ps(_mm512_max_ps(gate, _mm512_setzero_ps()), _mm512_set1_ps(1.0f)));
}

// Activation `form` of 16 floats
inline Vec Activated(Vec v, int64_t form) {
  switch (form) {
    case kRelu: return _mm512_max_ps(v, _mm512_setzero_ps());
    case kHardSwish: return HardSwish(v);
    case kGeluErf: case kGeluTanh: return Gelu(v, form);
    default: return v;
  }
}

// `form` applied in place to rows x width floats of c
inline void Activate(float* c, int64_t ldc, int rows, int64_t width, int64_t form) {
  if (form == kNone) return;
  if (form == kRelu) {
    UpdateTile(c, ldc, rows, width,
               [](Vec v, int, int64_t, __mmask16) { return _mm512_max_ps(v, _mm512_setzero_ps()); });
    return;
  }
  if (form == kHardSwish) {
    UpdateTile(c, ldc, rows, width, [](Vec v, int, int64_t, __mmask16) { return HardSwish(v); });
    return;
  }
  UpdateTile(c, ldc, rows, width, [form](Vec v, int, int64_t, __mmask16) { return Gelu(v, form); });
}

// c[rows x width] += residual (laid out as c)
inline void AddResidual(float* c, const float* residual, int64_t ldc, int rows, int64_t width) {
  UpdateTile(c, ldc, rows, width, [=](Vec v, int r, int64_t j, __mmask16 lanes) {
    return _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, residual + r * ldc + j));
  });
}

// What a product applies to its output as it stores it: y = act(x W + bias) + residual, or with
// residual_first y = act(x W + bias + residual) (a ResNet block's Add before its Relu); bias [n]
// (one per column), row_bias [m] (one per row: conv_gemm.cc's output channels) and residual (laid
// out as the output) may be null.
struct Epilogue {
  const float* bias = nullptr;
  int64_t activation = kNone;
  const float* residual = nullptr;
  bool residual_first = false;
  const float* row_bias = nullptr;
};

// The rest of the epilogue on rows x width floats of c (the column bias is the tile's start), the
// residual and row bias already at c's offset
inline void Finish(float* c, int64_t ldc, int rows, int64_t width, const Epilogue& e, const float* residual,
                   const float* row_bias = nullptr) {
  if (row_bias)
    UpdateTile(c, ldc, rows, width,
               [=](Vec v, int r, int64_t, __mmask16) { return _mm512_add_ps(v, _mm512_set1_ps(row_bias[r])); });
  if (residual && e.residual_first) AddResidual(c, residual, ldc, rows, width);
  Activate(c, ldc, rows, width, e.activation);
  if (residual && !e.residual_first) AddResidual(c, residual, ldc, rows, width);
}

// What the last K block's tile of a full panel applies in registers before its one store: the row
// bias, the residual (at the tile's offset, row stride ldc) and the activation, as Finish would
// (a pass of its own per step there, which costs as much as the product where K is small: a 1x1
// convolution of 16 channels)
struct TileFinish {
  const float* row_bias = nullptr;
  const float* residual = nullptr;
  bool residual_first = false;
  int64_t activation = kNone;
};

// One row of a tile (two vectors) finished as `f` says, then stored at c
inline void StoreFinished(float* c, Vec lo, Vec hi, const TileFinish& f, int r, int64_t ldc) {
  if (f.row_bias) {
    const Vec offset = _mm512_set1_ps(f.row_bias[r]);
    lo = _mm512_add_ps(lo, offset), hi = _mm512_add_ps(hi, offset);
  }
  const float* residual = f.residual ? f.residual + r * ldc : nullptr;
  if (residual && f.residual_first)
    lo = _mm512_add_ps(lo, Load(residual)), hi = _mm512_add_ps(hi, Load(residual + kLanes));
  lo = Activated(lo, f.activation), hi = Activated(hi, f.activation);
  if (residual && !f.residual_first)
    lo = _mm512_add_ps(lo, Load(residual)), hi = _mm512_add_ps(hi, Load(residual + kLanes));
  Store(c, lo), Store(c + kLanes, hi);
}

// c[R x NR] (row stride ldc) = (first ? bias or 0 : c) + a[R x kc] * b[kc x NR], a packed k-major
// (a[k * AStride + r]: PackRows' [kc][kRows], or a convolution's patch panel [kc][NR] read a row
// tile at a time), finished in registers where `finish` is given; meanwhile the first
// `ahead_rows` rows of `ahead` (a later panel slice) are fetched into L2
template <int R, int AStride = kRows>
void Tile(int kc, const float* __restrict a, const float* __restrict b, float* __restrict c, int64_t ldc, bool first,
          const float* bias, const float* ahead, int ahead_rows, const TileFinish* finish) {
  Vec lo[R], hi[R];
  if (first) {
    const Vec b0 = bias ? Load(bias) : _mm512_setzero_ps(), b1 = bias ? Load(bias + kLanes) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) lo[r] = b0, hi[r] = b1;
  } else {
    for (int r = 0; r < R; ++r) lo[r] = Load(c + r * ldc), hi[r] = Load(c + r * ldc + kLanes);
  }
  const auto step = [&](int k) {
    const Vec b0 = Load(b + k * kPanel), b1 = Load(b + k * kPanel + kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Vec x = _mm512_set1_ps(a[k * AStride + r]);
      lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
    }
  };
  const int fetched = std::min(kc, ahead_rows);
  int k = 0;
  for (; k < fetched; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(ahead + k * kPanel), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(ahead + k * kPanel + kLanes), _MM_HINT_T1);
    step(k);
  }
  for (; k < kc; ++k) step(k);
  if (finish) {
    for (int r = 0; r < R; ++r) StoreFinished(c + r * ldc, lo[r], hi[r], *finish, r, ldc);
    return;
  }
  for (int r = 0; r < R; ++r) Store(c + r * ldc, lo[r]), Store(c + r * ldc + kLanes, hi[r]);
}

// rows [i0, i0 + rows) x columns [k0, k0 + kc) of a (row stride lda) into out[kc][kRows], the layout
// Tile broadcasts from: one pointer walks it, where a row-major tile's 12 row addresses outnumber
// the free registers (measured 4-9% faster per product, the pack included)
inline void PackRows(const float* a, int64_t lda, int64_t i0, int rows, int64_t k0, int kc, float* out) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) {  // 4 x 4 blocks transposed in registers
    const float* from = a + (i0 + r) * lda + k0;
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
      __m128 x0 = _mm_loadu_ps(from + k), x1 = _mm_loadu_ps(from + lda + k), x2 = _mm_loadu_ps(from + 2 * lda + k),
             x3 = _mm_loadu_ps(from + 3 * lda + k);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      float* to = out + k * kRows + r;
      _mm_storeu_ps(to, x0), _mm_storeu_ps(to + kRows, x1), _mm_storeu_ps(to + 2 * kRows, x2),
          _mm_storeu_ps(to + 3 * kRows, x3);
    }
    for (; k < kc; ++k)
      for (int q = 0; q < 4; ++q) out[k * kRows + r + q] = from[q * lda + k];
  }
  for (; r < rows; ++r)
    for (int k = 0; k < kc; ++k) out[k * kRows + r] = a[(i0 + r) * lda + k0 + k];
}

using TileFn = void (*)(int, const float*, const float*, float*, int64_t, bool, const float*, const float*, int,
                       const TileFinish*);

template <int AStride, int... Rs>
constexpr std::array<TileFn, sizeof...(Rs)> MakeTiles(std::integer_sequence<int, Rs...>) {
  return {Tile<Rs + 1, AStride>...};
}
inline constexpr auto kTiles = MakeTiles<kRows>(std::make_integer_sequence<int, kRows>{});
// the same tiles reading their rows out of a patch panel [kc][kPanel] (conv_gemm.cc's ConvColumns)
inline constexpr auto kPanelRowTiles = MakeTiles<kPanel>(std::make_integer_sequence<int, kRows>{});

inline int64_t PanelCount(int64_t n) { return (n + kPanel - 1) / kPanel; }

// One tile of c: rows [i0, i0 + rows) x panel p, K block [k0, k0 + kc), from that block of the
// rows packed (PackRows) and of the panel (`b`: [kc][NR]); a ragged last panel goes through a
// full-width scratch tile. The first K block starts from the bias; the last one finishes the
// epilogue in registers (a ragged panel: on the stored columns, Finish).
inline void PanelTile(int64_t n, int64_t k, const float* packed, const float* b, const Epilogue& e,
                      float* c, int64_t ldc, int64_t p, int64_t k0, int kc, int64_t i0, int rows,
                      const float* ahead = nullptr, int ahead_rows = 0) {
  const int64_t n0 = p * kPanel, width = std::min<int64_t>(kPanel, n - n0);
  float* cr = c + i0 * ldc + n0;
  const float* panel_bias = e.bias ? e.bias + n0 : nullptr;
  const bool last = k0 + kc >= k;
  const float* panel_residual = e.residual ? e.residual + i0 * ldc + n0 : nullptr;
  const float* tile_bias = e.row_bias ? e.row_bias + i0 : nullptr;
  if (width == kPanel) {
    const TileFinish finish{tile_bias, panel_residual, e.residual_first, e.activation};
    kTiles[rows - 1](kc, packed, b, cr, ldc, k0 == 0, panel_bias, ahead, ahead_rows, last ? &finish : nullptr);
    return;
  }
  alignas(64) float scratch[kRows * kPanel];
  alignas(64) float bias_pad[kPanel] = {};
  if (panel_bias) std::memcpy(bias_pad, panel_bias, width * sizeof(float));
  if (k0 != 0)
    for (int r = 0; r < rows; ++r) std::memcpy(scratch + r * kPanel, cr + r * ldc, width * sizeof(float));
  kTiles[rows - 1](kc, packed, b, scratch, kPanel, k0 == 0, panel_bias ? bias_pad : nullptr, ahead, ahead_rows,
                   nullptr);
  for (int r = 0; r < rows; ++r) std::memcpy(cr + r * ldc, scratch + r * kPanel, width * sizeof(float));
  if (last) Finish(cr, ldc, rows, width, e, panel_residual, tile_bias);
}

// c[rows r0..r1, panels p0..p1] = a[m, k] (row stride lda) x panels[PanelCount(n)][k][NR] with the
// epilogue applied, c and the residual with row stride ldc. Panels go in groups of kGroup: per K block,
// each row tile's slice of a (packed by the first group, PackRows) is loaded into L1 once for the
// whole group, whose panel slices (kGroup x kDepth x NR floats) sit in L2, so a is re-read once per
// group rather than once per panel. Meanwhile each tile fetches its share of the slice its panel
// needs next into L2, so the weight streams in evenly instead of in bursts.
constexpr int64_t kGroup = 4;

// Rows r0..r1 of that product for the panel groups next_group() hands out (the first panel of each,
// -1 when none are left; a group ends kGroup panels on or at p_end). The first group taken packs a.
template <typename NextGroup>
inline void PanelGroups(int64_t n, int64_t k, const float* a, int64_t lda, const float* panels, const Epilogue& e,
                        float* c, int64_t ldc, int64_t p_end, int64_t r0, int64_t r1, NextGroup next_group) {
  const int64_t tiles = (r1 - r0 + kRows - 1) / kRows;
  const int share = static_cast<int>((kDepth + tiles - 1) / tiles);
  static thread_local std::vector<float> packed_rows;  // [tile][k][kRows], filled by the first group
  if (packed_rows.size() < static_cast<size_t>(tiles * k * kRows)) packed_rows.resize(tiles * k * kRows);
  bool packed = false;
  for (int64_t g; (g = next_group()) >= 0; packed = true) {
    const int64_t g1 = std::min(p_end, g + kGroup);
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
      const int kc = static_cast<int>(std::min<int64_t>(kDepth, k - k0));
      for (int64_t t = 0, i0 = r0; i0 < r1; ++t, i0 += kRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - i0));
        const int from = static_cast<int>(std::min<int64_t>(kDepth, t * share));
        const int count = static_cast<int>(std::min<int64_t>(kDepth - from, share));
        float* tile_rows = packed_rows.data() + (t * k + k0) * kRows;
        if (!packed) PackRows(a, lda, i0, rows, k0, kc, tile_rows);  // while those rows are fetched anyway
        for (int64_t p = g; p < g1; ++p) {
          // next: this panel's next K block, else the first block of its counterpart in the next group
          const bool more_k = k0 + kc < k;
          const int64_t next_panel = more_k ? p : p + kGroup;
          const float* next = next_panel < p_end ? panels + (next_panel * k + (more_k ? k0 + kc : 0)) * kPanel : nullptr;
          PanelTile(n, k, tile_rows, panels + (p * k + k0) * kPanel, e, c, ldc, p, k0, kc, i0, rows,
                    next ? next + from * kPanel : nullptr, next ? count : 0);
        }
      }
    }
  }
}

// Rows r0..r1, panels p0..p1 of the product, the groups in order, on this thread. Where the rows
// outweigh the weight (a convolution's pixels), they go in chunks whose packed rows stay in L2
// (kChunkBytes), every group over one chunk before the next: packing all of them first streams them
// through memory once per group (measured 11-26% slower at 3136 x 576 x 64 and 784 x 1152 x 128).
constexpr int64_t kChunkBytes = 256 << 10;

// Rows per chunk of a product with depth k (a multiple of kRows)
inline int64_t RowChunk(int64_t k) {
  const int64_t tile_bytes = kRows * std::max<int64_t>(k, 1) * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, kChunkBytes / tile_bytes) * kRows;
}

inline void PanelProduct(int64_t n, int64_t k, const float* a, int64_t lda, const float* panels, const Epilogue& e,
                         float* c, int64_t ldc, int64_t p0, int64_t p1, int64_t r0, int64_t r1) {
  const int64_t chunk = r1 - r0 >= 2 * (p1 - p0) * kPanel ? RowChunk(k) : r1 - r0;
  for (int64_t i0 = r0; i0 < r1; i0 += chunk) {
    int64_t g = p0;
    PanelGroups(n, k, a, lda, panels, e, c, ldc, p1, i0, std::min(r1, i0 + chunk), [&] {
      if (g >= p1) return int64_t{-1};
      const int64_t first = g;
      g += kGroup;
      return first;
    });
  }
}

// A thread's share [first, last) of a product's panel groups: its owner takes them from the front,
// and a thread done with its own share takes them from the back, so a thread whose vCPU is stalled
// (another guest's turn on a shared host) holds the product up for one group instead of its share.
class GroupQueue {
 public:
  void Reset(int64_t first, int64_t last) { bounds_.store(Pack(first, last), std::memory_order_relaxed); }
  bool TakeFront(int64_t* group) { return Take(group, true); }
  bool TakeBack(int64_t* group) { return Take(group, false); }

 private:
  static uint64_t Pack(int64_t front, int64_t back) { return static_cast<uint64_t>(front) << 32 | static_cast<uint64_t>(back); }
  bool Take(int64_t* group, bool front_end) {
    uint64_t bounds = bounds_.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t front = static_cast<int64_t>(bounds >> 32), back = static_cast<int64_t>(bounds & 0xffffffffu);
      if (front >= back) return false;
      const uint64_t taken = front_end ? Pack(front + 1, back) : Pack(front, back - 1);
      if (bounds_.compare_exchange_weak(bounds, taken, std::memory_order_relaxed)) {
        *group = front_end ? front : back - 1;
        return true;
      }
    }
  }
  std::atomic<uint64_t> bounds_{0};
};

// Work (about a flop a unit) under which a kernel runs on the calling thread alone: waking a pool
// thread costs microseconds, more than splitting saves on a 2 x 64 x 128 layer or a 16 -> 32
// channel 3 x 3 convolution of 8 x 8 pixels (digits_cnn: 81 -> 40 us a call, onnxruntime 15 us).
constexpr int64_t kSerialWork = int64_t{1} << 20;

// Runs body(i) for i in [0, count) on the calling thread and the helpers (workers.h: as many as
// XLA's pool has threads, less one), or serially when `work` is under kSerialWork. Where another
// thread's loop holds the helpers, up to threads - 1 of XLA's pool threads help instead; items are
// claimed from a shared counter there too, so a pool thread that starts late takes fewer and a busy
// pool cannot deadlock the caller, which returns when every claimed item is done.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t count, int64_t work, Body body) {
  if (count <= 0) return;
  const int64_t threads = work < kSerialWork ? 1 : std::max<int64_t>(1, pool.num_threads());
  if (threads == 1 || count == 1) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
  if (SpinWorkers* workers = SpinWorkers::Get(threads - 1)) {
    const SpinWorkers::Task task = [](void* context, int64_t item) { (*static_cast<Body*>(context))(item); };
    if (workers->TryRun(count, task, &body)) return;
  }
  struct Shared {
    Body body;
    int64_t count;
    std::atomic<int64_t> next{0}, done{0};
    Shared(Body b, int64_t n) : body(std::move(b)), count(n) {}
    void Drain() {
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
        body(i);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto shared = std::make_shared<Shared>(std::move(body), count);
  const int64_t helpers = std::min<int64_t>(threads, count) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([shared] { shared->Drain(); });
  shared->Drain();
  while (shared->done.load(std::memory_order_acquire) < count) _mm_pause();
}

// Runs body(j) for j in [0, count) in one contiguous share per thread: each thread works through
// its own share from the front, then takes what is left of the others' shares from their far ends
// (GroupQueue). Contiguous shares keep each core's loads and stores in long sequential runs, which
// its prefetchers follow; handing out consecutive items in turn interleaves the threads' runs
// (a 16 -> 64 channel pointwise convolution of 112 x 112 pixels: 340-890 us that way, 204 us in
// shares). Stealing from the far end still spares a stalled vCPU's share from waiting on it.
template <typename Body>
void ParallelShares(ffi::ThreadPool& pool, int64_t count, int64_t work, Body body) {
  const int64_t threads = work < kSerialWork ? 1 : std::max<int64_t>(1, pool.num_threads());
  const int64_t shares = std::min(threads, count);
  if (shares <= 1) {
    for (int64_t j = 0; j < count; ++j) body(j);
    return;
  }
  std::unique_ptr<GroupQueue[]> queues(new GroupQueue[shares]);
  for (int64_t i = 0; i < shares; ++i) queues[i].Reset(i * count / shares, (i + 1) * count / shares);
  ParallelFor(pool, shares, work, [&queues, &body, shares](int64_t i) {
    int64_t j;
    while (queues[i].TakeFront(&j)) body(j);
    for (int64_t other = 1; other < shares; ++other)
      while (queues[(i + other) % shares].TakeBack(&j)) body(j);
  });
}

// Runs body(r) for each of `rows` rows, `per_item` consecutive rows a work item, in contiguous
// shares (ParallelShares): the row kernels' loop (layer norm, row means and scalings)
template <typename Body>
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, int64_t per_item, int64_t work, Body body) {
  ParallelShares(pool, (rows + per_item - 1) / per_item, work, [=](int64_t item) {
    for (int64_t r = item * per_item; r < std::min(rows, (item + 1) * per_item); ++r) body(r);
  });
}

}  // namespace kiln
