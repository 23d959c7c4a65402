// fp32 2-D MaxPool over NCHW: y[plane, oy, ox] = max over the window taps inside the image of
// x[plane, oy * sh - pt + i * dh, ox * sw - pl + j * dw], -inf where a window holds none. Separable,
// one output row at a time: the max over the window's rows into a padded line that stays in L1,
// then the max along it, sixteen outputs a vector (stride 2: two loads and a permute a tap). XLA:CPU
// pads the whole image with -inf and combines strided slices of it (ResNet-50's 3 x 3 / 2 pool of
// 64 x 112 x 112: several passes over 3 MB, about four times onnxruntime's time).

#include <limits>
#include <vector>

#include "tile.h"

namespace kiln {
namespace {

constexpr int kMaxWindowRows = 16;  // rows a window's column maxima are taken over in registers

struct PoolShape {
  int64_t height, width, out_height, out_width;
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
};

// One output row: the max over the window's rows inside the image, column by column, into `line`
// (laid out with pl columns of -inf padding in front and -inf past the image), then the max over
// each window's columns of that line: kh loads per 16 columns, then kw per 16 outputs, with no
// bounds checks left in the second step.
void PoolRow(const float* x, const PoolShape& s, int64_t oy, float* line, float* y) {
  const Vec lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const float* rows[kMaxWindowRows];
  int count = 0;
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t iy = oy * s.sh - s.pt + i * s.dh;
    if (iy >= 0 && iy < s.height) rows[count++] = x + iy * s.width;
  }
  float* into = line + s.pl;  // the columns before and after the image hold -inf (filled once a plane)
  for (int64_t j = 0; j < s.width; j += kLanes) {
    const __mmask16 lanes = TailMask(s.width - j);
    Vec best = lowest;
    for (int r = 0; r < count; ++r) best = _mm512_max_ps(best, _mm512_maskz_loadu_ps(lanes, rows[r] + j));
    _mm512_mask_storeu_ps(into + j, lanes, best);
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i evens = _mm512_add_epi32(iota, iota);
  const __m512i columns = _mm512_mullo_epi32(iota, _mm512_set1_epi32(static_cast<int>(s.sw)));
  for (int64_t ox0 = 0; ox0 < s.out_width; ox0 += kLanes) {
    Vec best = lowest;
    for (int64_t j = 0; j < s.kw; ++j) {
      const float* from = line + ox0 * s.sw + j * s.dw;
      if (s.sw == 1) {
        best = _mm512_max_ps(best, _mm512_loadu_ps(from));
      } else if (s.sw == 2) {
        best = _mm512_max_ps(best, _mm512_permutex2var_ps(_mm512_loadu_ps(from), evens, _mm512_loadu_ps(from + kLanes)));
      } else {
        best = _mm512_max_ps(best, _mm512_i32gather_ps(columns, from, 4));
      }
    }
    _mm512_mask_storeu_ps(y + ox0, TailMask(s.out_width - ox0), best);
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

ffi::Error MaxPool(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool, int64_t kh,
                   int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || yd.size() != 4 || xd[0] != yd[0] || xd[1] != yd[1])
    return ffi::Error::InvalidArgument("kiln_max_pool: x and y must be NCHW of the same batch and channels");
  if (kh < 1 || kh > kMaxWindowRows || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pl < 0)
    return ffi::Error::InvalidArgument("kiln_max_pool: bad window");
  const PoolShape s{xd[2], xd[3], yd[2], yd[3], kh, kw, sh, sw, pt, pl, dh, dw};
  const int64_t planes = yd[0] * yd[1];
  if (planes == 0 || s.out_height == 0 || s.out_width == 0) return ffi::Error::Success();
  if (s.height == 0 || s.width == 0) return ffi::Error::InvalidArgument("kiln_max_pool: empty image");
  const float* from = x.typed_data();
  float* to = y->typed_data();
  const int64_t work = planes * s.out_height * s.out_width * kh * kw;
  const int64_t line_length = LineLength(s);
  ParallelShares(pool, planes, work, [=](int64_t plane) {
    static thread_local std::vector<float> line;
    line.assign(line_length, -std::numeric_limits<float>::infinity());
    for (int64_t oy = 0; oy < s.out_height; ++oy)
      PoolRow(from + plane * s.height * s.width, s, oy, line.data(), to + (plane * s.out_height + oy) * s.out_width);
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnMaxPool, kiln::MaxPool,
                              xla::ffi::Ffi::Bind()
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
                                  .Attr<int64_t>("dw"));
