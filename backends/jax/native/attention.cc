// fp32 scaled dot-product attention, softmax(q k^T * scale + bias) v, one (batch, head) per work item.
//
// XLA:CPU runs the two batched products of a transformer layer's attention as separate YNNPACK dots
// that repack both operands per head, with head transposes and the softmax as loops between them;
// at BERT's 12 heads x 128 tokens that is several times the products' arithmetic. Here each item
// packs its head's K^T and V into panels once (tile.h), multiplies a block of query rows against
// them with the same register tile as the GEMM, and does the softmax on the block while it is in
// cache. Q, K, V and the output are strided views (see Attention below), so no head transpose or
// slice runs before or after it. The additive bias has any broadcastable 4-D shape; keys it masks for
// a whole block of queries (a causal mask's future, padded keys) are left out of that block's work.
// A query row whose scores are all -inf gives zeros (ONNX Attention's fully masked rows).

#include <cmath>
#include <limits>
#include <vector>

#include "tile.h"

namespace kiln {
namespace {

constexpr int64_t kQueryBlock = 4 * kRows;

struct Layout {  // element strides of a [batch, head, position, feature] view; features contiguous
  int64_t batch, head, position;
};

struct Problem {
  int64_t batch, q_heads, kv_heads, q_len, kv_len, depth, v_depth;
  float scale;
  const float *q, *k, *v, *bias;
  float* y;
  Layout ql, kl, vl, yl;
  int64_t bias_b, bias_h, bias_q, bias_k;  // bias strides (0 on broadcast axes)
};

// softmax(row * scale + bias) in place over `length` scores; a row with no finite score becomes 0
void SoftmaxRow(float* row, int64_t length, float scale, const float* bias, int64_t bias_step) {
  const Vec scale_v = _mm512_set1_ps(scale);
  const Vec neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  Vec best = neg_inf;
  for (int64_t j = 0; j < length; j += kLanes) {
    const __mmask16 lanes = TailMask(length - j);
    Vec s = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, row + j), scale_v);
    if (bias) s = _mm512_add_ps(s, bias_step ? _mm512_maskz_loadu_ps(lanes, bias + j) : _mm512_set1_ps(*bias));
    s = _mm512_mask_blend_ps(lanes, neg_inf, s);
    _mm512_mask_storeu_ps(row + j, lanes, s);
    best = _mm512_max_ps(best, s);
  }
  const float top = _mm512_reduce_max_ps(best);
  if (top == -std::numeric_limits<float>::infinity()) {
    std::memset(row, 0, length * sizeof(float));
    return;
  }
  const Vec top_v = _mm512_set1_ps(top);
  Vec total = _mm512_setzero_ps();
  for (int64_t j = 0; j < length; j += kLanes) {
    const __mmask16 lanes = TailMask(length - j);
    const Vec e = _mm512_maskz_mov_ps(lanes, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, row + j), top_v)));
    _mm512_mask_storeu_ps(row + j, lanes, e);
    total = _mm512_add_ps(total, e);
  }
  const Vec inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
  for (int64_t j = 0; j < length; j += kLanes) {
    const __mmask16 lanes = TailMask(length - j);
    _mm512_mask_storeu_ps(row + j, lanes, _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, row + j), inverse));
  }
}

// Columns [0, n) of a row-major [rows, n] view (row stride ld) as panels [PanelCount(n)][rows][NR];
// with `transpose`, the view is read as its transpose: panel column j, row r = src[j * ld + r].
void Pack(const float* src, int64_t rows, int64_t n, int64_t ld, bool transpose, float* panels) {
  for (int64_t p = 0; p < PanelCount(n); ++p) {
    float* out = panels + p * rows * kPanel;
    const int64_t n0 = p * kPanel, width = std::min<int64_t>(kPanel, n - n0);
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = out + r * kPanel;
      if (transpose) {
        for (int64_t j = 0; j < width; ++j) dst[j] = src[(n0 + j) * ld + r];
      } else {
        std::memcpy(dst, src + r * ld + n0, width * sizeof(float));
      }
      std::fill(dst + width, dst + kPanel, 0.0f);
    }
  }
}

// A bias at or below this masks its key as exactly as -inf does: with any score of a sane size
// (|score| < 1e29) the key's exp underflows to exactly 0 (Exp gives 0 below -87.3) while a key the
// row attends sets the maximum. transformers' exports mask with float32's lowest value, not -inf.
constexpr float kMaskingBias = -1e30f;

// Whether keys [from, to) of a bias row hold one above `floor` (-inf: any finite one); where so,
// *last is one past the last such key
bool AnyAbove(const float* row, int64_t from, int64_t to, float floor, int64_t* last) {
  const Vec limit = _mm512_set1_ps(floor);
  for (int64_t end = to; end > from;) {
    const int64_t start = std::max(from, end - kLanes);
    const __mmask16 lanes = TailMask(end - start);
    const __mmask16 above = _mm512_mask_cmp_ps_mask(lanes, _mm512_maskz_loadu_ps(lanes, row + start), limit, _CMP_NLE_UQ);
    if (above) {
      *last = start + 32 - __builtin_clz(static_cast<unsigned>(above));
      return true;
    }
    end = start;
  }
  return false;
}

// How many leading keys rows [q0, q0 + rows) of a head need: one past the last key whose bias is
// above kMaskingBias in any of those rows (0 where every row is all -inf, whose output is zeros). A
// causal mask or padded keys leave the rest out of the block's products and softmax, which changes
// no result: their probabilities are exactly 0. A row masked everywhere by finite values (a uniform
// softmax over all keys) keeps every key.
int64_t AttendedKeys(const Problem& pr, const float* bias_head, int64_t q0, int64_t rows) {
  if (!bias_head) return pr.kv_len;
  const float negative_infinity = -std::numeric_limits<float>::infinity();
  const int64_t distinct_rows = pr.bias_q ? rows : 1;
  int64_t used = 0;
  for (int64_t r = 0; r < distinct_rows; ++r) {
    const float* row = bias_head + (q0 + r) * pr.bias_q;
    if (pr.bias_k == 0) {  // one bias value for all of the row's keys
      if (!(*row == negative_infinity)) return pr.kv_len;
      continue;
    }
    int64_t last = 0;
    if (AnyAbove(row, used, pr.kv_len, kMaskingBias, &last)) {
      used = last;
    } else if (!AnyAbove(row, 0, used, kMaskingBias, &last) && AnyAbove(row, 0, pr.kv_len, negative_infinity, &last)) {
      return pr.kv_len;
    }
  }
  return used;
}

void AttendHead(const Problem& pr, int64_t b, int64_t h) {
  thread_local std::vector<float> keys, values, scores;
  const int64_t kv_h = h / (pr.q_heads / pr.kv_heads);
  const float* k = pr.k + b * pr.kl.batch + kv_h * pr.kl.head;
  const float* v = pr.v + b * pr.vl.batch + kv_h * pr.vl.head;
  const float* q = pr.q + b * pr.ql.batch + h * pr.ql.head;
  float* y = pr.y + b * pr.yl.batch + h * pr.yl.head;
  const int64_t kv_stride = PanelCount(pr.kv_len) * kPanel;
  keys.resize(pr.depth * kv_stride);
  values.resize(PanelCount(pr.v_depth) * kPanel * pr.kv_len);
  scores.resize(kQueryBlock * kv_stride);
  Pack(k, pr.depth, pr.kv_len, pr.kl.position, /*transpose=*/true, keys.data());     // K^T: [D, kv]
  Pack(v, pr.kv_len, pr.v_depth, pr.vl.position, /*transpose=*/false, values.data());  // V: [kv, Dv]
  const float* bias_head = pr.bias ? pr.bias + b * pr.bias_b + h * pr.bias_h : nullptr;
  for (int64_t q0 = 0; q0 < pr.q_len; q0 += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, pr.q_len - q0);
    const int64_t used = AttendedKeys(pr, bias_head, q0, rows);
    if (used == 0) {
      for (int64_t r = 0; r < rows; ++r) std::fill_n(y + (q0 + r) * pr.yl.position, pr.v_depth, 0.0f);
      continue;
    }
    PanelProduct(pr.kv_len, pr.depth, q + q0 * pr.ql.position, pr.ql.position, keys.data(), {}, scores.data(),
                 kv_stride, 0, PanelCount(used), 0, rows);
    for (int64_t r = 0; r < rows; ++r)
      SoftmaxRow(scores.data() + r * kv_stride, used, pr.scale, bias_head ? bias_head + (q0 + r) * pr.bias_q : nullptr,
                 pr.bias_k);
    if (used == pr.kv_len) {
      PanelProduct(pr.v_depth, pr.kv_len, scores.data(), kv_stride, values.data(), {}, y + q0 * pr.yl.position,
                   pr.yl.position, 0, PanelCount(pr.v_depth), 0, rows);
      continue;
    }
    // a product over the first `used` rows of V's panels (each panel holds kv_len rows): one panel at a time
    for (int64_t p = 0; p < PanelCount(pr.v_depth); ++p)
      PanelProduct(std::min<int64_t>(kPanel, pr.v_depth - p * kPanel), used, scores.data(), kv_stride,
                   values.data() + p * pr.kv_len * kPanel, {}, y + q0 * pr.yl.position + p * kPanel, pr.yl.position, 0,
                   1, 0, rows);
  }
}

// Bias strides from its 4-D shape (broadcast axes get 0), then every (batch, head) on the pool.
ffi::Error Run(Problem& pr, ffi::Buffer<ffi::F32>& bias, ffi::ThreadPool& pool) {
  const auto bd = bias.dimensions();
  if (bd.size() != 4) return ffi::Error::InvalidArgument("kiln_attention: the bias must be 4-D");
  const int64_t full[4] = {pr.batch, pr.q_heads, pr.q_len, pr.kv_len};
  int64_t strides[4], stride = 1;
  for (int axis = 3; axis >= 0; --axis) {
    if (bd[axis] != 1 && bd[axis] != full[axis])
      return ffi::Error::InvalidArgument("kiln_attention: the bias does not broadcast to the scores");
    strides[axis] = bd[axis] == 1 ? 0 : stride;
    stride *= bd[axis];
  }
  pr.bias = bias.typed_data();
  pr.bias_b = strides[0], pr.bias_h = strides[1], pr.bias_q = strides[2], pr.bias_k = strides[3];
  if (pr.kv_len <= 0 || pr.depth <= 0) return ffi::Error::InvalidArgument("kiln_attention: empty keys");
  if (pr.q_len == 0 || pr.v_depth == 0 || pr.batch == 0) return ffi::Error::Success();
  const int64_t work = 2 * pr.batch * pr.q_heads * pr.q_len * pr.kv_len * (pr.depth + pr.v_depth);
  ParallelFor(pool, pr.batch * pr.q_heads, work, [&pr](int64_t item) { AttendHead(pr, item / pr.q_heads, item % pr.q_heads); });
  return ffi::Error::Success();
}

// Each of q, k, v and y is a strided view of its buffer: `*_view` = (offset, batch, head, position)
// element strides, features contiguous; sizes = (batch, q_heads, kv_heads, q_len, kv_len, depth,
// v_depth). Plain [B, S, H*D] or [B, H, S, D] tensors, heads inside a fused QKV projection and
// head-transposed outputs are all such views, so none of them is copied.
ffi::Error Attention(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                     ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y, ffi::ThreadPool pool,
                     ffi::Span<const int64_t> sizes, ffi::Span<const int64_t> q_view, ffi::Span<const int64_t> k_view,
                     ffi::Span<const int64_t> v_view, ffi::Span<const int64_t> y_view, float scale) {
  if (sizes.size() != 7 || q_view.size() != 4 || k_view.size() != 4 || v_view.size() != 4 || y_view.size() != 4)
    return ffi::Error::InvalidArgument("kiln_attention: sizes takes 7 values and each view 4");
  Problem pr{};
  pr.batch = sizes[0], pr.q_heads = sizes[1], pr.kv_heads = sizes[2], pr.q_len = sizes[3], pr.kv_len = sizes[4];
  pr.depth = sizes[5], pr.v_depth = sizes[6];
  if (pr.q_heads <= 0 || pr.kv_heads <= 0 || pr.q_heads % pr.kv_heads)
    return ffi::Error::InvalidArgument("kiln_attention: query heads must be a multiple of key/value heads");
  // the last element each view reaches must lie inside its buffer
  auto fits = [](ffi::Span<const int64_t> view, int64_t b, int64_t h, int64_t s, int64_t d, size_t count) {
    if (view[0] < 0 || view[1] < 0 || view[2] < 0 || view[3] < 0) return false;
    const int64_t last = view[0] + (b - 1) * view[1] + (h - 1) * view[2] + (s - 1) * view[3] + d - 1;
    return b == 0 || h == 0 || s == 0 || d == 0 || last < static_cast<int64_t>(count);
  };
  if (!fits(q_view, pr.batch, pr.q_heads, pr.q_len, pr.depth, q.element_count()) ||
      !fits(k_view, pr.batch, pr.kv_heads, pr.kv_len, pr.depth, k.element_count()) ||
      !fits(v_view, pr.batch, pr.kv_heads, pr.kv_len, pr.v_depth, v.element_count()) ||
      !fits(y_view, pr.batch, pr.q_heads, pr.q_len, pr.v_depth, y->element_count()))
    return ffi::Error::InvalidArgument("kiln_attention: a view reaches outside its buffer");
  pr.scale = scale;
  pr.q = q.typed_data() + q_view[0];
  pr.k = k.typed_data() + k_view[0];
  pr.v = v.typed_data() + v_view[0];
  pr.y = y->typed_data() + y_view[0];
  pr.ql = {q_view[1], q_view[2], q_view[3]};
  pr.kl = {k_view[1], k_view[2], k_view[3]};
  pr.vl = {v_view[1], v_view[2], v_view[3]};
  pr.yl = {y_view[1], y_view[2], y_view[3]};
  return Run(pr, bias, pool);
}

}  // namespace
}  // namespace kiln

XLA_FFI_DEFINE_HANDLER_SYMBOL(KilnAttention, kiln::Attention,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Attr<xla::ffi::Span<const int64_t>>("sizes")
                                  .Attr<xla::ffi::Span<const int64_t>>("q_view")
                                  .Attr<xla::ffi::Span<const int64_t>>("k_view")
                                  .Attr<xla::ffi::Span<const int64_t>>("v_view")
                                  .Attr<xla::ffi::Span<const int64_t>>("y_view")
                                  .Attr<float>("scale"));
