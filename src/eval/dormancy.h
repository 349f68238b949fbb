// MLP dormancy (docs/numerics.md §1): neuron i of a layer is dormant when
// ||W_up[i,:]|| * ||W_down[:,i]|| < threshold (dense_h_to_4h row i, dense_4h_to_h column i).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/cpu/weights.h"

namespace hs {

struct LayerDormancy {
  int64_t neurons = 0, dormant = 0;
};

std::vector<LayerDormancy> mlp_dormancy(WeightSource& w, double threshold = 0.01);

}  // namespace hs
