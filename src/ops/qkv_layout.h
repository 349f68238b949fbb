// Which rows of a fused qkv projection belong to which head: the one place this is written.
//
// Inside headsurgeon every family uses the per-head layout of BLOOM and Falcon: part p (0 = q,
// 1 = k, 2 = v) of head h is rows [(3h + p)·hd, (3h + p + 1)·hd) of the [3d, d] weight, of its
// bias, and the same columns of the projection's output. A family that stores another layout
// (MPT: [Q | K | V], part p of head h at rows p·d + h·hd) has those rows permuted when its
// checkpoint is read and permuted back when one is written (a lossless reordering), so the
// attention on both devices, the surgery slices and the training backward see one layout only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "util/hd.h"

namespace hs {

// How a checkpoint stores the rows of its fused qkv projection.
enum class QkvLayout : uint8_t {
  per_head,  // [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] (BLOOM, Falcon): the internal layout
  blocked,   // [q_0 q_1 ... | k_0 k_1 ... | v_0 v_1 ...] (MPT)
};

// First row (internal layout) of part p of head h.
HS_HD constexpr int64_t qkv_row(int64_t h, int64_t p, int64_t hd) { return (3 * h + p) * hd; }

// The row of a checkpoint stored in `layout` that holds internal row r (H heads of hd rows).
HS_HD constexpr int64_t qkv_file_row(QkvLayout layout, int64_t r, int64_t H, int64_t hd) {
  if (layout == QkvLayout::per_head) return r;
  const int64_t h = r / (3 * hd), p = (r / hd) % 3, i = r % hd;
  return p * H * hd + h * hd + i;
}

// Copies internal rows [first, first + n) of a fused qkv tensor (row_bytes per row; a bias has
// one element per row) out of its checkpoint form `file` into `out`, or the reverse when
// to_file (out is then the checkpoint form, rows addressed by file row). Runs of rows that stay
// contiguous in both layouts are copied at once.
inline void qkv_copy_rows(QkvLayout layout, bool to_file, const std::byte* src, std::byte* dst,
                          int64_t first, int64_t n, size_t row_bytes, int64_t H, int64_t hd) {
  if (layout == QkvLayout::per_head) {
    const size_t at = size_t(first) * row_bytes;
    std::memcpy(dst + (to_file ? at : 0), src + (to_file ? 0 : at), size_t(n) * row_bytes);
    return;
  }
  for (int64_t r = first; r < first + n;) {
    const int64_t run = hd - r % hd < first + n - r ? hd - r % hd : first + n - r;
    const int64_t f = qkv_file_row(layout, r, H, hd);
    if (to_file)
      std::memcpy(dst + f * row_bytes, src + (r - first) * row_bytes, size_t(run) * row_bytes);
    else
      std::memcpy(dst + (r - first) * row_bytes, src + f * row_bytes, size_t(run) * row_bytes);
    r += run;
  }
}

}  // namespace hs
