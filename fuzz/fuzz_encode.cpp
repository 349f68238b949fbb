// Arbitrary bytes through two real tokenizers, the golden BLOOM one (no normalizer) and the
// golden GPT-NeoX-20B one (NFC, runs of spaces as added tokens). Invalid UTF-8 must be refused
// with an hs::Error, valid UTF-8 never. For valid text s, decoding what encode made gives back
//   BLOOM: s itself (byte-level BPE over every byte loses nothing), and
//   NeoX:  s with each stretch between its raw-matched added tokens ("<|endoftext|>",
//          "<|unk|>": normalized false, so matched before NFC) in NFC, those tokens as they are.
// The NFC side is computed here on whole stretches with utf8proc_NFC, against the tokenizer's
// piecewise NFC; the UTF-8 check is a second, independent decoder.
#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <string>

#include "fuzz_common.h"
#include "text/tokenizer.h"

using namespace hs;

namespace {

// Unicode Table 3-7 by decoding: no overlong forms, surrogates or values past U+10FFFF.
bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    if (len == 0 || i + len > s.size()) return false;
    char32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr std::array<char32_t, 5> kMin = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// utf8proc_NFC's options, with the length given: the text may hold NUL characters.
std::string nfc(std::string_view s) {
  if (s.empty()) return {};
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                   &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) fuzz::fail(std::string("utf8proc refused valid UTF-8: ") + utf8proc_errmsg(n));
  std::string r(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return r;
}

std::string neox_expected(std::string_view s) {
  static constexpr std::array<std::string_view, 2> kRaw = {"<|endoftext|>", "<|unk|>"};
  std::string out;
  size_t stretch = 0;
  for (size_t i = 0; i < s.size();) {
    std::string_view hit;
    for (std::string_view t : kRaw)
      if (s.substr(i).starts_with(t)) hit = t;
    if (hit.empty()) {
      ++i;
      continue;
    }
    out += nfc(s.substr(stretch, i - stretch));
    out += hit;
    i += hit.size();
    stretch = i;
  }
  return out + nfc(s.substr(stretch));
}

const Tokenizer& golden(const char* name) {
  static const Tokenizer bloom =
      Tokenizer::from_file(HS_TEST_DATA "/golden/tokenizer/tokenizer.json");
  static const Tokenizer neox =
      Tokenizer::from_file(HS_TEST_DATA "/golden/tokenizer_neox/tokenizer.json");
  return std::string_view(name) == "bloom" ? bloom : neox;
}

void check(const char* name, std::string_view s, bool valid, const std::string& expected) {
  const Tokenizer& tok = golden(name);
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(s);
  } catch (const Error& e) {
    if (valid) fuzz::fail(std::string(name) + ": valid UTF-8 refused: " + e.what());
    fuzz::check_one_line(e);
    return;
  }
  if (!valid) fuzz::fail(std::string(name) + ": invalid UTF-8 encoded");
  if (tok.decode(ids) != expected)
    fuzz::fail(std::string(name) + ": decode(encode(s)) != " + "the expected text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const bool valid = valid_utf8(s);
  check("bloom", s, valid, valid ? std::string(s) : "");
  check("neox", s, valid, valid ? neox_expected(s) : "");
  return 0;
}
