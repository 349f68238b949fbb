// tokenizer.json (the input is the file). A tokenizer that loads encodes and decodes a fixed text
// touching its regexes, added-token matching and NFC, and decodes every id it produced.
#include "fuzz_common.h"
#include "text/tokenizer.h"

using namespace hs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path path = fuzz::input_file("tokenizer.json", data, size);
  fuzz::expect_clean([&] {
    const Tokenizer tok = Tokenizer::from_file(path.string());
    static constexpr std::string_view kText =
        "<s>Hello, world! It's 2026:\tcafe\xCC\x81 na\xC3\xAFve \xE2\x80\xA6 "
        "\xE4\xBD\xA0\xE5\xA5\xBD "
        "\xF0\x9F\x98\x80</s>  \n\n end<pad>";
    const auto ids = tok.encode(kText);
    tok.decode(ids);
    tok.decode(ids, true);
    tok.for_each_word(kText, [](std::string_view) {});
  });
  return 0;
}
