// fp32 2-D convolution as one product per image: y[o, pixel] = act(sum_k W[o, k] patch[k, pixel]
// + bias[o] (+ residual[o, pixel])), k = (c, i, j) over the input channels and kernel taps.
//
// The roles of panel_gemm.cc are swapped: the kernel matrix W [O, C*KH*KW] is the row operand,
// packed once at compile time into row tiles, K block by K block: [K / kDepth][ceil(O / MR)][kc][MR]
// (kc = kDepth but in the last block), so the tiles of one block stream in as one run (late layers
// read megabytes of kernel per call, faster in long runs); the image's patches are the
// column panels, packed at run time 32 output pixels at a time straight from the NCHW image (the
// im2col is never materialized: a panel's K x 32 block is built in L2 and read by every row tile).
// The output tile [MR channels x 32 pixels] is then a stretch of NCHW rows, so input, output and
// residual all stay NCHW: no layout copy runs between convolutions. For stride 1 a panel row is
// one or two contiguous runs of an image row, read with masked loads (padding lanes masked to 0);
// stride 2 loads twice the span and keeps every other float; other strides gather.

#include "tile.h"

namespace kiln {
namespace {

struct ConvShape {
  int64_t channels, height, width;      // input C, H, W
  int64_t out_height, out_width;        // Ho, Wo
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
  int64_t depth() const { return channels * kh * kw; }
  int64_t pixels() const { return out_height * out_width; }
};

// Up to kLanes consecutive pixels of a panel in one output row: lanes [lane, lane + lanes) of the
// panel are pixels (oy, ox ..).
struct Piece {
  int lane, lanes;
  int64_t oy, ox;
};

// panel[k - k0][kPanel] for k = (c, i, j) in [k0, k1), the patches of output pixels [q0, q0 + width)
// of one image (zero where a tap falls in the padding; lanes past width are left as they are, their
// columns are never stored). Where each piece of the panel reads from for tap (i, j) is the same for
// every channel, so it is worked out once per tap.
void PackPatches(const float* image, const ConvShape& s, int64_t q0, int width, int64_t k0, int64_t k1, float* panel) {
  const int64_t plane = s.height * s.width;
  if (s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 && s.out_width == s.width) {
    // a pointwise convolution: patch row k is channel k's pixels [q0, q0 + width), one run
    const __mmask16 low = static_cast<__mmask16>((1u << std::min(width, kLanes)) - 1);
    const __mmask16 high = static_cast<__mmask16>((1u << std::max(width - kLanes, 0)) - 1);
    for (int64_t c = k0; c < k1; ++c, panel += kPanel) {
      const float* from = image + c * plane + q0;
      _mm512_mask_storeu_ps(panel, low, _mm512_maskz_loadu_ps(low, from));
      _mm512_mask_storeu_ps(panel + kLanes, high, _mm512_maskz_loadu_ps(high, from + kLanes));
    }
    return;
  }
  Piece pieces[kPanel];
  int count = 0;
  for (int lane = 0; lane < width;) {
    const int64_t q = q0 + lane, oy = q / s.out_width, ox = q % s.out_width;
    const int lanes = static_cast<int>(std::min<int64_t>({kLanes, width - lane, s.out_width - ox}));
    pieces[count++] = {lane, lanes, oy, ox};
    lane += lanes;
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i columns = _mm512_mullo_epi32(iota, _mm512_set1_epi32(static_cast<int>(s.sw)));  // a gather's
  const __m512i evens = _mm512_add_epi32(iota, iota);
  const int64_t taps = s.kh * s.kw;
  int64_t offset[kPanel];
  __mmask16 live[kPanel], store[kPanel], live_high[kPanel];
  for (int64_t i = 0; i < s.kh; ++i) {
    for (int64_t j = 0; j < s.kw; ++j) {
      for (int p = 0; p < count; ++p) {  // the input row and the columns in bounds of each piece
        const Piece& piece = pieces[p];
        const int64_t iy = piece.oy * s.sh + i * s.dh - s.pt, ix = piece.ox * s.sw + j * s.dw - s.pl;
        int64_t lo = ix < 0 ? (-ix + s.sw - 1) / s.sw : 0, hi = (s.width - ix + s.sw - 1) / s.sw;
        hi = std::min<int64_t>(hi, piece.lanes);
        const bool inside = iy >= 0 && iy < s.height && hi > lo;
        store[p] = static_cast<__mmask16>((1u << piece.lanes) - 1);
        live[p] = inside ? static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
        offset[p] = inside ? iy * s.width + ix : 0;
        if (s.sw == 2) {  // the 2 * lanes input columns lanes [lo, hi) take every other one of, in two loads
          const uint64_t first = 1ull << (2 * lo), end = 1ull << (2 * hi - 1);
          const uint32_t span = inside ? static_cast<uint32_t>((end - 1) & ~(first - 1)) : 0;
          live[p] = static_cast<__mmask16>(span), live_high[p] = static_cast<__mmask16>(span >> 16);
        }
      }
      // the channels whose row k = c * taps + tap falls in [k0, k1)
      const int64_t tap = i * s.kw + j;
      const int64_t c0 = std::max<int64_t>(0, (k0 - tap + taps - 1) / taps);
      const int64_t c1 = std::min<int64_t>(s.channels, (k1 - tap + taps - 1) / taps);
      float* row = panel + (c0 * taps + tap - k0) * kPanel;
      const float* from = image + c0 * plane;
      for (int64_t c = c0; c < c1; ++c, row += taps * kPanel, from += plane) {
        for (int p = 0; p < count; ++p) {
          // masked-off lanes are not read (no fault past the image's edge) and come out 0
          const float* source = from + offset[p];
          Vec values;
          if (s.sw == 1) {
            values = _mm512_maskz_loadu_ps(live[p], source);
          } else if (s.sw == 2) {
            values = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(live[p], source), evens,
                                            _mm512_maskz_loadu_ps(live_high[p], source + kLanes));
          } else {
            values = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live[p], columns, source, 4);
          }
          _mm512_mask_storeu_ps(row + pieces[p].lane, store[p], values);
        }
      }
    }
  }
}

// The checks both forms make, each failure naming `target`: NCHW ranks (before any dimension is
// read), the packed kernel [ceil(O / width)][C * kh * kw][width], the activation, the bias and
// residual sizes.
ffi::Error CheckOperands(const char* target, ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& kernel,
                         ffi::Buffer<ffi::F32>& bias, ffi::Buffer<ffi::F32>& residual, ffi::Result<ffi::Buffer<ffi::F32>>& y,
                         int64_t width, int64_t activation, int64_t kh, int64_t kw) {
  const auto xd = x.dimensions(), kd = kernel.dimensions(), yd = y->dimensions();
  const std::string name(target);
  if (xd.size() != 4 || yd.size() != 4 || kd.size() != 3 || kd[2] != width || xd[0] != yd[0])
    return ffi::Error::InvalidArgument(name + ": bad operand ranks");
  if (!KnownActivation(activation)) return ffi::Error::InvalidArgument(name + ": unknown activation");
  if (kd[1] != xd[1] * kh * kw || kd[0] != (yd[1] + width - 1) / width)
    return ffi::Error::InvalidArgument(name + ": the packed kernel does not match the operands");
  if (bias.element_count() != 0 && bias.element_count() != static_cast<size_t>(yd[1]))
    return ffi::Error::InvalidArgument(name + ": bias length differs from the output channels");
  if (residual.element_count() != 0 && residual.element_count() != y->element_count())
    return ffi::Error::InvalidArgument(name + ": residual differs from the output in size");
  return ffi::Error::Success();
}

ffi::Error ConvGemm(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> weight_tiles, ffi::Buffer<ffi::F32> bias,
                    ffi::Buffer<ffi::F32> residual, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool,
                    int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                    int64_t activation) {
  if (ffi::Error error = CheckOperands("kiln_conv_gemm", x, weight_tiles, bias, residual, y, kRows, activation, kh, kw);
      error.failure())
    return error;
  const auto xd = x.dimensions(), wd = weight_tiles.dimensions(), yd = y->dimensions();
  const ConvShape s{xd[1], xd[2], xd[3], yd[2], yd[3], kh, kw, sh, sw, pt, pl, dh, dw};
  const int64_t images = yd[0], outputs = yd[1], k = s.depth(), pixels = s.pixels();
  if (images == 0 || outputs == 0 || pixels == 0) return ffi::Error::Success();
  const float* image = x.typed_data();
  const float* tiles = weight_tiles.typed_data();
  const float* row_bias = bias.element_count() ? bias.typed_data() : nullptr;
  const float* added = residual.element_count() ? residual.typed_data() : nullptr;
  float* out = y->typed_data();
  // Work items: (image, run of pixel panels, range of row tiles), each K block of the run's panels
  // packed into L2 and multiplied by every row tile of the range. Where the kernel outweighs the
  // patches (late layers: 7 x 7 or 14 x 14 pixels, 256-2048 channels), the threads split the row
  // tiles and each takes all of an image's panels (up to kMaxRun), so the kernel streams in once;
  // elsewhere they take runs of kGroup panels, all rows each.
  constexpr int64_t kMaxRun = 16;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t panels = PanelCount(pixels), row_tiles = wd[0];
  const bool rows_split = row_tiles * kRows > pixels && panels <= kMaxRun;
  const int64_t run = rows_split ? panels : std::min(panels, kGroup), runs = (panels + run - 1) / run;
  const int64_t row_ranges = std::min(row_tiles, std::max<int64_t>(1, (threads + images * runs - 1) / (images * runs)));
  const int64_t tiles_per_range = (row_tiles + row_ranges - 1) / row_ranges;
  ParallelShares(pool, images * runs * row_ranges, 2 * images * outputs * k * pixels, [=](int64_t item) {
    const int64_t range = item % row_ranges, r = item / row_ranges % runs, b = item / (row_ranges * runs);
    const int64_t p0 = r * run, p1 = std::min(panels, p0 + run);
    static thread_local std::vector<float> packed;  // [run][kDepth][kPanel]
    if (packed.size() < static_cast<size_t>(run * kDepth * kPanel)) packed.resize(run * kDepth * kPanel);
    const float* source = image + b * s.channels * s.height * s.width;
    float* c = out + b * outputs * pixels;
    const Epilogue e{nullptr, activation, added ? added + b * outputs * pixels : nullptr, true, row_bias};
    const int64_t t1 = std::min(row_tiles, (range + 1) * tiles_per_range);
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
      const int kc = static_cast<int>(std::min<int64_t>(kDepth, k - k0));
      for (int64_t p = p0; p < p1; ++p)
        PackPatches(source, s, p * kPanel, static_cast<int>(std::min<int64_t>(kPanel, pixels - p * kPanel)), k0,
                    k0 + kc, packed.data() + (p - p0) * kDepth * kPanel);
      for (int64_t t = range * tiles_per_range; t < t1; ++t) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, outputs - t * kRows));
        for (int64_t p = p0; p < p1; ++p)
          PanelTile(pixels, k, tiles + (k0 * row_tiles + t * kc) * kRows, packed.data() + (p - p0) * kDepth * kPanel,
                    e, c, pixels, p, k0, kc, t * kRows, rows);
      }
    }
  });
  return ffi::Error::Success();
}

// The columns form, for images of few output pixels (7 x 7, 14 x 14): 32-pixel patch panels waste
// the lanes past the last pixel there (49 pixels fill 64 lanes), so the roles turn: the pixels are
// the rows, read 12 at a time straight out of the patch panels, and the output channels the panel
// columns, W^T [K, O] packed as panel_matmul packs a weight ([PanelCount(O)][K][NR]). Each thread
// takes a run of channel panels of one image, packs the image's patches K block by K block (both
// threads pack them: a few percent of the product) and stores its product [pixels][channels] in
// scratch, then transposes it into NCHW with the residual added and the activation applied.
ffi::Error ConvColumns(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> panels, ffi::Buffer<ffi::F32> bias,
                       ffi::Buffer<ffi::F32> residual, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                       int64_t activation) {
  if (ffi::Error error = CheckOperands("kiln_conv_columns", x, panels, bias, residual, y, kPanel, activation, kh, kw);
      error.failure())
    return error;
  const auto xd = x.dimensions(), pd = panels.dimensions(), yd = y->dimensions();
  const ConvShape s{xd[1], xd[2], xd[3], yd[2], yd[3], kh, kw, sh, sw, pt, pl, dh, dw};
  const int64_t images = yd[0], outputs = yd[1], k = s.depth(), pixels = s.pixels();
  if (images == 0 || outputs == 0 || pixels == 0) return ffi::Error::Success();
  const int64_t columns = pd[0], pixel_panels = PanelCount(pixels);
  std::vector<float> padded_bias;  // Tile reads a whole panel's bias
  if (bias.element_count()) {
    padded_bias.assign(columns * kPanel, 0.0f);
    std::copy(bias.typed_data(), bias.typed_data() + outputs, padded_bias.begin());
  }
  const float* column_bias = padded_bias.empty() ? nullptr : padded_bias.data();
  const float *image = x.typed_data(), *weights = panels.typed_data();
  const float* added = residual.element_count() ? residual.typed_data() : nullptr;
  float* out = y->typed_data();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t ranges = std::min(columns, std::max<int64_t>(1, (threads + images - 1) / images));
  const int64_t per_range = (columns + ranges - 1) / ranges;
  ParallelFor(pool, images * ranges, 2 * images * outputs * k * pixels, [=](int64_t item) {
    const int64_t b = item / ranges, p0 = item % ranges * per_range, p1 = std::min(columns, p0 + per_range);
    if (p0 >= p1) return;
    const int64_t width = (p1 - p0) * kPanel;  // the scratch's row stride
    static thread_local std::vector<float> packed, scratch;  // [pixel panel][kDepth][NR], [pixels][width]
    if (packed.size() < static_cast<size_t>(pixel_panels * kDepth * kPanel)) packed.resize(pixel_panels * kDepth * kPanel);
    if (scratch.size() < static_cast<size_t>(pixels * width)) scratch.resize(pixels * width);
    const float* source = image + b * s.channels * s.height * s.width;
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
      const int kc = static_cast<int>(std::min<int64_t>(kDepth, k - k0));
      for (int64_t q = 0; q < pixel_panels; ++q)
        PackPatches(source, s, q * kPanel, static_cast<int>(std::min<int64_t>(kPanel, pixels - q * kPanel)), k0, k0 + kc,
                    packed.data() + q * kDepth * kPanel);
      for (int64_t p = p0; p < p1; ++p) {
        const float* block = weights + (p * k + k0) * kPanel;
        const float* panel_bias = k0 == 0 && column_bias ? column_bias + p * kPanel : nullptr;
        for (int64_t i0 = 0, rows; i0 < pixels; i0 += rows) {  // 12 pixels at a time, within their patch panel
          rows = std::min<int64_t>(kRows, std::min(pixels, (i0 / kPanel + 1) * kPanel) - i0);
          const float* a = packed.data() + (i0 / kPanel) * kDepth * kPanel + i0 % kPanel;
          kPanelRowTiles[rows - 1](kc, a, block, scratch.data() + i0 * width + (p - p0) * kPanel, width, k0 == 0,
                                   panel_bias, nullptr, 0, nullptr);
        }
      }
    }
    const __m512i across = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(static_cast<int>(width)));
    for (int64_t o = p0 * kPanel; o < std::min(outputs, p1 * kPanel); ++o) {
      const float* column = scratch.data() + (o - p0 * kPanel);
      float* to = out + (b * outputs + o) * pixels;
      const float* plus = added ? added + (b * outputs + o) * pixels : nullptr;
      for (int64_t q = 0; q < pixels; q += kLanes) {
        const __mmask16 live = static_cast<__mmask16>((1u << std::min<int64_t>(kLanes, pixels - q)) - 1);
        Vec v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, across, column + q * width, 4);
        if (plus) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, plus + q));
        _mm512_mask_storeu_ps(to + q, live, Activated(v, activation));
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

// What both forms take: x, the packed kernel, bias and residual (empty where absent) -> y, the
// pool, the geometry and the activation
inline auto ConvBinding() {
  return xla::ffi::Ffi::Bind()
      .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
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
      .Attr<int64_t>("activation");
}

}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnConvGemm, kiln::ConvGemm, kiln::ConvBinding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnConvColumns, kiln::ConvColumns, kiln::ConvBinding());

extern "C" int kiln_row_tile() { return kiln::kRows; }
extern "C" int kiln_depth_block() { return kiln::kDepth; }
