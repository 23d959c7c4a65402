// fp32 layer normalization over the trailing `features` values of each row: y = (x - mean) /
// sqrt(var + eps) * scale + bias, one pass over a row held in L1 for the mean, one for the variance
// and one for the output. XLA:CPU splits it into two reductions (YNNPACK) and two loops over the
// tensor; a transformer layer runs two of them on every token.

#include <cmath>

#include "tile.h"

namespace kiln {
namespace {

constexpr int64_t kRowsPerChunk = 8;

void NormalizeRow(const float* x, const float* scale, const float* bias, float* y, int64_t features, float epsilon) {
  Vec sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < features; j += kLanes) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(TailMask(features - j), x + j));
  const float mean = _mm512_reduce_add_ps(sum) / static_cast<float>(features);
  const Vec mean_v = _mm512_set1_ps(mean);
  Vec squares = _mm512_setzero_ps();
  for (int64_t j = 0; j < features; j += kLanes) {
    const __mmask16 lanes = TailMask(features - j);
    const Vec centered = _mm512_maskz_sub_ps(lanes, _mm512_maskz_loadu_ps(lanes, x + j), mean_v);
    squares = _mm512_fmadd_ps(centered, centered, squares);
  }
  const float variance = _mm512_reduce_add_ps(squares) / static_cast<float>(features);
  const Vec inverse = _mm512_set1_ps(1.0f / std::sqrt(variance + epsilon));
  for (int64_t j = 0; j < features; j += kLanes) {
    const __mmask16 lanes = TailMask(features - j);
    const Vec normalized = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, x + j), mean_v), inverse);
    const Vec out = _mm512_fmadd_ps(normalized, _mm512_maskz_loadu_ps(lanes, scale + j), _mm512_maskz_loadu_ps(lanes, bias + j));
    _mm512_mask_storeu_ps(y + j, lanes, out);
  }
}

ffi::Error LayerNorm(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias,
                     ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool, float epsilon) {
  const int64_t features = static_cast<int64_t>(scale.element_count());
  if (features == 0 || static_cast<int64_t>(bias.element_count()) != features ||
      x.element_count() % features != 0 || y->element_count() != x.element_count())
    return ffi::Error::InvalidArgument("kiln_layer_norm: scale and bias must match the normalized size");
  const int64_t rows = static_cast<int64_t>(x.element_count()) / features;
  const float *xs = x.typed_data(), *g = scale.typed_data(), *b = bias.typed_data();
  float* ys = y->typed_data();
  ParallelRows(pool, rows, kRowsPerChunk, 8 * rows * features,
               [=](int64_t r) { NormalizeRow(xs + r * features, g, b, ys + r * features, features, epsilon); });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnLayerNorm, kiln::LayerNorm,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Attr<float>("epsilon"));
