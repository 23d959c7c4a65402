// fp32 depthwise 2-D convolution on NCHW: y[n, o, :, :] = act(conv(x[n, o / m, :, :], w[o]) + bias[o]),
// m output channels per input channel (ONNX Conv with group = C, kernel [C * m, 1, KH, KW]).
//
// A depthwise convolution does KH * KW multiply-adds per output value and reads each input value
// KH * KW times, so it is bound by loads, not by FMAs: XLA runs it as a grouped convolution (or as
// shifted slices, conv_forms.py) with the padding as a pass of its own and the activation as
// another. Here each output plane is one work item: its input plane is copied once into a padded
// plane in L1/L2 (the padding is zeros there, so no tap needs a mask), each output row is
// accumulated 16 pixels at a time, four rows together (stride 1: one unaligned load per vector;
// stride 2: two loads and a permute keep every other float; other strides: a gather), and the bias
// and activation are applied before the single store. 3 x 3 and 5 x 5 kernels of stride 1 or 2 are
// unrolled with their weights in registers, each input vector loaded once for all four rows.

#include "tile.h"

namespace kiln {
namespace {

struct DepthwiseShape {
  int64_t height, width, out_height, out_width;
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
};

// plane [H, W] copied into padded [H + pt + pb rows][row floats], zeros around it and in the slack
// a vector read past the last column may touch: whole vectors of masked loads (library calls per row
// would cost more than the convolution of a 7 x 7 plane), up to kLanes - 1 floats written past the end
void PadPlane(const float* plane, const DepthwiseShape& s, int64_t rows, int64_t row, float* padded) {
  for (int64_t y = 0; y < rows; ++y) {
    const int64_t from_row = y - s.pt;
    float* line = padded + y * row;
    if (from_row < 0 || from_row >= s.height) {
      for (int64_t j = 0; j < row; j += kLanes) Store(line + j, _mm512_setzero_ps());
      continue;
    }
    const float* source = plane + from_row * s.width - s.pl;  // source[j] is padded column j
    for (int64_t j = 0; j < row; j += kLanes) {
      const int64_t lo = std::clamp<int64_t>(s.pl - j, 0, kLanes), hi = std::clamp<int64_t>(s.pl + s.width - j, 0, kLanes);
      const __mmask16 live = hi > lo ? static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
      Store(line + j, _mm512_maskz_loadu_ps(live, source + j));
    }
  }
}

constexpr int kBlockRows = 4;  // output rows accumulated together: four independent FMA chains
constexpr int64_t kBatchFloats = 16 << 10;  // padded planes a work item holds at most (64 KB), past one
constexpr int64_t kItemsPerThread = 8;      // work items per thread at least, where planes allow

// 16 floats of a padded row from `at`, every kStride-th (kStride 0: every `stride`-th, gathered)
template <int kStride>
inline Vec Strided(const float* at, __m512i evens, __m512i gather) {
  if constexpr (kStride == 1) return Load(at);
  if constexpr (kStride == 2) return _mm512_permutex2var_ps(Load(at), evens, Load(at + kLanes));
  return _mm512_i32gather_ps(gather, at, 4);
}

// A full block of rows for a K x K kernel, stride S both ways, no dilation (MobileNet's 3 x 3 and
// 5 x 5): each input row vector is loaded once and multiplied into every output row of the block
// that reads it, with the weights held in registers (the general loop loads each vector once per
// output row, and a load is what a depthwise convolution runs out of first)
template <int K, int S>
inline void FixedBlock(const float* top, int64_t row, const Vec* weights, Vec* acc, __m512i evens) {
  constexpr int kSpan = (kBlockRows - 1) * S + K;  // input rows the block reads
#pragma GCC unroll 16
  for (int iy = 0; iy < kSpan; ++iy) {
#pragma GCC unroll 8
    for (int j = 0; j < K; ++j) {
      const Vec v = Strided<S>(top + iy * row + j, evens, evens);
#pragma GCC unroll 4
      for (int r = 0; r < kBlockRows; ++r) {
        const int i = iy - r * S;
        if (i >= 0 && i < K) acc[r] = _mm512_fmadd_ps(weights[i * K + j], v, acc[r]);
      }
    }
  }
}

// A block of `block` output rows for any kernel, stride and dilation: each tap's vector loaded once
// per output row
template <int kStride>
inline void GeneralBlock(const float* top, int64_t row, const float* taps, int block, const DepthwiseShape& s,
                         Vec* acc, __m512i evens, __m512i gather) {
  for (int64_t i = 0; i < s.kh; ++i) {
    const float* line = top + i * s.dh * row;
    for (int64_t j = 0; j < s.kw; ++j) {
      const Vec tap = _mm512_set1_ps(taps[i * s.kw + j]);
      const float* at = line + j * s.dw;
      if (block == kBlockRows) {
        for (int r = 0; r < kBlockRows; ++r)
          acc[r] = _mm512_fmadd_ps(tap, Strided<kStride>(at + r * s.sh * row, evens, gather), acc[r]);
      } else {
        for (int r = 0; r < block; ++r)
          acc[r] = _mm512_fmadd_ps(tap, Strided<kStride>(at + r * s.sh * row, evens, gather), acc[r]);
      }
    }
  }
}

// Fetches the input planes a thread pads next into L2 a slice per block of output rows, so that
// memory is read while the current planes are multiplied rather than all at once when they are padded
// (planes come from L3 or memory: a 112 x 112 plane is 50 KB)
struct Prefetch {
  const char* at = nullptr;
  int64_t lines = 0, per_step = 0;
  void Step() {
    for (int64_t n = std::min(lines, per_step); n > 0; --n, --lines, at += 64) _mm_prefetch(at, _MM_HINT_T1);
  }
};

// One output plane: out[oy, ox] = act(bias + sum over taps (i, j) of w[i, j] padded[oy*sh + i*dh, ox*sw + j*dw]),
// kBlockRows rows at a time, 16 pixels at a time; K > 0: a K x K kernel of stride kStride both ways
// and no dilation, whose full row blocks go through FixedBlock
template <int kStride, int K = 0>
void OutputPlane(const float* padded, int64_t row, const float* taps, float bias, int64_t activation,
                 const DepthwiseShape& s, float* out, Prefetch& prefetch) {
  Vec weights[K > 0 ? K * K : 1];
  if constexpr (K > 0)
    for (int t = 0; t < K * K; ++t) weights[t] = _mm512_set1_ps(taps[t]);
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i gather = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int>(s.sw)));
  const int64_t column_step = kStride ? kStride : s.sw;
  for (int64_t oy0 = 0; oy0 < s.out_height; oy0 += kBlockRows) {
    prefetch.Step();
    const int block = static_cast<int>(std::min<int64_t>(kBlockRows, s.out_height - oy0));
    for (int64_t ox = 0; ox < s.out_width; ox += kLanes) {
      Vec acc[kBlockRows];
      for (int r = 0; r < kBlockRows; ++r) acc[r] = _mm512_set1_ps(bias);
      if constexpr (K > 0) {  // the padded plane has the rows a last, partial block reads too
        FixedBlock<K, kStride>(padded + oy0 * kStride * row + ox * kStride, row, weights, acc, evens);
      } else {
        GeneralBlock<kStride>(padded + oy0 * s.sh * row + ox * column_step, row, taps, block, s, acc, evens, gather);
      }
      const int64_t lanes = std::min<int64_t>(kLanes, s.out_width - ox);
      const __mmask16 mask = TailMask(lanes);
      for (int r = 0; r < block; ++r)
        _mm512_mask_storeu_ps(out + (oy0 + r) * s.out_width + ox, mask, Activated(acc[r], activation));
    }
  }
}

ffi::Error DepthwiseConv(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> weight, ffi::Buffer<ffi::F32> bias,
                         ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool, int64_t kh, int64_t kw, int64_t sh,
                         int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t activation) {
  const auto xd = x.dimensions(), wd = weight.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || yd.size() != 4 || wd.size() != 4 || xd[0] != yd[0] || wd[0] != yd[1] || wd[1] != 1)
    return ffi::Error::InvalidArgument("kiln_depthwise_conv: bad operand shapes");
  if (wd[2] != kh || wd[3] != kw || xd[1] == 0 || yd[1] % xd[1] != 0 || sh < 1 || sw < 1 || dh < 1 || dw < 1)
    return ffi::Error::InvalidArgument("kiln_depthwise_conv: kernel, strides or dilations do not fit");
  if (!KnownActivation(activation)) return ffi::Error::InvalidArgument("kiln_depthwise_conv: unknown activation");
  if (bias.element_count() != 0 && static_cast<int64_t>(bias.element_count()) != yd[1])
    return ffi::Error::InvalidArgument("kiln_depthwise_conv: bias must have one value per output channel");
  const DepthwiseShape s{xd[2], xd[3], yd[2], yd[3], kh, kw, sh, sw, pt, pl, dh, dw};
  // the padded plane holds every row and column a tap reads, plus the slack of the last vector
  // 10 * K + stride for the kernels FixedBlock unrolls (whole blocks of rows, the last one partly
  // padding), else 0
  const bool square = kh == kw && sh == sw && dh == 1 && dw == 1 && (kh == 3 || kh == 5) && (sh == 1 || sh == 2);
  const int fixed = square ? static_cast<int>(10 * kh + sh) : 0;
  const int64_t computed_rows = fixed ? (s.out_height + kBlockRows - 1) / kBlockRows * kBlockRows : s.out_height;
  const int64_t rows = std::max(s.pt + s.height, (computed_rows - 1) * sh + (kh - 1) * dh + 1);
  const int64_t row = std::max(s.pl + s.width, (s.out_width - 1) * sw + (kw - 1) * dw + 1) + (kLanes + 1) * sw;
  if (s.pt < 0 || s.pl < 0 || s.out_height < 1 || s.out_width < 1)
    return ffi::Error::InvalidArgument("kiln_depthwise_conv: bad padding or output size");
  const int64_t channels = xd[1], outputs = yd[1], multiplier = outputs / channels, planes = yd[0] * outputs;
  const float *image = x.typed_data(), *w = weight.typed_data();
  const float* b = bias.element_count() ? bias.typed_data() : nullptr;
  float* out = y->typed_data();
  // Work items are runs of planes, padded together before any is multiplied (a tap reading a
  // padded row just written stalls on store forwarding) and sized to fit L2 with their output
  const int64_t padded_floats = rows * row;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t per_item = std::clamp<int64_t>(kBatchFloats / padded_floats, 1,
                                               std::max<int64_t>(1, planes / (kItemsPerThread * threads)));
  const int64_t work = 2 * planes * s.out_height * s.out_width * kh * kw;
  ParallelShares(pool, (planes + per_item - 1) / per_item, work, [=](int64_t item) {
    const int64_t first = item * per_item, last = std::min(planes, first + per_item);
    static thread_local std::vector<float> padded;
    if (padded.size() < static_cast<size_t>(per_item * padded_floats + kLanes))
      padded.resize(per_item * padded_floats + kLanes);
    const int64_t plane_floats = s.height * s.width;
    const auto input = [=](int64_t q) { return image + (q / outputs * channels + q % outputs / multiplier) * plane_floats; };
    for (int64_t p = first; p < last; ++p) PadPlane(input(p), s, rows, row, padded.data() + (p - first) * padded_floats);
    // the next item's input planes (the thread's share runs items in order): a contiguous range
    Prefetch prefetch;
    if (last < planes) {
      const int64_t end = std::min(planes, last + per_item) - 1;
      prefetch.at = reinterpret_cast<const char*>(input(last));
      prefetch.lines = ((input(end) + plane_floats - input(last)) * 4 + 63) / 64;
      const int64_t steps = (last - first) * ((s.out_height + kBlockRows - 1) / kBlockRows);
      prefetch.per_step = (prefetch.lines + steps - 1) / steps;
    }
    for (int64_t p = first; p < last; ++p) {
      const int64_t o = p % outputs;
      const float* taps = w + o * kh * kw;
      const float* from = padded.data() + (p - first) * padded_floats;
      const float offset = b ? b[o] : 0.0f;
      float* plane = out + p * s.out_height * s.out_width;
      if (fixed == 31) OutputPlane<1, 3>(from, row, taps, offset, activation, s, plane, prefetch);
      else if (fixed == 32) OutputPlane<2, 3>(from, row, taps, offset, activation, s, plane, prefetch);
      else if (fixed == 51) OutputPlane<1, 5>(from, row, taps, offset, activation, s, plane, prefetch);
      else if (fixed == 52) OutputPlane<2, 5>(from, row, taps, offset, activation, s, plane, prefetch);
      else if (sw == 1) OutputPlane<1>(from, row, taps, offset, activation, s, plane, prefetch);
      else if (sw == 2) OutputPlane<2>(from, row, taps, offset, activation, s, plane, prefetch);
      else OutputPlane<0>(from, row, taps, offset, activation, s, plane, prefetch);
    }
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnDepthwiseConv, kiln::DepthwiseConv,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Attr<int64_t>("kernel_h")
                                  .Attr<int64_t>("kernel_w")
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("dilation_h")
                                  .Attr<int64_t>("dilation_w")
                                  .Attr<int64_t>("activation"));
