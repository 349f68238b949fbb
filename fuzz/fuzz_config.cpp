// config.json of every family (the input is the file). A config that parses must survive being
// written back: from_json(to_json(c)) describes the same model, as a repaired checkpoint's
// config.json (model/checkpoint.h, written_config) is read by the next command.
#include "fuzz_common.h"
#include "model/config.h"
#include "util/files.h"

using namespace hs;

namespace {

bool same(const ModelConfig& a, const ModelConfig& b) {
  return a.family == b.family && a.hidden == b.hidden && a.n_head == b.n_head &&
         a.n_layer == b.n_layer && a.vocab == b.vocab && a.ffn == b.ffn && a.ln_eps == b.ln_eps &&
         a.norm_bias == b.norm_bias && a.linear_bias == b.linear_bias && a.emb_norm == b.emb_norm &&
         a.post_ln == b.post_ln && a.act == b.act && a.alibi_bias_max == b.alibi_bias_max &&
         a.alibi.scale == b.alibi.scale && a.alibi.bias_before_scale == b.alibi.bias_before_scale &&
         a.alibi.bf16_bias == b.alibi.bf16_bias && a.clip_qkv == b.clip_qkv &&
         a.logit_scale == b.logit_scale && a.tied_head == b.tied_head &&
         a.qkv_layout == b.qkv_layout && a.bos_id == b.bos_id && a.eos_id == b.eos_id &&
         a.pad_id == b.pad_id && a.unk_id == b.unk_id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path path = fuzz::input_file("config.json", data, size);
  fuzz::expect_clean([&] {
    const nlohmann::json j = read_json_file(path.string());
    const ModelConfig c = ModelConfig::from_json(j, path.string());
    // As text, the way it goes to disk and comes back.
    const std::string written = c.to_json(j).dump();
    const ModelConfig again =
        ModelConfig::from_json(nlohmann::json::parse(written), "written config.json");
    if (!same(c, again)) fuzz::fail("config.json written back reads as another model: " + written);
  });
  return 0;
}
