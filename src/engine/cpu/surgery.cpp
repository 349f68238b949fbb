#include "engine/cpu/surgery.h"

#include "util/error.h"

namespace hs {

namespace {

std::vector<size_t> sizes_of(TargetSlices& s) {
  std::vector<size_t> out;
  for (auto* b : s.buffers()) out.push_back(b->size());
  return out;
}

}  // namespace

CpuSurgery::CpuSurgery(Model& model, std::vector<HeadRef> targets, AdamWConfig adam, int threads)
    : w_(TrainWeights::from_model(model)),
      source_(w_),
      engine_(source_),
      masters_(gather_slices(w_, targets)),
      grad_(TargetSlices::zeros(w_.config, targets)),
      opt_(adam, sizes_of(masters_)),
      scratch_(size_t(std::max(1, threads)), Gradients::surgical(w_.config, targets)) {}

double CpuSurgery::accumulate(const std::vector<const std::vector<int32_t>*>& batch,
                              double weight) {
  const double loss = batch_loss_and_grad(w_, batch, weight, scratch_);
  auto g = grad_.buffers(), s = scratch_[0].buffers();
  for (size_t k = 0; k < g.size(); ++k)
    for (size_t i = 0; i < g[k]->size(); ++i) (*g[k])[i] += (*s[k])[i];
  return loss;
}

double CpuSurgery::step(double lr, double max_norm) {
  const auto g = grad_.buffers();
  const double norm = clip_grad_norm(g, max_norm);
  opt_.step(masters_.buffers(), g, lr);
  scatter_slices(masters_, w_);
  for (auto* b : g) std::fill(b->begin(), b->end(), 0.0f);
  return norm;
}

void CpuSurgery::set(const TargetSlices& masters, const AdamState& adam) {
  if (masters.buffers().size() != masters_.buffers().size())
    throw Error("surgery", "slices of another plan");
  masters_ = masters;
  if (adam.m.empty()) {  // a fresh optimizer
    opt_ = AdamW(opt_.config(), sizes_of(masters_));
    opt_.state().steps = adam.steps;
  } else {
    opt_.state() = adam;
  }
  scatter_slices(masters_, w_);
}

}  // namespace hs
