// One attention row's softmax, its output and its diagnostic statistics, accumulated over key
// tiles without ever holding the row's probabilities (the flash-attention recurrence, extended
// with the head statistics). Host and device code: the CUDA attention kernel runs it per query
// row, and the CPU tests check it against the plain two-pass definition.
//
// With m the running maximum score and e_j = exp(s_j - m), the state keeps
//   l   = sum_j e_j                         (softmax denominator)
//   a   = sum_j e_j * (s_j - m)             (so entropy = log l - a / l)
//   bos = e_0,  loc = sum_{j >= t-2} e_j    (bos and local mass, divided by l at the end)
// and when the maximum rises to m' every sum is rescaled by exp(m - m'); a also gains
// (m - m') * l, since each s_j - m becomes s_j - m'.
#pragma once

#include <cmath>

#include "util/hd.h"

namespace hs::online {

struct RowState {
  float m = -INFINITY, l = 0, a = 0, bos = 0, loc = 0;
};

// Rescale factor for a new maximum m_new >= st.m, applied to the sums (and by the caller to its
// output accumulator). Returns 0 for the first tile (nothing accumulated yet).
HS_HD float rescale(RowState& st, float m_new) {
  if (st.m == -INFINITY) {
    st.m = m_new;
    return 0.0f;
  }
  const float alpha = expf(st.m - m_new);
  st.a = alpha * (st.a + (st.m - m_new) * st.l);
  st.l *= alpha;
  st.bos *= alpha;
  st.loc *= alpha;
  st.m = m_new;
  return alpha;
}

// Adds one tile's sums, computed against st.m (after rescale): sum e, sum e*(s-m), e of key 0
// when the tile holds it (else 0), and the e of keys within the local window.
HS_HD void add_tile(RowState& st, float sum_e, float sum_es, float e_bos, float sum_loc) {
  st.l += sum_e;
  st.a += sum_es;
  st.bos += e_bos;
  st.loc += sum_loc;
}

struct RowStats {
  float bos, entropy, local;
};

HS_HD RowStats finish(const RowState& st) {
  const float inv = 1.0f / st.l;
  return {st.bos * inv, logf(st.l) - st.a * inv, st.loc * inv};
}

}  // namespace hs::online
