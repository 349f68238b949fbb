// Tokenizer tests. The golden cases come from Hugging Face `tokenizers` itself; the other tests
// pin down behaviour the cases do not reach (pre-tokenizer edge cases, errors, threads).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "test_util.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

std::vector<Case> read_cases(const std::string& dir) {
  std::vector<Case> cases;
  for (const json& c : read_json(dir + "/cases.json"))
    cases.push_back({c.at("text"), c.at("ids").get<std::vector<int32_t>>(), c.at("decoded")});
  return cases;
}

std::string project_tokenizer() {
  return std::string(HS_TEST_DATA) + "/golden/tokenizer/tokenizer.json";
}

// GPT-NeoX-20B's (MPT's): an NFC normalizer and ByteLevel with GPT-2's regex.
std::string neox_tokenizer() {
  return std::string(HS_TEST_DATA) + "/golden/tokenizer_neox/tokenizer.json";
}

// A fresh directory under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / ("hs_tok_" + std::to_string(getpid()) + "_" +
                                         info->test_suite_name() + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }

  std::string write(const std::string& name, const std::string& content) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  std::string write(const std::string& name, const json& j) const { return write(name, j.dump()); }

 private:
  fs::path path_;
};

// Runs `f`, which must throw hs::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no hs::Error thrown (expected one mentioning '" << parts.front() << "')";
  } catch (const hs::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  }
}

// GPT-2's bytes_to_unicode, written out again here so the tests do not lean on the code under
// test: the character (as UTF-8) that byte b is spelled with in a byte-level vocabulary.
std::string byte_char(unsigned char b) {
  std::vector<int> bs;
  for (int c = '!'; c <= '~'; ++c) bs.push_back(c);
  for (int c = 0xA1; c <= 0xAC; ++c) bs.push_back(c);
  for (int c = 0xAE; c <= 0xFF; ++c) bs.push_back(c);
  int cp = -1, n = 0;
  for (int c = 0; c < 256; ++c) {
    const bool printable = std::find(bs.begin(), bs.end(), c) != bs.end();
    if (c == b) cp = printable ? c : 256 + n;
    if (!printable) ++n;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Merges as raw text; the synthetic tokenizer spells them in the byte alphabet.
using Merges = std::vector<std::pair<std::string, std::string>>;

std::string byte_level_text(const std::string& s) {
  std::string out;
  for (const char c : s) out += byte_char(static_cast<unsigned char>(c));
  return out;
}

// A byte-level tokenizer.json: the 256 byte tokens, `merges` ranked in order (their results join
// the vocabulary), `added` tokens, and `words` as whole tokens with ignore_merges set, so that a
// piece equal to one of them becomes that one token.
json synthetic_tokenizer(const json& pre_tokenizer, const Merges& merges,
                         const json& added = json::array(),
                         const std::vector<std::string>& words = {}) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(static_cast<unsigned char>(b))] = b;
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    merge_list.push_back({byte_level_text(a), byte_level_text(b)});
    if (!vocab.contains(byte_level_text(a + b))) vocab[byte_level_text(a + b)] = vocab.size();
  }
  for (const std::string& w : words)
    if (!vocab.contains(byte_level_text(w))) vocab[byte_level_text(w)] = vocab.size();
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"ignore_merges", !words.empty()},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

json split(const std::string& kind, const std::string& pattern) {
  return {{"type", "Split"},
          {"pattern", {{kind, pattern}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

json byte_level(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

json sequence(const json& first, const json& second) {
  return {{"type", "Sequence"}, {"pretokenizers", {first, second}}};
}

// BLOOM's pre-tokenizer, taken from the project's tokenizer.json so the regex text is exact.
json bloom_pre_tokenizer() { return read_json(project_tokenizer()).at("pre_tokenizer"); }

// The pieces the pre-tokenizer cuts `text` into, seen through a synthetic tokenizer that has each
// expected piece as one token, and every run of consecutive expected pieces too, so that a piece
// spanning several expected ones shows as well (any other piece comes out byte by byte).
std::vector<std::string> pieces(const json& pre_tokenizer, const std::string& text,
                                const std::vector<std::string>& expected, const TempDir& tmp) {
  std::vector<std::string> runs;
  for (size_t i = 0; i < expected.size(); ++i) {
    std::string run;
    for (size_t k = i; k < expected.size(); ++k) runs.push_back(run += expected[k]);
  }
  const auto tok = hs::Tokenizer::from_file(
      tmp.write("synthetic.json", synthetic_tokenizer(pre_tokenizer, {}, json::array(), runs)));
  std::vector<std::string> out;
  for (const int32_t id : tok.encode(text)) out.push_back(tok.decode(std::vector<int32_t>{id}));
  return out;
}

#define EXPECT_PIECES(pre_tokenizer, text, ...)                                   \
  do {                                                                            \
    const std::vector<std::string> expected_pieces{__VA_ARGS__};                  \
    EXPECT_EQ(pieces(pre_tokenizer, text, expected_pieces, tmp), expected_pieces) \
        << "text: " << text;                                                      \
  } while (0)

}  // namespace

// ---------------------------------------------------------------------------------------------
// Golden data

TEST(TokenizerGolden, EveryCaseMatchesHuggingFace) {
  const auto dirs = hs::test::golden_tokenizer_dirs();
  ASSERT_FALSE(dirs.empty());
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    const auto tok = hs::Tokenizer::from_file(dir + "/tokenizer.json");
    const auto cases = read_cases(dir);
    ASSERT_FALSE(cases.empty());
    for (const Case& c : cases) {
      EXPECT_EQ(tok.encode(c.text), c.ids) << "text: " << c.text;
      EXPECT_EQ(tok.decode(c.ids), c.decoded) << "text: " << c.text;
    }
  }
}

// HF reads merges as "a b" strings (older files, the real BLOOM one) or ["a", "b"] pairs; the
// file is rewritten in the other form and must give the same ids.
TEST(TokenizerGolden, BothMergeFormsGiveTheSameIds) {
  TempDir tmp;
  for (const std::string& dir : hs::test::golden_tokenizer_dirs()) {
    SCOPED_TRACE(dir);
    json j = read_json(dir + "/tokenizer.json");
    json& merges = j["model"]["merges"];
    ASSERT_FALSE(merges.empty());
    const bool pairs = merges[0].is_array();
    for (json& m : merges) {
      if (pairs) {
        m = m[0].get<std::string>() + " " + m[1].get<std::string>();
      } else {
        const std::string s = m;
        m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
      }
    }
    const auto tok = hs::Tokenizer::from_file(tmp.write("other_form.json", j));
    for (const Case& c : read_cases(dir))
      EXPECT_EQ(tok.encode(c.text), c.ids) << "text: " << c.text;
  }
}

TEST(TokenizerGolden, AddedTokensAndVocabularySize) {
  for (const std::string& dir : hs::test::golden_tokenizer_dirs()) {
    SCOPED_TRACE(dir);
    const json j = read_json(dir + "/tokenizer.json");
    const auto tok = hs::Tokenizer::from_file(dir + "/tokenizer.json");
    std::set<std::string> tokens;
    for (const auto& [token, id] : j["model"]["vocab"].items()) tokens.insert(token);
    for (const json& t : j["added_tokens"]) {
      tokens.insert(t["content"].get<std::string>());
      EXPECT_EQ(tok.token_to_id(t["content"].get<std::string>()), t["id"].get<int32_t>());
      // Kept by default, dropped with skip_special when special.
      const std::vector<int32_t> ids{t["id"].get<int32_t>()};
      EXPECT_EQ(tok.decode(ids), t["content"].get<std::string>());
      EXPECT_EQ(tok.decode(ids, true).empty(), t["special"].get<bool>());
    }
    EXPECT_EQ(tok.vocab_size(), tokens.size());
    EXPECT_EQ(tok.token_to_id("no such token, surely"), std::nullopt);
  }
}

TEST(Tokenizer, SpecialTokensInsideText) {
  const auto tok = hs::Tokenizer::from_file(project_tokenizer());
  const auto s = tok.token_to_id("<s>"), e = tok.token_to_id("</s>");
  ASSERT_TRUE(s && e);
  const auto ids = tok.encode("<s>hi</s><s>");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), *s);
  EXPECT_EQ(ids[ids.size() - 2], *e);
  EXPECT_EQ(ids.back(), *s);
  EXPECT_EQ(tok.decode(ids), "<s>hi</s><s>");
  EXPECT_EQ(tok.decode(ids, true), "hi");
  // Only whole tokens match: this is ordinary text.
  const auto plain = tok.encode("<s <\\s> s>");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), *s), 0);
  EXPECT_EQ(tok.decode(plain), "<s <\\s> s>");
}

// The texts are NFC already, so NeoX's normalizer leaves them as they are.
TEST(Tokenizer, RoundTrip) {
  const std::vector<std::string> texts = {
      "",
      "Mixed scripts: English, français, Deutsch, русский, ελληνικά, 日本語, 한국어, עברית, "
      "العربية, हिन्दी, ไทย.",
      "Punctuation runs!!! ??? ... ,,, ;;; :-) (^_^) ¿¡ …… 。。 ，， 、、 ।। ۔۔ ،،",
      "f(g(h(x))) [a[b[c]]] {k: v} a|b||c ||| (|) [|]",
      std::string(300, ' ') + "x" + std::string(17, '\t') + "y" + std::string(40, '\n'),
      " \t \r\n \u00A0\u2003\u3000\u0085\u2028 mixed white space \f\v",
      "emoji 👍🏽 flags 🇫🇷🇩🇪 family 👨‍👩‍👧‍👦 keycap 1️⃣",
      "<s>special</s> and <pad> and <unk> and </s",
      "int main() { return a->b[0] | ~c & 0xFF; } // done",
      std::string("\0nul\0inside", 11),
  };
  for (const std::string& file : {project_tokenizer(), neox_tokenizer()}) {
    SCOPED_TRACE(file);
    const auto tok = hs::Tokenizer::from_file(file);
    for (const std::string& t : texts) EXPECT_EQ(tok.decode(tok.encode(t)), t) << "text: " << t;
  }
}

// A token holding part of a character decodes to U+FFFD, as HF's from_utf8_lossy does.
TEST(Tokenizer, PartialCharactersDecodeToReplacementCharacter) {
  const auto tok = hs::Tokenizer::from_file(project_tokenizer());
  const std::string zhong = "\xE4\xB8\xAD";  // 中
  std::vector<int32_t> bytes;
  for (const char c : zhong) {
    const auto id = tok.token_to_id(byte_char(static_cast<unsigned char>(c)));
    ASSERT_TRUE(id);
    bytes.push_back(*id);
  }
  EXPECT_EQ(tok.decode(bytes), zhong);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{bytes[0], bytes[1]}), "\uFFFD");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{bytes[1], bytes[2], bytes[0]}), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{bytes[0], bytes[1], bytes[0], bytes[1], bytes[2]}),
            "\uFFFD" + zhong);
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer: where the text is cut

TEST(TokenizerPieces, BloomRegexFollowsOniguruma) {
  TempDir tmp;
  const json bloom = bloom_pre_tokenizer();
  // The nested class is a union: '(', '|' and ')' split, '[' and ']' do not.
  EXPECT_PIECES(bloom, "f(x)|[y]", "f", "(", "x", ")|", "[y]");
  // \s is Unicode White_Space: NEL, NBSP and ideographic space split; the zero-width space and
  // the Mongolian vowel separator (which PCRE2's \s takes) do not.
  EXPECT_PIECES(bloom, "a\u0085b\u00A0c\u3000d\u200Be\u180Ef", "a", "\u0085", "b", "\u00A0", "c",
                "\u3000", "d\u200Be\u180Ef");
  EXPECT_PIECES(bloom, " hello  world\n", " hello", " ", " world", "\n");
  // A gap between two matches is one piece, whatever it holds.
  EXPECT_PIECES(bloom, "Wait… what?!", "Wait", "…", " what", "?!");
  EXPECT_PIECES(bloom, "a।b،c۔d。e，f、g", "a", "।", "b", "،", "c", "۔", "d", "。", "e", "，", "f",
                "、", "g");
}

TEST(TokenizerPieces, Gpt2RegexOfByteLevel) {
  TempDir tmp;
  const json gpt2 = byte_level(false, true);
  EXPECT_PIECES(gpt2, "don't stop", "don", "'t", " stop");
  EXPECT_PIECES(gpt2, "a  b", "a", " ", " b");
  EXPECT_PIECES(gpt2, "abc123!!x", "abc", "123", "!!", "x");
  // NEL is white space to Oniguruma, so each one is its own \s+(?!\S) piece.
  EXPECT_PIECES(gpt2, "x\u0085\u0085y", "x", "\u0085", "\u0085", "y");
  // U+180E is not white space here (PCRE2's \s would take it), nor a letter or a number.
  EXPECT_PIECES(gpt2, "x\u180E\u180Ey", "x", "\u180E\u180E", "y");
}

TEST(TokenizerPieces, AddPrefixSpaceAppliesToEachPiece) {
  TempDir tmp;
  EXPECT_PIECES(byte_level(true, true), "hello world", " hello", " world");
  EXPECT_PIECES(byte_level(true, true), " hello", " hello");
  EXPECT_PIECES(sequence(split("Regex", ","), byte_level(true, false)), "a,b", " a", " ,", " b");
}

TEST(TokenizerPieces, SplitPatterns) {
  TempDir tmp;
  const json no_regex = byte_level(false, false);
  // A String pattern is literal text.
  EXPECT_PIECES(sequence(split("String", "a+"), no_regex), "aa+a+", "a", "a+", "a+");
  EXPECT_PIECES(sequence(split("Regex", "a+"), no_regex), "aa+a+", "aa", "+", "a", "+");
  // Ruby's {,n} is {0,n}.
  EXPECT_PIECES(sequence(split("Regex", "a{,2}"), no_regex), "aaaaab", "aa", "aa", "a", "b");
  EXPECT_PIECES(sequence(split("Regex", "\\u00e9|\\x{4e2d}|\\x41"), no_regex), "aé中Ab", "a", "é",
                "中", "A", "b");
  EXPECT_PIECES(sequence(split("Regex", "[[a-c][x]]+"), no_regex), "abxyc", "abx", "y", "c");
  EXPECT_PIECES(sequence(split("Regex", "(?<w>a)(?=b)"), no_regex), "abac", "a", "bac");
  // Empty matches only cut the text (where the previous match did not just end).
  EXPECT_PIECES(sequence(split("Regex", "(?=b)"), no_regex), "abab", "a", "ba", "b");
  EXPECT_PIECES(sequence(split("Regex", "x|(?=y)"), no_regex), "xay", "x", "a", "y");
  EXPECT_PIECES(sequence(split("Regex", "^a|b$"), no_regex), "ab\nab", "a", "b", "\n", "a", "b");
}

// ---------------------------------------------------------------------------------------------
// BPE and added tokens on small hand-made vocabularies

namespace {

// The text of each id of `text`'s encoding.
std::vector<std::string> tokens(const hs::Tokenizer& tok, const std::string& text) {
  std::vector<std::string> out;
  for (const int32_t id : tok.encode(text)) out.push_back(tok.decode(std::vector<int32_t>{id}));
  return out;
}

}  // namespace

TEST(TokenizerBpe, LowestRankFirstThenLeftmost) {
  TempDir tmp;
  const json whole = byte_level(false, false);
  using V = std::vector<std::string>;
  auto tok = [&](const Merges& m) {
    return hs::Tokenizer::from_file(tmp.write("bpe.json", synthetic_tokenizer(whole, m)));
  };
  EXPECT_EQ(tokens(tok({{"a", "a"}}), "aaaaa"), (V{"aa", "aa", "a"}));
  EXPECT_EQ(tokens(tok({{"b", "c"}, {"a", "b"}}), "abc"), (V{"a", "bc"}));
  EXPECT_EQ(tokens(tok({{"a", "b"}, {"b", "c"}}), "abc"), (V{"ab", "c"}));
  EXPECT_EQ(tokens(tok({{"b", "c"}, {"a", "b"}, {"a", "bc"}}), "abcabc"), (V{"abc", "abc"}));
  EXPECT_EQ(tokens(tok({{"a", "b"}, {"c", "d"}, {"ab", "cd"}, {"b", "c"}}), "abcd"), (V{"abcd"}));
  // A repeated pair keeps its last rank, as HF's merge map does.
  EXPECT_EQ(tokens(tok({{"a", "b"}, {"b", "c"}, {"a", "b"}}), "abc"), (V{"a", "bc"}));
  // Multi-byte characters start as one symbol per byte.
  EXPECT_EQ(tokens(tok({{"\xC3", "\xA9"}}), "\u00e9\u00e9"), (V{"\u00e9", "\u00e9"}));
  EXPECT_EQ(tokens(tok({}), "\u00e9").size(), 2u);
}

TEST(TokenizerBpe, AddedTokensLeftmostLongestPlainBeforeNormalized) {
  TempDir tmp;
  auto added = [](int id, const std::string& content, bool normalized) {
    return json{
        {"id", id},        {"content", content},       {"single_word", false}, {"lstrip", false},
        {"rstrip", false}, {"normalized", normalized}, {"special", id == 1000}};
  };
  const json list = {added(1000, "<x>", false), added(1001, "<x>y", false),
                     added(1002, "x>y!", false), added(1003, "a<", true)};
  const auto tok = hs::Tokenizer::from_file(
      tmp.write("added.json", synthetic_tokenizer(byte_level(false, false), {}, list)));
  using V = std::vector<std::string>;
  const int32_t a = *tok.token_to_id("a"), b = *tok.token_to_id("b");
  EXPECT_EQ(tok.encode("<x>y"), (std::vector<int32_t>{1001}));
  EXPECT_EQ(tokens(tok, "<x>z"), (V{"<x>", "z"}));
  EXPECT_EQ(tok.encode("b<x>y!"), (std::vector<int32_t>{b, 1001, *tok.token_to_id("!")}));
  // Tokens matched in the raw text go first; "a<" only matches in what they leave.
  EXPECT_EQ(tok.encode("a<x>y!"), (std::vector<int32_t>{a, 1001, *tok.token_to_id("!")}));
  EXPECT_EQ(tok.encode("a<b"), (std::vector<int32_t>{1003, b}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1000, 1001, 1003}), "<x><x>ya<");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1000, 1001, 1003}, true), "<x>ya<");
  EXPECT_EQ(tok.vocab_size(), 256u + 4u);
  EXPECT_EQ(tok.token_to_id("x>y!"), 1002);
  expect_error([&] { (void)tok.decode(std::vector<int32_t>{999}); }, {"999"});
}

// Bytes missing from the vocabulary become unk_token (one per byte, or one per run with
// fuse_unk), and are dropped when there is no unk_token, as HF's BPE does.
TEST(TokenizerBpe, BytesMissingFromTheVocabulary) {
  TempDir tmp;
  json j = synthetic_tokenizer(byte_level(false, false), {});
  json& vocab = j["model"]["vocab"];
  vocab.erase(byte_char(0xC3));
  vocab.erase(byte_char(0xA9));
  const int32_t a = vocab[byte_char('a')], unk = 5000;
  using Ids = std::vector<int32_t>;
  EXPECT_EQ(hs::Tokenizer::from_file(tmp.write("drop.json", j)).encode("a\u00e9a"), (Ids{a, a}));
  vocab["<unk>"] = unk;
  j["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(hs::Tokenizer::from_file(tmp.write("unk.json", j)).encode("a\u00e9a"),
            (Ids{a, unk, unk, a}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(hs::Tokenizer::from_file(tmp.write("fuse.json", j)).encode("a\u00e9a\u00e9"),
            (Ids{a, unk, a, unk}));
}

// ---------------------------------------------------------------------------------------------
// The NFC normalizer (GPT-NeoX-20B's tokenizer)

TEST(TokenizerNfc, DecomposedTextEncodesAsPrecomposed) {
  const auto tok = hs::Tokenizer::from_file(neox_tokenizer());
  // (decomposed or otherwise non-NFC, NFC) pairs; the NFC side is written out by hand.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"e\u0301", "\u00E9"},
      {"Cafe\u0301 cre\u0300me", "Caf\u00E9 cr\u00E8me"},
      {"\u00E4\u0304", "\u01DF"},              // a two-byte starter takes a mark
      {"\u03B1\u0301\u03B2", "\u03AC\u03B2"},  // Greek: starter and mark both past U+0300
      {"q\u0307\u0323", "q\u0323\u0307"},      // marks reordered by combining class
      {"\u1100\u1161\u11A8", "\uAC01"},        // Hangul jamo compose to a syllable
      {"\u212B", "\u00C5"},                    // a singleton decomposition
      {"\u0958", "\u0915\u093C"},              // a composition exclusion
      {"\u0301e", "\u0301e"},                  // a mark with no starter stays
      {std::string("a\0e\u0301", 5), std::string("a\0\u00E9", 4)},
  };
  for (const auto& [text, nfc] : pairs) {
    EXPECT_EQ(tok.encode(text), tok.encode(nfc)) << "text: " << text;
    EXPECT_EQ(tok.decode(tok.encode(text)), nfc) << "text: " << text;
  }
  // NFC, not NFKC: the ligature stays.
  EXPECT_EQ(tok.decode(tok.encode("\uFB01ne")), "\uFB01ne");
  // BLOOM has no normalizer: the decomposed form is encoded as written.
  const auto bloom = hs::Tokenizer::from_file(project_tokenizer());
  EXPECT_NE(bloom.encode("Cafe\u0301"), bloom.encode("Caf\u00E9"));
  EXPECT_EQ(bloom.decode(bloom.encode("Cafe\u0301")), "Cafe\u0301");
}

// What a vocabulary is trained on is the normalized text too.
TEST(TokenizerNfc, WordsAreNormalized) {
  const auto tok = hs::Tokenizer::from_file(neox_tokenizer());
  std::vector<std::string> words;
  tok.for_each_word("Cafe\u0301 au lait", [&](std::string_view w) { words.emplace_back(w); });
  EXPECT_EQ(words, (std::vector<std::string>{"Caf\u00E9", " au", " lait"}));
}

// HF matches normalized: false tokens in the raw text, then normalizes what is left, then matches
// normalized: true tokens (their content normalized too) in that.
TEST(TokenizerNfc, AddedTokensBeforeAndAfterNormalization) {
  TempDir tmp;
  auto added = [](int id, const std::string& content, bool normalized) {
    return json{{"id", id},        {"content", content}, {"single_word", false},
                {"lstrip", false}, {"rstrip", false},    {"normalized", normalized},
                {"special", false}};
  };
  const json list = {added(1000, "e\u0301!", false), added(1001, "\u00E9?", true),
                     added(1002, "o\u0301?", true)};
  json j = synthetic_tokenizer(byte_level(false, false), {}, list);
  using Ids = std::vector<int32_t>;
  for (const json& normalizer :
       {json{{"type", "NFC"}},
        json{{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "NFC"}}}}}}) {
    SCOPED_TRACE(normalizer.dump());
    j["normalizer"] = normalizer;
    const auto tok = hs::Tokenizer::from_file(tmp.write("nfc.json", j));
    // Matched in the raw text, before NFC would have changed it.
    EXPECT_EQ(tok.encode("xe\u0301!"), (Ids{'x', 1000}));
    EXPECT_EQ(tok.encode("\u00E9!"), (Ids{0xC3, 0xA9, '!'}));
    // Matched after NFC, whichever form the text has.
    EXPECT_EQ(tok.encode("e\u0301?"), (Ids{1001}));
    EXPECT_EQ(tok.encode("\u00E9?x"), (Ids{1001, 'x'}));
    // The content is normalized as well: written decomposed, it matches the composed text.
    EXPECT_EQ(tok.encode("\u00F3?"), (Ids{1002}));
    EXPECT_EQ(tok.encode("o\u0301?"), (Ids{1002}));
    // Decoded from the content as written.
    EXPECT_EQ(tok.decode(Ids{1000, 1002}), "e\u0301!o\u0301?");
    EXPECT_EQ(tok.token_to_id("o\u0301?"), 1002);
  }
  // Without a normalizer, normalized: true tokens match the text as written.
  j["normalizer"] = nullptr;
  const auto plain = hs::Tokenizer::from_file(tmp.write("plain.json", j));
  EXPECT_EQ(plain.encode("o\u0301?"), (Ids{1002}));
  EXPECT_EQ(plain.encode("\u00F3?"), (Ids{0xC3, 0xB3, '?'}));
}

// ---------------------------------------------------------------------------------------------
// A GPT-2-style tokenizer.json (Falcon-RW's): no normalizer, ByteLevel whose use_regex is absent
// (true: GPT-2's regex), merges as "a b" strings, continuing_subword_prefix and
// end_of_word_suffix "", and <|endoftext|> with normalized: true.

TEST(TokenizerGpt2, HandWorkedEncoding) {
  TempDir tmp;
  const json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}};
  // Ranks 0-4; the merged tokens get ids 256-260 in that order ("Ġ" is the space's character).
  const Merges merges = {{"h", "e"}, {" ", "t"}, {" t", "he"}, {"l", "l"}, {"'", "s"}};
  const json eot = {
      {"id", 300},       {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
      {"rstrip", false}, {"normalized", true},         {"special", true}};
  json j = synthetic_tokenizer(pre, merges, json::array({eot}));
  j["decoder"] = pre;
  j["post_processor"] = pre;
  json& model = j["model"];
  model.erase("ignore_merges");
  model["continuing_subword_prefix"] = "";
  model["end_of_word_suffix"] = "";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  for (json& m : model["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  ASSERT_EQ(model["merges"][1], "\u0120 t");
  const auto tok = hs::Tokenizer::from_file(tmp.write("gpt2.json", j));

  // Pieces: "the" " cat" "'s" " hello" " " " there", then the added token.
  //   the    -> t he                (h e, rank 0)
  //   " cat" -> Ġ c a t             (no merge applies)
  //   's     -> 's                  (rank 4)
  //   " hello" -> Ġ he ll o         (rank 0, then rank 3)
  //   " "    -> Ġ                   (the first of two spaces: \s+(?!\S))
  //   " there" -> Ġthe r e          (h e, then Ġ t, then Ġt he)
  const std::string text = "the cat's hello  there<|endoftext|>";
  const std::vector<int32_t> ids = {'t', 256, ' ', 'c', 'a', 't', 260, ' ',
                                    256, 259, 'o', ' ', 258, 'r', 'e', 300};
  EXPECT_EQ(tok.encode(text), ids);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.decode(ids, true), "the cat's hello  there");
  // Each byte is its own id in this vocabulary; '\n' is spelled "Ċ" (U+010A).
  EXPECT_EQ(tok.token_to_id("\u010A"), '\n');
  EXPECT_EQ(tok.encode("a\n\n b"), (std::vector<int32_t>{'a', '\n', '\n', ' ', 'b'}));
  EXPECT_EQ(tok.vocab_size(), 256u + 5u + 1u);
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(TokenizerErrors, BadFiles) {
  TempDir tmp;
  const std::string missing =
      (fs::temp_directory_path() / "hs_no_such_dir/tokenizer.json").string();
  expect_error([&] { hs::Tokenizer::from_file(missing); }, {missing});

  const std::string bad_json = tmp.write("bad.json", std::string("{\"model\": [1, 2"));
  expect_error([&] { hs::Tokenizer::from_file(bad_json); }, {bad_json, "JSON"});

  const json good = read_json(project_tokenizer());
  auto broken = [&](const std::function<void(json&)>& edit, const std::vector<std::string>& parts) {
    json j = good;
    edit(j);
    const std::string p = tmp.write("broken.json", j);
    std::vector<std::string> all{p};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_error([&] { hs::Tokenizer::from_file(p); }, all);
  };
  broken([](json& j) { j["model"]["type"] = "WordPiece"; }, {"WordPiece"});
  broken([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, {"Whitespace"});
  broken([](json& j) { j["pre_tokenizer"] = nullptr; }, {"pre_tokenizer"});
  broken([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
         {"Removed"});
  broken([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }, {"invert"});
  broken(
      [](json& j) { j["pre_tokenizer"] = sequence(byte_level(false, false), split("Regex", "a")); },
      {"ByteLevel"});
  broken([](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, {"normalizer", "Lowercase"});
  broken(
      [](json& j) {
        j["normalizer"] = {{"type", "Sequence"},
                           {"normalizers", {{{"type", "NFC"}}, {{"type", "NFKC"}}}}};
      },
      {"normalizer", "NFKC"});
  broken([](json& j) { j["decoder"] = {{"type", "Metaspace"}}; }, {"Metaspace"});
  broken([](json& j) { j["model"].erase("vocab"); }, {"vocab"});
  broken([](json& j) { j["model"].erase("merges"); }, {"merges"});
  broken([](json& j) { j["model"]["merges"].push_back({"Ġ", "not-a-token"}); }, {"not-a-token"});
  broken([](json& j) { j["model"]["merges"].push_back("a b c"); }, {"a b c"});
  // A line break quoted from the file stays out of the one-line message (found by fuzz_tokenizer).
  broken(
      [](json& j) {
        j["model"]["merges"].push_back({"\xC4\xA0", "line\nbreak"});
      },
      {"merge '\xC4\xA0 line?break'"});
  broken([](json& j) { j["model"]["byte_fallback"] = true; }, {"byte_fallback"});
  broken([](json& j) { j["added_tokens"][0]["lstrip"] = true; }, {"lstrip"});
  // A float id was read as an integer, undefined beyond int64 (found by fuzz_tokenizer).
  broken([](json& j) { j["added_tokens"][0]["id"] = 5.02762e24; }, {"has a bad id"});
  broken([](json& j) { j["added_tokens"][0]["id"] = 1.5; }, {"has a bad id"});
  // The added token's id must agree with the vocab's id for the same text.
  broken([](json& j) { j["added_tokens"][0]["id"] = 5; },
         {good["added_tokens"][0]["content"].get<std::string>()});
}

TEST(TokenizerErrors, UntranslatableRegex) {
  TempDir tmp;
  for (const std::string pattern :
       {"\\w+", "[^a[^b]]", "[[:alpha:]]", "(?i)a", "[a&&b]", "\\h", "\\bx", "a(", "[a"}) {
    SCOPED_TRACE(pattern);
    const std::string p = tmp.write(
        "regex.json",
        synthetic_tokenizer(sequence(split("Regex", pattern), byte_level(false, false)), {}));
    expect_error([&] { hs::Tokenizer::from_file(p); }, {p, "regex"});
  }
}

// Checked before the normalizer runs, with or without one.
TEST(TokenizerErrors, InvalidUtf8Input) {
  const std::vector<std::pair<std::string, size_t>> bad = {
      {"abc\xFF", 3},
      {"\x80", 0},
      {"ok \xC0\xAF", 3},           // overlong '/'
      {"12345678\xED\xA0\x80", 8},  // surrogate
      {"\xF4\x90\x80\x80", 0},      // past U+10FFFF
      {"\xE4\xB8\xAD\xE4\xB8", 3},  // cut short
      {"\xE4\xB8\xAD\xE4 x", 3},
      {"e\xCC\x81\xCC", 3},  // a combining acute, then a cut-short mark
  };
  for (const std::string& file : {project_tokenizer(), neox_tokenizer()}) {
    SCOPED_TRACE(file);
    const auto tok = hs::Tokenizer::from_file(file);
    for (const auto& [text, at] : bad) {
      const std::string msg = "invalid UTF-8 at byte " + std::to_string(at);
      expect_error([&] { (void)tok.encode(text); }, {msg});
      expect_error([&] { tok.for_each_word(text, [](std::string_view) {}); }, {msg});
    }
  }
}

TEST(TokenizerErrors, UnknownIdInDecode) {
  const auto tok = hs::Tokenizer::from_file(project_tokenizer());
  for (const int32_t id : {-1, static_cast<int32_t>(tok.vocab_size()), 1 << 30})
    expect_error([&] { (void)tok.decode(std::vector<int32_t>{0, id}); }, {std::to_string(id)});
}

// ---------------------------------------------------------------------------------------------
// The word cache

TEST(TokenizerCache, ThreadsAgree) {
  const auto tok = hs::Tokenizer::from_file(project_tokenizer());
  const auto cases = read_cases(std::string(HS_TEST_DATA) + "/golden/tokenizer");
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round)
        for (const Case& c : cases) failures[t] += tok.encode(c.text) != c.ids;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

// More distinct words than the cache holds: evicted and re-filled entries must stay right.
TEST(TokenizerCache, ManyDistinctWords) {
  const auto tok = hs::Tokenizer::from_file(project_tokenizer());
  std::mt19937 rng(7);
  const std::vector<std::string> syllables = {"ka", "lo", "mi", "ne", "zu", "é", "ß", "ст",
                                              "по", "का", "语", "の", "ع",  "ψ", "x", "q"};
  std::string text;
  std::vector<std::string> words;
  for (int i = 0; i < 100000; ++i) {
    std::string w = " ";
    for (int k = 2 + static_cast<int>(rng() % 5); k > 0; --k)
      w += syllables[rng() % syllables.size()];
    if (i < 50) words.push_back(w);
    text += w;
  }
  const auto first = tok.encode(text), second = tok.encode(text);
  EXPECT_EQ(first, second);
  EXPECT_EQ(tok.decode(first), text);
  // Each word alone gives the ids it got inside the text (it is one piece either way).
  std::vector<int32_t> joined;
  for (const std::string& w : words) {
    const auto ids = tok.encode(w);
    joined.insert(joined.end(), ids.begin(), ids.end());
  }
  EXPECT_TRUE(std::equal(joined.begin(), joined.end(), first.begin()));
  for (const Case& c : read_cases(std::string(HS_TEST_DATA) + "/golden/tokenizer"))
    EXPECT_EQ(tok.encode(c.text), c.ids) << "text: " << c.text;
}
