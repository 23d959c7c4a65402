// fp32 2-D MaxPool and AveragePool over NCHW. y[plane, oy, ox] combines, over the window taps inside
// the image, x[plane, oy * sh - pt + i * dh, ox * sw - pl + j * dw]: their max (-inf where a window
// holds none), or their sum divided by the taps counted (the image's, or with count_include_pad also
// the explicit padding's, never ceil mode's extra; a divisor of 0 gives NaN, as XLA's path does).
// Separable, one output row at a time: the window's rows combined column by column into a padded
// line that stays in L1, then combined along it, sixteen outputs a vector (stride 2: two loads and
// a permute a tap). XLA:CPU pads the whole image and combines strided slices of it (ResNet-50's
// 3 x 3 / 2 MaxPool of 64 x 112 x 112: several passes over 3 MB, about four times onnxruntime's time).

#include <limits>
#include <string>
#include <vector>

#include "tile.h"

namespace kiln {
namespace {

constexpr int kMaxWindowRows = 16;  // rows a window's columns are combined over in registers

struct PoolShape {
  int64_t height, width, out_height, out_width;
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
  int64_t counted_top, counted_bottom, counted_left, counted_right;  // padding an average counts
};

struct MaxOp {
  static Vec Identity() { return _mm512_set1_ps(-std::numeric_limits<float>::infinity()); }
  static Vec Combine(Vec a, Vec b) { return _mm512_max_ps(a, b); }
};

struct SumOp {
  static Vec Identity() { return _mm512_setzero_ps(); }
  static Vec Combine(Vec a, Vec b) { return _mm512_add_ps(a, b); }
};

// taps of a window starting at `first` (step `step`, `taps` of them) that fall in [lo, hi)
inline int64_t TapsWithin(int64_t first, int64_t step, int64_t taps, int64_t lo, int64_t hi) {
  int64_t count = 0;
  for (int64_t t = 0; t < taps; ++t) count += first + t * step >= lo && first + t * step < hi;
  return count;
}

// One output row: the window's rows inside the image combined column by column into `line` (laid
// out with pl columns of Op's identity in front and after the image), then each window's columns
// of that line combined: kh loads per 16 columns, then kw per 16 outputs, no bounds checks in the
// second step. `column_scale` (averages only) holds 1 / the counted columns of each output column.
template <typename Op>
void PoolRow(const float* x, const PoolShape& s, int64_t oy, float* line, const float* column_scale, float* y) {
  const float* rows[kMaxWindowRows];
  int count = 0;
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t iy = oy * s.sh - s.pt + i * s.dh;
    if (iy >= 0 && iy < s.height) rows[count++] = x + iy * s.width;
  }
  float* into = line + s.pl;  // the columns before and after the image hold the identity (filled once a plane)
  for (int64_t j = 0; j < s.width; j += kLanes) {
    const __mmask16 lanes = TailMask(s.width - j);
    Vec acc = Op::Identity();
    for (int r = 0; r < count; ++r) acc = Op::Combine(acc, _mm512_maskz_loadu_ps(lanes, rows[r] + j));
    _mm512_mask_storeu_ps(into + j, lanes, acc);
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i evens = _mm512_add_epi32(iota, iota);
  const __m512i columns = _mm512_mullo_epi32(iota, _mm512_set1_epi32(static_cast<int>(s.sw)));
  Vec row_scale = _mm512_setzero_ps();
  if (column_scale) {
    const int64_t counted = TapsWithin(oy * s.sh - s.pt, s.dh, s.kh, -s.counted_top, s.height + s.counted_bottom);
    row_scale = _mm512_set1_ps(1.0f / static_cast<float>(counted));
  }
  for (int64_t ox0 = 0; ox0 < s.out_width; ox0 += kLanes) {
    Vec acc = Op::Identity();
    for (int64_t j = 0; j < s.kw; ++j) {
      const float* from = line + ox0 * s.sw + j * s.dw;
      if (s.sw == 1) {
        acc = Op::Combine(acc, _mm512_loadu_ps(from));
      } else if (s.sw == 2) {
        acc = Op::Combine(acc, _mm512_permutex2var_ps(_mm512_loadu_ps(from), evens, _mm512_loadu_ps(from + kLanes)));
      } else {
        acc = Op::Combine(acc, _mm512_i32gather_ps(columns, from, 4));
      }
    }
    if (column_scale) acc = _mm512_mul_ps(_mm512_mul_ps(acc, row_scale), Load(column_scale + ox0));
    _mm512_mask_storeu_ps(y + ox0, TailMask(s.out_width - ox0), acc);
  }
}

// The padded line's length: every column a window reads, whole vectors of it, and what the
// widest load of the last block reaches past it
int64_t LineLength(const PoolShape& s) {
  const int64_t blocks = (s.out_width + kLanes - 1) / kLanes;
  const int64_t last = (blocks * kLanes - 1) * s.sw + (s.kw - 1) * s.dw + kLanes;
  const int64_t length = std::max(last + 1, s.pl + s.width);
  return (length + kLanes - 1) / kLanes * kLanes;
}

template <typename Op>
ffi::Error Pool(const char* target, ffi::Buffer<ffi::F32>& x, ffi::Result<ffi::Buffer<ffi::F32>>& y,
                ffi::ThreadPool& pool, PoolShape s, bool average) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  const std::string name(target);
  if (xd.size() != 4 || yd.size() != 4 || xd[0] != yd[0] || xd[1] != yd[1])
    return ffi::Error::InvalidArgument(name + ": x and y must be NCHW of the same batch and channels");
  if (s.kh < 1 || s.kh > kMaxWindowRows || s.kw < 1 || s.sh < 1 || s.sw < 1 || s.dh < 1 || s.dw < 1 || s.pt < 0 ||
      s.pl < 0)
    return ffi::Error::InvalidArgument(name + ": bad window");
  s.height = xd[2], s.width = xd[3], s.out_height = yd[2], s.out_width = yd[3];
  const int64_t planes = yd[0] * yd[1];
  if (planes == 0 || s.out_height == 0 || s.out_width == 0) return ffi::Error::Success();
  if (s.height == 0 || s.width == 0) return ffi::Error::InvalidArgument(name + ": empty image");
  std::vector<float> column_scale;  // 1 / counted columns of each output column, whole vectors
  if (average) {
    column_scale.assign((s.out_width + kLanes - 1) / kLanes * kLanes, 0.0f);
    for (int64_t ox = 0; ox < s.out_width; ++ox)
      column_scale[ox] = 1.0f / static_cast<float>(TapsWithin(ox * s.sw - s.pl, s.dw, s.kw, -s.counted_left,
                                                              s.width + s.counted_right));
  }
  const float* from = x.typed_data();
  float* to = y->typed_data();
  const float* scale = average ? column_scale.data() : nullptr;
  const int64_t line_length = LineLength(s);
  ParallelShares(pool, planes, planes * s.out_height * s.out_width * s.kh * s.kw, [=](int64_t plane) {
    static thread_local std::vector<float> line;
    line.assign(line_length, _mm512_cvtss_f32(Op::Identity()));
    for (int64_t oy = 0; oy < s.out_height; ++oy)
      PoolRow<Op>(from + plane * s.height * s.width, s, oy, line.data(), scale, to + (plane * s.out_height + oy) * s.out_width);
  });
  return ffi::Error::Success();
}

ffi::Error MaxPool(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool, int64_t kh,
                   int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw) {
  return Pool<MaxOp>("kiln_max_pool", x, y, pool, {0, 0, 0, 0, kh, kw, sh, sw, pt, pl, dh, dw, 0, 0, 0, 0}, false);
}

// counted = (top, bottom, left, right): the explicit padding a count_include_pad average counts
ffi::Error AveragePool(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                       ffi::Span<const int64_t> counted) {
  if (counted.size() != 4) return ffi::Error::InvalidArgument("kiln_average_pool: counted takes 4 values");
  return Pool<SumOp>("kiln_average_pool", x, y, pool,
                     {0, 0, 0, 0, kh, kw, sh, sw, pt, pl, dh, dw, counted[0], counted[1], counted[2], counted[3]}, true);
}

// The operands and window attributes both pools take
inline auto PoolBinding() {
  return xla::ffi::Ffi::Bind()
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
      .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
      .Ctx<xla::ffi::ThreadPool>()
      .Attr<int64_t>("kh")
      .Attr<int64_t>("kw")
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("pt")
      .Attr<int64_t>("pl")
      .Attr<int64_t>("dh")
      .Attr<int64_t>("dw");
}

}  // namespace
}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnMaxPool, kiln::MaxPool, kiln::PoolBinding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnAveragePool, kiln::AveragePool,
                              kiln::PoolBinding().Attr<xla::ffi::Span<const int64_t>>("counted"));
