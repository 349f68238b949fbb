// Corpora (issue 15): text files, JSON lines and gzip give one token stream; --max-tokens; the
// exact error of every bad input; threads; the token cache.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "scratch_test.h"
#include "test_util.h"
#include "text/corpus.h"
#include "text/corpus_reader.h"
#include "text/token_cache.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kTokenizer = std::string(HS_TEST_DATA) + "/golden/tokenizer/tokenizer.json";
constexpr int64_t kEos = 2;

// Documents with what a corpus holds: several lines, quotes and backslashes (escaped in JSON),
// several scripts, an added token written out, an empty document and a blank one.
const std::vector<std::string> kDocs = {
    "The river carried the boat past the mill.\nIt did not stop.",
    "He said \"no\" \\ twice, then left.",
    "",
    "Größe naïve 東京 — ok? 🙂",
    "def f(x):\n    return x  # </s> stays text\n",
    "   \n",
    "last one",
};

// Gzip of the bytes, in `members` concatenated gzip members (as pigz and bgzip write).
std::string gzip(const std::string& bytes, int members = 1) {
  std::string out;
  const size_t part = (bytes.size() + members - 1) / members;
  for (int m = 0; m < members; ++m) {
    const std::string piece = bytes.substr(std::min(bytes.size(), m * part), part);
    z_stream zs{};
    EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::string buf(deflateBound(&zs, uLong(piece.size())), '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(piece.data()));
    zs.avail_in = uInt(piece.size());
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = uInt(buf.size());
    EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    buf.resize(zs.total_out);
    deflateEnd(&zs);
    out += buf;
  }
  return out;
}

// JSON lines of the documents, C4-style: other fields before and after the text.
std::string jsonl(const std::vector<std::string>& docs, const std::string& field = "text") {
  std::string s;
  for (size_t i = 0; i < docs.size(); ++i)
    s += json{{"timestamp", "2019-04-25T12:57:54Z"},
              {field, docs[i]},
              {"url", "https://example.com/" + std::to_string(i)},
              {"meta", {{"n", i}, {"tags", {"a", "b"}}}}}
             .dump() +
         "\n";
  return s;
}

class Corpus : public hs::test::ScratchTest<> {
 protected:
  static const hs::Tokenizer& tok() {
    static const hs::Tokenizer t = hs::Tokenizer::from_file(kTokenizer);
    return t;
  }
  std::vector<int32_t> tokens(const std::vector<std::string>& paths, hs::CorpusOptions o = {},
                              hs::CorpusStats* stats = nullptr) const {
    std::vector<int32_t> s;
    const hs::CorpusStats st = hs::tokenize_corpus(
        paths, tok(), kEos, o,
        [&](std::span<const int32_t> ids) { s.insert(s.end(), ids.begin(), ids.end()); });
    EXPECT_EQ(st.tokens, int64_t(s.size()));
    if (stats) *stats = st;
    return s;
  }
  // The stream as the corpus of separate text files always gave it, computed here.
  static std::vector<int32_t> expected(const std::vector<std::string>& docs) {
    std::vector<int32_t> s;
    for (const auto& d : docs) {
      if (d.empty()) continue;
      if (!s.empty()) s.push_back(int32_t(kEos));
      const auto ids = tok().encode(d);
      s.insert(s.end(), ids.begin(), ids.end());
    }
    return s;
  }
  // The message of the hs::Error that tokenizing these paths throws.
  std::string error_of(const std::vector<std::string>& paths, hs::CorpusOptions o = {}) const {
    try {
      tokens(paths, o);
    } catch (const hs::Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  std::string write_text_files(const std::string& folder, const std::vector<std::string>& docs,
                               size_t first = 0) const {
    fs::create_directories(dir_ / folder);
    for (size_t i = 0; i < docs.size(); ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "doc%03zu.txt", first + i);
      write(folder + "/" + name, docs[i]);
    }
    return path(folder);
  }
};

TEST_F(Corpus, TextFilesJsonLinesAndGzipGiveTheSameStream) {
  const std::vector<int32_t> want = expected(kDocs);
  ASSERT_GT(want.size(), 40u);
  EXPECT_EQ(tokens({write_text_files("txt", kDocs)}), want);
  EXPECT_EQ(tokens({write("a.jsonl", jsonl(kDocs)).string()}), want);
  EXPECT_EQ(tokens({write("a.jsonl.gz", gzip(jsonl(kDocs))).string()}), want);
  EXPECT_EQ(tokens({write("c4.json.gz", gzip(jsonl(kDocs), 3)).string()}), want);  // 3 members
  EXPECT_EQ(tokens({write("c4.json", jsonl(kDocs)).string()}), want);
  // No newline after the last line; CRLF line ends.
  std::string crlf = jsonl(kDocs);
  for (size_t p = 0; (p = crlf.find('\n', p)) != std::string::npos; p += 2) crlf.insert(p, "\r");
  EXPECT_EQ(tokens({write("crlf.jsonl", crlf.substr(0, crlf.size() - 2)).string()}), want);

  // A folder mixing them, in the order of its sorted names, and several --corpus paths.
  fs::create_directories(dir_ / "mix/sub");
  write("mix/0.txt", kDocs[0]);
  write("mix/1.jsonl", jsonl({kDocs[1], kDocs[2], kDocs[3]}));
  write("mix/2.json.gz", gzip(jsonl({kDocs[4]})));
  write("mix/sub/3.txt", kDocs[5]);
  write("mix/sub/4.txt.gz", gzip(kDocs[6]));  // a gzipped text file is one document
  EXPECT_EQ(tokens({path("mix")}), want);
  write("first.jsonl", jsonl({kDocs[0], kDocs[1]}));
  EXPECT_EQ(
      tokens({path("first.jsonl"), write_text_files("rest", {kDocs.begin() + 2, kDocs.end()})}),
      want);

  // --text-field: another field holds the documents; "text" is then just another field.
  std::string other;
  for (const auto& d : kDocs) other += json{{"text", 7}, {"content", d}}.dump() + "\n";
  hs::CorpusOptions o;
  o.text_field = "content";
  EXPECT_EQ(tokens({write("content.jsonl", other).string()}, o), want);

  hs::CorpusStats st;
  tokens({path("a.jsonl")}, {}, &st);
  EXPECT_EQ(st.documents, 6);  // the empty one is skipped
  EXPECT_FALSE(st.truncated);
}

// The stream is cut at exactly N tokens, and reading stops there: bad input after the cut is
// never reported.
TEST_F(Corpus, MaxTokensTakesTheFirstTokensAndStopsReading) {
  const std::vector<int32_t> all = expected(kDocs);
  const std::string a = write("a.jsonl", jsonl(kDocs)).string();
  const size_t first_eos = size_t(std::find(all.begin(), all.end(), int32_t(kEos)) - all.begin());
  for (const size_t n : {size_t(1), first_eos, first_eos + 1, all.size() / 2, all.size()}) {
    hs::CorpusOptions o;
    o.max_tokens = int64_t(n);
    hs::CorpusStats st;
    EXPECT_EQ(tokens({a}, o, &st), std::vector<int32_t>(all.begin(), all.begin() + n)) << n;
    EXPECT_TRUE(st.truncated) << n;
  }
  hs::CorpusOptions o;
  o.max_tokens = int64_t(all.size()) + 1;
  hs::CorpusStats st;
  EXPECT_EQ(tokens({a}, o, &st), all);
  EXPECT_FALSE(st.truncated);

  // A bad line after the cut in the same file, and a broken file after it.
  const std::string bad = write("b.jsonl", jsonl(kDocs) + "not json\n").string();
  const std::string broken = write("c.jsonl.gz", gzip(jsonl(kDocs)).substr(0, 30)).string();
  o.max_tokens = int64_t(all.size());
  EXPECT_EQ(tokens({bad, broken}, o), all);
  EXPECT_EQ(error_of({bad, broken}), bad + ":8: not valid JSON (at byte 1 of the line)");
  o.max_tokens = int64_t(all.size()) + 1;
  EXPECT_EQ(error_of({a, broken}, o), broken + ": gzip stream truncated at byte 30");
}

// Every bad input: one message naming the file, and the line of a JSON line or the byte of a
// gzip stream. Nothing is skipped.
TEST_F(Corpus, EachBadInputNamesItsFileAndLineOrByte) {
  auto one = [&](const std::string& name, const std::string& content) {
    const std::string p = write(name, content).string();
    return std::pair{p, error_of({p})};
  };
  const std::string good = json{{"text", "fine"}}.dump() + "\n";
  {
    const auto [p, e] = one("a.jsonl", good + "{\"text\": nope}\n");
    EXPECT_EQ(e, p + ":2: not valid JSON (at byte 10 of the line)");
  }
  {
    const auto [p, e] = one("b.jsonl", good + good + "{\"body\": \"x\", \"url\": \"u\"}\n");
    EXPECT_EQ(e, p + ":3: no field 'text' (--text-field)");
  }
  {
    const auto [p, e] = one("c.jsonl", "{\"text\": 42}\n");
    EXPECT_EQ(e, p + ":1: field 'text' is number, not a string");
  }
  {
    const auto [p, e] = one("d.jsonl", "{\"text\": null}\n");
    EXPECT_EQ(e, p + ":1: field 'text' is null, not a string");
  }
  {
    const auto [p, e] = one("e.jsonl", good + "[\"text\"]\n");
    EXPECT_EQ(e, p + ":2: a JSON array, expected an object");
  }
  {
    const auto [p, e] = one("f.jsonl", good + "\n" + good);
    EXPECT_EQ(e, p + ":2: empty line, expected a JSON object");
  }
  {
    const auto [p, e] = one("g.jsonl", good + "{\"text\": \"ab\xff\"}\n");
    EXPECT_EQ(e, p + ":2: invalid UTF-8 at byte 12 of the line");
  }
  {
    // A lone surrogate escape is not a Unicode character: the parser rejects it.
    const auto [p, e] = one("h.jsonl", "{\"text\": \"a\\udc80b\"}\n");
    EXPECT_EQ(e, p + ":1: not valid JSON (at byte 16 of the line)");
  }
  {
    const auto [p, e] = one("i.txt", std::string("abc\xc3(", 5));
    EXPECT_EQ(e, p + ": invalid UTF-8 at byte 3");
  }
  {
    const std::string gz = gzip(jsonl(kDocs));
    const auto [p, e] = one("j.jsonl.gz", gz.substr(0, gz.size() - 9));  // data and trailer cut
    EXPECT_EQ(e, p + ": gzip stream truncated at byte " + std::to_string(gz.size() - 9));
    const auto [q, f] = one("k.json.gz", gz.substr(0, 5));  // inside the header
    EXPECT_EQ(f, q + ": gzip stream truncated at byte 5");
    const auto [r, g] = one("l.jsonl.gz", "");
    EXPECT_EQ(g, r + ": gzip stream truncated at byte 0");
    std::string flipped = gz;
    flipped[gz.size() - 2] ^= 0x55;  // in the stored length
    const auto [s, h] = one("m.jsonl.gz", flipped);
    EXPECT_EQ(h, s + ": corrupt gzip data at byte " + std::to_string(gz.size()) +
                     " (zlib: incorrect length check)");
    const auto [t, i] = one("n.jsonl.gz", "plain text, not gzip\n");
    EXPECT_EQ(i.rfind(t + ": corrupt gzip data at byte ", 0), 0u) << i;
  }
  {
    // In a gzipped file the line is counted the same; the lines before it are read.
    const auto [p, e] = one("o.jsonl.gz", gzip(good + good + good + "{\"text\": [1]}\n"));
    EXPECT_EQ(e, p + ":4: field 'text' is array, not a string");
  }
  EXPECT_EQ(error_of({path("missing.jsonl")}),
            path("missing.jsonl") + ": corpus path does not exist");
}

// Many documents on 1 and on 3 threads, in batches: the same stream, and the first bad line in
// the file's order is the one named, whichever thread met its error first.
TEST_F(Corpus, ThreadsGiveTheSameStreamAndTheFirstError) {
  std::mt19937 rng(7);
  const char* syl[] = {"ka", "lo", "mi", "re", "tu", "sa", "ne", "é", "ст", "語", "qu", "zz"};
  std::vector<std::string> docs;
  size_t bytes = 0;
  while (bytes < (size_t(3) << 20)) {  // compressed beyond one 1 MB read of the file
    std::string d;
    const int words = 5 + int(rng() % 400);
    for (int w = 0; w < words; ++w) {
      if (w) d += rng() % 9 == 0 ? "\n" : " ";
      for (int s = 1 + int(rng() % 4); s > 0; --s) d += syl[rng() % 12];
      if (rng() % 50 == 0) d += std::to_string(rng() % 100000);
    }
    bytes += d.size();
    docs.push_back(std::move(d));
  }
  const std::string gz = write("big.jsonl.gz", gzip(jsonl(docs))).string();
  ASSERT_GT(fs::file_size(gz), size_t(1) << 20);
  hs::CorpusOptions one, three;
  one.threads = 1;
  three.threads = 3;
  const auto want = expected(docs);
  EXPECT_EQ(tokens({gz}, one), want);
  EXPECT_EQ(tokens({gz}, three), want);

  std::string lines = jsonl(docs);
  auto line_start = [&](size_t n) {  // of 1-based line n
    size_t p = 0;
    for (size_t i = 1; i < n; ++i) p = lines.find('\n', p) + 1;
    return p;
  };
  lines.insert(line_start(docs.size() - 2), "{\"text\": 1}\n");
  lines.insert(line_start(docs.size() / 2), "{}\n");
  const std::string bad = write("bad.jsonl", lines).string();
  const std::string want_error =
      bad + ":" + std::to_string(docs.size() / 2) + ": no field 'text' (--text-field)";
  EXPECT_EQ(error_of({bad}, one), want_error);
  EXPECT_EQ(error_of({bad}, three), want_error);
}

// The reader hands out lines across its batches (a line cut by a batch's end goes on in the
// next) exactly as in one batch.
TEST_F(Corpus, ReaderBatchesCutNoLine) {
  std::vector<std::string> docs;
  for (int i = 0; i < 300; ++i) docs.push_back(std::string(size_t(i % 37), char('a' + i % 26)));
  const std::string p = write("x.jsonl", jsonl(docs)).string();
  const std::string t = write("y.txt", "whole").string();
  auto read_all = [&](size_t target) {
    hs::CorpusReader reader({p, t, p});
    hs::RawBatch b;
    std::vector<std::pair<int64_t, std::string>> out;
    int batches = 0;
    while (reader.next(b, target)) {
      ++batches;
      for (const auto& d : b.docs) out.emplace_back(d.line, std::string(b.view(d)));
    }
    EXPECT_EQ(reader.bytes_read(), reader.total_bytes());
    return std::pair{out, batches};
  };
  const auto [whole, one_batch] = read_all(size_t(1) << 30);
  EXPECT_EQ(one_batch, 1);
  ASSERT_EQ(whole.size(), 601u);
  EXPECT_EQ(whole[300], std::pair(int64_t(0), std::string("whole")));
  EXPECT_EQ(whole[600].first, 300);
  for (const size_t target : {size_t(1), size_t(100), size_t(4097)}) {
    const auto [lines, batches] = read_all(target);
    EXPECT_EQ(lines, whole) << target;
    EXPECT_GT(batches, 2) << target;
  }
}

TEST_F(Corpus, TokenCacheKeepsTheStreamAndItsSource) {
  const std::string a = write("a.jsonl.gz", gzip(jsonl(kDocs))).string();
  hs::CorpusOptions o;
  o.max_tokens = 30;
  const json source = hs::token_source({a}, o, tok(), kEos);
  const std::string cache = path("corpus.tokens");
  {
    const hs::TokenCache c = hs::TokenCache::create(cache, {a}, tok(), kEos, o, source);
    EXPECT_EQ(std::vector<int32_t>(c.tokens().begin(), c.tokens().end()), tokens({a}, o));
  }
  EXPECT_EQ(std::vector<fs::path>(fs::directory_iterator(dir_), {}).size(), 2u);  // no tmp left
  const hs::TokenCache c = hs::TokenCache::open(cache);
  ASSERT_EQ(c.tokens().size(), 30u);
  EXPECT_EQ(std::vector<int32_t>(c.tokens().begin(), c.tokens().end()), tokens({a}, o));
  EXPECT_EQ(c.description()["source"], source);
  EXPECT_EQ(c.description()["stats"]["truncated"], true);
  EXPECT_NO_THROW(hs::check_token_source(c, source));

  o.max_tokens = 0;
  try {
    hs::check_token_source(c, hs::token_source({a}, o, tok(), kEos));
    ADD_FAILURE() << "no error";
  } catch (const hs::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              cache +
                  ": --max-tokens was 30 when this run tokenized its corpus, now 0: resume "
                  "with the same settings");
  }
  const std::string bytes = hs::test::slurp(cache);
  write("short.tokens", bytes.substr(0, bytes.size() - 1));
  try {
    hs::TokenCache::open(path("short.tokens"));
    ADD_FAILURE() << "no error";
  } catch (const hs::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              path("short.tokens") +
                  ": not a whole token cache (delete it to tokenize the corpus again)");
  }
}

// Ctrl-C while tokenizing: hs::Interrupted, and no cache file, finished or not, is left.
TEST_F(Corpus, InterruptedTokenizingLeavesNoCache) {
  const std::string a = write("a.jsonl", jsonl(kDocs)).string();
  const hs::InterruptHandlers handlers;  // the count goes back to zero when it ends
  hs::request_interrupt();
  hs::CorpusOptions o;
  EXPECT_THROW(hs::TokenCache::create(path("corpus.tokens"), {a}, tok(), kEos, o,
                                      hs::token_source({a}, o, tok(), kEos)),
               hs::Interrupted);
  EXPECT_EQ(std::vector<fs::path>(fs::directory_iterator(dir_), {}).size(), 1u);
  EXPECT_THROW(tok().encode("words words"), hs::Interrupted);
}

TEST_F(Corpus, FileFormatsFromTheirNames) {
  for (const auto& [name, json_lines, gz] : std::vector<std::tuple<std::string, bool, bool>>{
           {"a.txt", false, false},
           {"a.jsonl", true, false},
           {"c4-train.00000-of-01024.json", true, false},
           {"c4-train.00000-of-01024.json.gz", true, true},
           {"a.jsonl.gz", true, true},
           {"a.py.gz", false, true},
           {"json", false, false},
           {"a.gz.txt", false, false}}) {
    const hs::FileFormat f = hs::corpus_file_format(name);
    EXPECT_EQ(f.json_lines, json_lines) << name;
    EXPECT_EQ(f.gzip, gz) << name;
  }
}

}  // namespace
