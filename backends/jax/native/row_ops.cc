// fp32 row operations on x [rows, length] (a tensor's trailing axes flattened): the mean of each row
// (GlobalAveragePool, ReduceMean over the spatial axes of NCHW) and each row scaled by its own
// factor (a squeeze-and-excitation block's x * s[c]). XLA:CPU splits such loops over its intra-op
// pool even at a few hundred kilobytes, and that pool's threads are asleep by then (the native
// kernels run on their own helpers), so each of MobileNetV3's pools and channel scalings waited
// tens of microseconds on a wake-up for a few microseconds of work. Small ones run on the caller.

#include "tile.h"

namespace kiln {
namespace {

constexpr int64_t kRowsPerItem = 16;

float RowSum(const float* x, int64_t length) {
  Vec a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), c = _mm512_setzero_ps(), d = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 4 * kLanes <= length; j += 4 * kLanes) {
    a = _mm512_add_ps(a, Load(x + j)), b = _mm512_add_ps(b, Load(x + j + kLanes));
    c = _mm512_add_ps(c, Load(x + j + 2 * kLanes)), d = _mm512_add_ps(d, Load(x + j + 3 * kLanes));
  }
  for (; j < length; j += kLanes) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(TailMask(length - j), x + j));
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

// rows and length of x from the per-row operand's element count `rows`
bool RowShape(size_t elements, size_t rows, int64_t* length) {
  if (rows == 0 || elements == 0 || elements % rows != 0) return false;
  *length = static_cast<int64_t>(elements / rows);
  return true;
}

ffi::Error RowMean(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool) {
  const int64_t rows = static_cast<int64_t>(y->element_count());
  int64_t length = 0;
  if (rows == 0) return ffi::Error::Success();
  if (!RowShape(x.element_count(), rows, &length))
    return ffi::Error::InvalidArgument("kiln_row_mean: the input is not a whole number of non-empty rows");
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  const float inverse = 1.0f / static_cast<float>(length);
  ParallelRows(pool, rows, kRowsPerItem, rows * length, [=](int64_t r) { ys[r] = RowSum(xs + r * length, length) * inverse; });
  return ffi::Error::Success();
}

ffi::Error RowScale(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y,
                    ffi::ThreadPool pool) {
  const int64_t rows = static_cast<int64_t>(scale.element_count());
  int64_t length = 0;
  if (y->element_count() != x.element_count())
    return ffi::Error::InvalidArgument("kiln_row_scale: the output differs from the input in size");
  if (x.element_count() == 0) return ffi::Error::Success();
  if (!RowShape(x.element_count(), rows, &length))
    return ffi::Error::InvalidArgument("kiln_row_scale: the input is not a whole number of rows of the scale's length");
  const float *xs = x.typed_data(), *factors = scale.typed_data();
  float* ys = y->typed_data();
  ParallelRows(pool, rows, kRowsPerItem, rows * length, [=](int64_t r) {
    const Vec factor = _mm512_set1_ps(factors[r]);
    const float* from = xs + r * length;
    float* to = ys + r * length;
    for (int64_t j = 0; j < length; j += kLanes) {
      const __mmask16 lanes = TailMask(length - j);
      _mm512_mask_storeu_ps(to + j, lanes, _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, from + j), factor));
    }
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnRowMean, kiln::RowMean,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnRowScale, kiln::RowScale,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>());
