// fp32 GEMM against a weight stored once, at compile time, in column panels:
// y = act(x @ W (+ bias)) (+ residual), or act(x @ W (+ bias) + residual), act none, Relu or one of
// ONNX Gelu's forms, applied as each output tile is stored (a transformer's residual Add, a ResNet
// block's Add and Relu then cost no pass of their own).
//
// XLA:CPU's dot (YNNPACK) repacks its right operand on every call; for a weight that is a model
// parameter that is pure overhead, and onnxruntime's MLAS avoids it by prepacking initializers once.
// Here the weight [K, N] is stored as panels [ceil(N / NR)][K][NR] (tile.h), an ordinary
// position-independent array that travels as a function argument like any other weight, and x is
// read in place. Work is split over XLA's intra-op pool as MLAS splits it: one contiguous panel range
// per thread (row ranges too when there are few panels), so each thread streams its own part of the
// weight in long runs (four chunks per thread measured 5-15% slower on a 2-core Zen 4 host). A thread
// done with its range takes the remaining panel groups of the others from their far end (GroupQueue),
// so a vCPU that the host stalls does not hold the whole product up. Where the rows outweigh the
// weight (a convolution's pixels against its kernel), the rows go instead in chunks that fit L2, which
// the threads claim one at a time, each chunk against the whole weight.

#include "tile.h"

namespace kiln {
namespace {

constexpr int64_t kMinPanelsPerChunk = 2;

ffi::Error PanelMatmul(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> panels, ffi::ResultBuffer<ffi::F32> y,
                       ffi::ThreadPool pool, const Epilogue& e) {
  if (!KnownActivation(e.activation))
    return ffi::Error::InvalidArgument("kiln_panel_matmul: unknown activation");
  const auto xd = x.dimensions(), pd = panels.dimensions(), yd = y->dimensions();
  if (xd.size() < 1 || pd.size() != 3 || pd[2] != kPanel || yd.size() != xd.size())
    return ffi::Error::InvalidArgument("kiln_panel_matmul: bad operand ranks");
  const int64_t k = xd.back(), n = yd.back();
  if (pd[1] != k || pd[0] != PanelCount(n))
    return ffi::Error::InvalidArgument("kiln_panel_matmul: weight panels do not match the operands");
  const int64_t m = k ? static_cast<int64_t>(x.element_count()) / k : 0;
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {  // an empty sum: the bias (or zeros)
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) y->typed_data()[i * n + j] = e.bias ? e.bias[j] : 0.0f;
      Finish(y->typed_data() + i * n, n, 1, n, e, e.residual ? e.residual + i * n : nullptr);
    }
    return ffi::Error::Success();
  }
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());  // one range each
  const int64_t work = 2 * m * n * k + 4 * n * k;  // a weight streamed from memory is work even at m = 1
  const float* a = x.typed_data();
  const float* b = panels.typed_data();
  float* c = y->typed_data();
  const int64_t panel_count = PanelCount(n);
  if (m >= 2 * panel_count * kPanel) {  // the rows outweigh the weight: L2-sized row chunks, claimed one at a time
    const int64_t tiles_per_thread = ((m + kRows - 1) / kRows + threads - 1) / threads;
    const int64_t chunk = std::min(RowChunk(k), tiles_per_thread * kRows);
    ParallelShares(pool, (m + chunk - 1) / chunk, work, [=](int64_t i) {
      PanelProduct(n, k, a, k, b, e, c, n, 0, panel_count, i * chunk, std::min(m, (i + 1) * chunk));
    });
    return ffi::Error::Success();
  }
  const int64_t panel_chunks = std::max<int64_t>(1, std::min(threads, panel_count / kMinPanelsPerChunk));
  const int64_t panels_per_chunk = (panel_count + panel_chunks - 1) / panel_chunks;
  const int64_t tiles = (m + kRows - 1) / kRows;
  const int64_t row_chunks = std::min(tiles, std::max<int64_t>(1, threads / panel_chunks));
  const int64_t rows_per_chunk = (tiles + row_chunks - 1) / row_chunks * kRows;
  const int64_t panel_ranges = (panel_count + panels_per_chunk - 1) / panels_per_chunk;
  const int64_t row_ranges = (m + rows_per_chunk - 1) / rows_per_chunk;
  if (row_ranges > 1 || panel_ranges == 1) {
    ParallelFor(pool, panel_ranges * row_ranges, work, [=](int64_t i) {
      const int64_t p0 = (i % panel_ranges) * panels_per_chunk, r0 = (i / panel_ranges) * rows_per_chunk;
      PanelProduct(n, k, a, k, b, e, c, n, p0, std::min(panel_count, p0 + panels_per_chunk), r0,
                   std::min(m, r0 + rows_per_chunk));
    });
    return ffi::Error::Success();
  }
  // every thread has all the rows: each takes its own run of panel groups, then the rest of the others'
  const int64_t groups = (panel_count + kGroup - 1) / kGroup;
  const int64_t groups_per_range = (groups + panel_ranges - 1) / panel_ranges;
  std::unique_ptr<GroupQueue[]> queues(new GroupQueue[panel_ranges]);
  for (int64_t i = 0; i < panel_ranges; ++i)
    queues[i].Reset(std::min(groups, i * groups_per_range), std::min(groups, (i + 1) * groups_per_range));
  GroupQueue* shares = queues.get();
  ParallelFor(pool, panel_ranges, work, [=](int64_t i) {
    PanelGroups(n, k, a, k, b, e, c, n, panel_count, 0, m, [=]() -> int64_t {
      int64_t group;
      if (shares[i].TakeFront(&group)) return group * kGroup;
      for (int64_t other = 1; other < panel_ranges; ++other)
        if (shares[(i + other) % panel_ranges].TakeBack(&group)) return group * kGroup;
      return -1;
    });
  });
  return ffi::Error::Success();
}

ffi::Error PanelMatmulNoBias(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> panels, ffi::ResultBuffer<ffi::F32> y,
                             ffi::ThreadPool pool, int64_t activation) {
  return PanelMatmul(x, panels, y, pool, {nullptr, activation});
}

ffi::Error PanelMatmulBias(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> panels, ffi::Buffer<ffi::F32> bias,
                           ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool, int64_t activation) {
  if (bias.element_count() != static_cast<size_t>(y->dimensions().back()))
    return ffi::Error::InvalidArgument("kiln_panel_matmul_bias: bias length differs from N");
  return PanelMatmul(x, panels, y, pool, {bias.typed_data(), activation});
}

// bias may be empty (no bias); residual has y's shape; residual_first adds it before the activation
ffi::Error PanelMatmulResidual(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> panels, ffi::Buffer<ffi::F32> bias,
                               ffi::Buffer<ffi::F32> residual, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool,
                               int64_t activation, int64_t residual_first) {
  const size_t n = static_cast<size_t>(y->dimensions().back());
  if (bias.element_count() != 0 && bias.element_count() != n)
    return ffi::Error::InvalidArgument("kiln_panel_matmul_residual: bias length differs from N");
  if (residual.element_count() != y->element_count())
    return ffi::Error::InvalidArgument("kiln_panel_matmul_residual: residual differs from the output in size");
  return PanelMatmul(x, panels, y, pool, {bias.element_count() ? bias.typed_data() : nullptr, activation,
                                          residual.typed_data(), residual_first != 0});
}

}  // namespace
}  // namespace kiln

extern "C" int kiln_panel_width() { return kiln::kPanel; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnPanelMatmul, kiln::PanelMatmulNoBias,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Attr<int64_t>("activation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnPanelMatmulBias, kiln::PanelMatmulBias,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Attr<int64_t>("activation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnPanelMatmulResidual, kiln::PanelMatmulResidual,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Attr<int64_t>("activation")
                                  .Attr<int64_t>("residual_first"));
