// Byte-level BPE as Hugging Face `tokenizers` runs it. Comments that name HF point at a behaviour
// of its Rust code that is copied on purpose, so that the ids match.
#include "text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "util/error.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

struct Utf8Step {
  bool ok;
  size_t len;  // valid: the sequence length; invalid: the maximal valid prefix (at least 1)
};

// One step of strict UTF-8 decoding (Unicode Table 3-7: no overlongs, surrogates or values past
// U+10FFFF). The invalid length is what Rust's from_utf8_lossy replaces by a single U+FFFD.
Utf8Step utf8_step(const unsigned char* p, size_t n) {
  const unsigned c = p[0];
  if (c < 0x80) return {true, 1};
  size_t need;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return {false, 1};
  }
  for (size_t k = 1; k <= need; ++k) {
    if (k >= n || p[k] < lo || p[k] > hi) return {false, k};
    lo = 0x80;
    hi = 0xBF;
  }
  return {true, need + 1};
}

// HF passes the decoded bytes through String::from_utf8_lossy.
std::string utf8_lossy(std::string_view s) {
  if (first_invalid_utf8(s) == std::string_view::npos) return std::string(s);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(p + i, s.size() - i);
    if (st.ok)
      out.append(s.data() + i, st.len);
    else
      out += "\xEF\xBF\xBD";
    i += st.len;
  }
  return out;
}

// Decodes the code point at s[i] (s is valid UTF-8) and advances i.
char32_t next_code_point(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t len = utf8_step(p + i, s.size() - i).len;
  char32_t cp = len == 1 ? p[i] : p[i] & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (p[i + k] & 0x3F);
  i += len;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// ---------------------------------------------------------------------------------------------
// NFC (HF's `NFC` normalizer), through utf8proc. Its Unicode tables may be newer than those of
// HF's normalization crate; only characters assigned in between can come out differently.

// Appends the NFC form of `s` (valid UTF-8) to `out`; returns false, appending nothing, when `s`
// is already NFC for the cheap reason below, so the common case costs no copy. Every character
// below U+0300 has NFC_Quick_Check=Yes and combining class 0 and is never the second of a
// composition, so the text is cut before each one (a normalization boundary, UAX #15 9.1): runs
// of such characters are copied and only the stretches from the starter before a character
// >= U+0300 (UTF-8 lead byte >= 0xCC) to the next boundary go through utf8proc.
bool nfc_append(std::string_view s, std::string& out, std::vector<utf8proc_int32_t>& buf) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  auto high = [&](size_t from) {
    while (from < n && p[from] < 0xCC) ++from;
    return from;
  };
  size_t j = high(0);
  if (j == n) return false;
  out.reserve(out.size() + n + n / 8);
  size_t copied = 0;
  while (j < n) {
    // The character before j (if any since the last stretch) is below U+0300: the starter that
    // marks at j may compose with, so the stretch starts there.
    size_t start = j;
    if (start > copied) {
      --start;
      if (start > copied && p[start] >= 0x80 && p[start] < 0xC0) --start;
    }
    size_t end = j;
    while (end < n && p[end] >= 0xCC) end += utf8_step(p + end, n - end).len;
    out.append(s.data() + copied, start - copied);
    const auto len = static_cast<utf8proc_ssize_t>(end - start);
    // COMPOSE (with STABLE) is utf8proc_NFC's option set: canonical decomposition and
    // reordering here, composition below.
    const auto opts = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    utf8proc_ssize_t cps = -1;
    for (int attempt = 0; attempt < 2; ++attempt) {
      cps = utf8proc_decompose(p + start, len, buf.data(),
                               static_cast<utf8proc_ssize_t>(buf.size()), opts);
      if (cps < 0 || static_cast<size_t>(cps) <= buf.size()) break;
      buf.resize(static_cast<size_t>(cps));
    }
    if (cps >= 0) cps = utf8proc_normalize_utf32(buf.data(), cps, opts);
    if (cps < 0) throw Error(std::string("NFC normalization: ") + utf8proc_errmsg(cps));
    for (utf8proc_ssize_t k = 0; k < cps; ++k) append_utf8(out, static_cast<char32_t>(buf[k]));
    copied = end;
    j = high(end);
  }
  out.append(s.data() + copied, n - copied);
  return true;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character table (bytes_to_unicode): printable bytes stand for themselves,
// the others are moved to U+0100 and up so that every token is printable text.

struct ByteAlphabet {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};  // code point -> byte, -1 if not in the alphabet

  ByteAlphabet() {
    to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet table;
  return table;
}

// HF ByteLevel decoder, per token: if every character is in the byte alphabet the token
// stands for those bytes, otherwise (added tokens such as "<s>" may not be) for its own text.
std::string byte_level_decode(std::string_view token) {
  const auto& alpha = byte_alphabet();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const char32_t cp = next_code_point(token, i);
    if (cp >= alpha.to_byte.size() || alpha.to_byte[cp] < 0) return std::string(token);
    bytes += static_cast<char>(alpha.to_byte[cp]);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Oniguruma -> PCRE2. HF compiles pre-tokenizer regexes with Oniguruma (Ruby syntax); PCRE2
// reads some of the same text differently, so the pattern is rewritten into constructs whose
// meaning both agree on. Anything whose Oniguruma meaning we do not reproduce is rejected.

// Oniguruma's \s is Unicode White_Space; PCRE2's \s with UCP also takes U+180E (which Unicode
// dropped from White_Space in 6.3), so \s is spelled out. This is the body of a character class.
constexpr std::string_view kWhiteSpace =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

class OnigToPcre2 {
 public:
  explicit OnigToPcre2(std::string_view pattern) : p_(pattern) {}

  // Throws std::runtime_error with the reason; the caller adds the path.
  std::string translate() {
    std::string out;
    while (i_ < p_.size()) {
      const char c = p_[i_];
      if (c == '\\') {
        const Escape e = escape();
        switch (e.kind) {
          case Escape::kChar:
            out += hex(e.cp);
            break;
          case Escape::kSet:
            out += "[" + e.text + "]";
            break;
          case Escape::kNotWhiteSpace:
            out += "[^" + std::string(kWhiteSpace) + "]";
            break;
          case Escape::kAnchor:
            out += e.text;
            break;
        }
      } else if (c == '[') {
        ++i_;
        std::string members;
        const bool negated = class_members(members);
        out += (negated ? "[^" : "[") + members + "]";
      } else if (c == '(') {
        out += group_open();
      } else if (c == '{' && lower_bound_omitted()) {
        // Ruby's {,n} means {0,n}; PCRE2 10.42 would read it as literal text.
        out += "{0";
        ++i_;
      } else {
        out += c;
        ++i_;
      }
    }
    return out;
  }

 private:
  struct Escape {
    enum Kind { kChar, kSet, kNotWhiteSpace, kAnchor } kind;
    char32_t cp;
    std::string text;  // kSet: class body; kAnchor: the PCRE2 text

    static Escape chr(char32_t c) { return {kChar, c, {}}; }
    static Escape of(Kind k, std::string t) { return {k, 0, std::move(t)}; }
  };

  [[noreturn]] static void fail(const std::string& what) { throw std::runtime_error(what); }

  static std::string hex(char32_t cp) {
    std::ostringstream s;
    s << "\\x{" << std::hex << static_cast<uint32_t>(cp) << "}";
    return s.str();
  }

  bool lower_bound_omitted() const {
    size_t k = i_ + 1;
    if (k >= p_.size() || p_[k] != ',') return false;
    const size_t digits = ++k;
    while (k < p_.size() && p_[k] >= '0' && p_[k] <= '9') ++k;
    return k > digits && k < p_.size() && p_[k] == '}';
  }

  char32_t hex_digits(size_t max_digits, bool braced) {
    size_t k = i_;
    char32_t v = 0;
    for (; k < p_.size() && k - i_ < max_digits; ++k) {
      const char d = p_[k];
      const int digit = d >= '0' && d <= '9'   ? d - '0'
                        : d >= 'a' && d <= 'f' ? d - 'a' + 10
                        : d >= 'A' && d <= 'F' ? d - 'A' + 10
                                               : -1;
      if (digit < 0) break;
      v = v * 16 + digit;
    }
    if (k == i_ || v > 0x10FFFF) fail("bad hexadecimal escape");
    i_ = k;
    if (braced) {
      if (i_ >= p_.size() || p_[i_] != '}') fail("unterminated \\x{...}");
      ++i_;
    }
    return v;
  }

  // At a backslash.
  Escape escape() {
    if (i_ + 1 >= p_.size()) fail("pattern ends with a backslash");
    const char e = p_[i_ + 1];
    i_ += 2;
    switch (e) {
      case 's':
        return Escape::of(Escape::kSet, std::string(kWhiteSpace));
      case 'S':
        return Escape::of(Escape::kNotWhiteSpace, {});
      case 'd':
      case 'D':
        return Escape::of(Escape::kSet, std::string("\\") + e);
      case 'p':
      case 'P': {
        std::string text = std::string("\\") + e;
        const size_t end = i_ < p_.size() && p_[i_] == '{' ? p_.find('}', i_) : i_;
        if (end == std::string_view::npos || end >= p_.size()) fail("bad \\p property");
        text += p_.substr(i_, end - i_ + 1);
        i_ = end + 1;
        return Escape::of(Escape::kSet, text);
      }
      case 'A':
      case 'z':
      case 'Z':
      case 'G':
        return Escape::of(Escape::kAnchor, std::string("\\") + e);
      case 'n':
        return Escape::chr('\n');
      case 't':
        return Escape::chr('\t');
      case 'r':
        return Escape::chr('\r');
      case 'f':
        return Escape::chr('\f');
      case 'v':
        return Escape::chr('\v');  // PCRE2's \v is a class of vertical space
      case 'a':
        return Escape::chr('\a');
      case 'e':
        return Escape::chr(0x1B);
      case 'x': {
        const bool braced = i_ < p_.size() && p_[i_] == '{';
        if (braced) ++i_;
        return Escape::chr(hex_digits(braced ? 8 : 2, braced));
      }
      case 'u':
        return Escape::chr(hex_digits(4, false));
      default:
        break;
    }
    if (std::isalnum(static_cast<unsigned char>(e))) fail(std::string("unsupported escape \\") + e);
    size_t k = i_ - 1;  // an escaped punctuation or non-ASCII character stands for itself
    const char32_t cp = next_code_point(p_, k);
    i_ = k;
    return Escape::chr(cp);
  }

  // At '('. Groups whose syntax means the same in both engines are copied.
  std::string group_open() {
    ++i_;
    if (i_ >= p_.size() || p_[i_] != '?') return "(";
    const std::string_view rest = p_.substr(i_ + 1);
    for (std::string_view ok : {":", "=", "!", ">", "<=", "<!"}) {
      if (rest.starts_with(ok)) {
        i_ += 1 + ok.size();
        return "(?" + std::string(ok);
      }
    }
    if (rest.starts_with("<") && rest.size() > 1 &&
        std::isalpha(static_cast<unsigned char>(rest[1]))) {
      ++i_;
      return "(?";  // named group: (?<name>...) in both
    }
    fail("unsupported group (?" + std::string(rest.substr(0, 1)));
  }

  // After '['. Appends the class body to `members` and returns whether the class is negated.
  // Oniguruma reads a class nested in a class as a union; PCRE2 would read the '[' as a literal,
  // so nested (non-negated) classes are flattened into their parent.
  bool class_members(std::string& members) {
    bool negated = false;
    if (i_ < p_.size() && p_[i_] == '^') {
      negated = true;
      ++i_;
    }
    for (bool first = true;; first = false) {
      if (i_ >= p_.size()) fail("unterminated character class");
      const char c = p_[i_];
      if (c == ']' && !first) {
        ++i_;
        return negated;
      }
      if (c == '[') {
        if (i_ + 1 < p_.size() && p_[i_ + 1] == ':') fail("POSIX bracket expressions");
        ++i_;
        if (class_members(members)) fail("negated class inside a class");
        continue;
      }
      if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&') fail("class intersection (&&)");
      const Escape lo = class_atom();
      if (lo.kind == Escape::kSet) {
        members += lo.text;
        continue;
      }
      if (i_ + 1 < p_.size() && p_[i_] == '-' && p_[i_ + 1] != ']') {
        ++i_;
        const Escape hi = class_atom();
        if (hi.kind != Escape::kChar || hi.cp < lo.cp) fail("bad range in a character class");
        members += hex(lo.cp) + "-" + hex(hi.cp);
      } else {
        members += hex(lo.cp);
      }
    }
  }

  Escape class_atom() {
    if (p_[i_] == '[') fail("'[' in a range");
    if (p_[i_] != '\\') return Escape::chr(next_code_point(p_, i_));
    Escape e = escape();
    if (e.kind != Escape::kChar && e.kind != Escape::kSet) fail("escape not allowed in a class");
    return e;
  }

  std::string_view p_;
  size_t i_ = 0;
};

struct CodeFree {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
using Regex = std::unique_ptr<pcre2_code, CodeFree>;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// `literal`: HF's Split {"String": s} is the escaped string.
Regex compile_regex(const std::string& path, const std::string& pattern, bool literal) {
  std::string pcre;
  try {
    pcre = literal ? pattern : OnigToPcre2(pattern).translate();
  } catch (const std::runtime_error& e) {
    throw Error(path, "pre_tokenizer regex '" + pattern + "': " + e.what());
  }
  // Oniguruma (Ruby syntax): ^ and $ are line anchors, and '.' excludes only "\n".
  const uint32_t options =
      literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
  pcre2_compile_context* ctx = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(ctx, PCRE2_NEWLINE_LF);
  int err = 0;
  PCRE2_SIZE offset = 0;
  Regex re(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre.data()), pcre.size(), options, &err,
                         &offset, ctx));
  pcre2_compile_context_free(ctx);
  if (!re)
    throw Error(path, "pre_tokenizer regex '" + pattern + "' does not compile: " +
                          pcre2_message(err) + " (at offset " + std::to_string(offset) + ")");
  // Without JIT support pcre2_match interprets the pattern; same results, just slower.
  pcre2_jit_compile(re.get(), PCRE2_JIT_COMPLETE);
  return re;
}

struct MatchDataFree {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

// One match-data block per thread, shared by all patterns (only the whole match is read).
pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataFree> md(
      pcre2_match_data_create(1, nullptr));
  return md.get();
}

// HF Split, behaviour Isolated: every match and every gap between matches is a piece, empty
// ones dropped, so an empty match only splits. Matches are iterated as the onig crate's
// find_iter does: an empty match where the previous match ended is skipped by moving the search
// on one character.
template <class F>
void split_isolated(const pcre2_code* re, std::string_view s, F&& emit) {
  pcre2_match_data* md = thread_match_data();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t prev = 0, from = 0, last_match_end = std::string_view::npos;
  while (from <= s.size()) {
    // The text was validated once up front, so PCRE2 need not check it again.
    const int rc = pcre2_match(re, subject, s.size(), from, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("pre_tokenizer regex: " + pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (start == end && end == last_match_end) {
      from += from < s.size() ? utf8_step(subject + from, s.size() - from).len : 1;
      continue;
    }
    from = last_match_end = end;
    if (start > prev) emit(s.substr(prev, start - prev));
    if (end > start) emit(s.substr(start, end - start));
    prev = end;
  }
  if (prev < s.size()) emit(s.substr(prev));
}

// ---------------------------------------------------------------------------------------------
// Lookup tables

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// (left id, right id) -> (rank, merged id), open addressing: the BPE inner loop is lookups.
class MergeTable {
 public:
  struct Merge {
    uint32_t rank;
    int32_t id;
  };

  explicit MergeTable(size_t n) {
    size_t cap = 16;
    shift_ = 60;
    while (cap < 2 * n) {
      cap *= 2;
      --shift_;
    }
    slots_.assign(cap, Slot{kEmpty, {}});
    mask_ = cap - 1;
  }

  // HF collects the merges into a map, so a repeated pair keeps its last rank.
  void insert(int32_t a, int32_t b, Merge m) {
    const uint64_t k = key(a, b);
    for (size_t i = hash(k);; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == k) {
        slots_[i] = {k, m};
        return;
      }
    }
  }

  const Merge* find(int32_t a, int32_t b) const {
    const uint64_t k = key(a, b);
    for (size_t i = hash(k);; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are non-negative
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
  }
  // Fibonacci hashing: the top bits of the product depend on every bit of both ids.
  size_t hash(uint64_t k) const { return (k * 0x9E3779B97F4A7C15ull) >> shift_; }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 60;
};

// Word (pre-token) -> ids. Real text repeats words, so most pieces skip BPE. One cache per
// thread, so threads never wait on or bounce a lock between them; it serves the tokenizer the
// thread used last (a unique instance number, not an address that a new tokenizer could reuse).
// A full cache is emptied, which bounds memory and lets the contents follow the text.
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;  // longer pieces rarely repeat

  static WordCache& for_tokenizer(uint64_t instance) {
    thread_local WordCache cache;
    if (cache.owner_ != instance) {
      cache.map_.clear();
      cache.owner_ = instance;
    }
    return cache;
  }

  const std::vector<int32_t>* find(std::string_view word) const {
    const auto it = map_.find(word);
    return it == map_.end() ? nullptr : &it->second;
  }

  void put(std::string_view word, std::span<const int32_t> ids) {
    if (map_.size() >= kCapacity) map_.clear();
    map_.try_emplace(std::string(word), ids.begin(), ids.end());
  }

 private:
  static constexpr size_t kCapacity = 1 << 15;  // a few MB per thread
  uint64_t owner_ = 0;
  StringMap<std::vector<int32_t>> map_;
};

// Added tokens, matched leftmost-longest as HF's Aho-Corasick automaton does: a byte trie walked
// from each position whose byte starts some token. A trie, not a list tried longest first:
// GPT-NeoX-20B has 23 tokens made of runs of spaces, and every space in the text starts one.
class AddedMatcher {
 public:
  struct Hit {
    size_t pos, len;
    int32_t id;
  };

  // A repeated content keeps the first id, as the automaton reports the first pattern.
  void add(std::string_view content, int32_t id) {
    if (nodes_.empty()) nodes_.emplace_back();
    uint32_t node = 0;
    for (const char c : content) {
      const uint32_t child = next(node, static_cast<unsigned char>(c));
      if (child != 0) {
        node = child;
        continue;
      }
      nodes_[node].edges.push_back(
          {static_cast<unsigned char>(c), static_cast<uint32_t>(nodes_.size())});
      node = static_cast<uint32_t>(nodes_.size());
      nodes_.emplace_back();
    }
    if (nodes_[node].id < 0) nodes_[node].id = id;
    first_[static_cast<unsigned char>(content[0])] = true;
  }

  bool empty() const { return nodes_.empty(); }

  std::optional<Hit> find(std::string_view text, size_t from) const {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_[p[i]]) continue;
      std::optional<Hit> best;
      uint32_t node = 0;
      for (size_t k = i; k < text.size() && (node = next(node, p[k])) != 0; ++k)
        if (nodes_[node].id >= 0) best = Hit{i, k + 1 - i, nodes_[node].id};
      if (best) return best;
    }
    return std::nullopt;
  }

 private:
  struct Node {
    int32_t id = -1;                                        // the token ending here, if any
    std::vector<std::pair<unsigned char, uint32_t>> edges;  // byte -> child (never the root)
  };

  // The child of `node` along byte c, or 0 (the root) when there is none.
  uint32_t next(uint32_t node, unsigned char c) const {
    for (const auto& [b, child] : nodes_[node].edges)
      if (b == c) return child;
    return 0;
  }

  std::vector<Node> nodes_;
  std::array<bool, 256> first_{};
};

// ---------------------------------------------------------------------------------------------
// Reading tokenizer.json

bool flag(const json& j, const char* key, bool fallback) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<bool>();
}

std::string type_of(const json& j) {
  const auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string("(none)");
}

// Flattens Sequences into `steps`.
void flatten_pre_tokenizer(const json& pt, std::vector<const json*>& steps) {
  if (type_of(pt) == "Sequence") {
    for (const json& p : pt.at("pretokenizers")) flatten_pre_tokenizer(p, steps);
  } else {
    steps.push_back(&pt);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  // One step of the pre-tokenizer: a Split on `re`, or ByteLevel's optional leading space.
  struct Stage {
    Regex re;
    bool prepend_space = false;
  };

  // Per-call scratch, reused across the pieces of one text.
  struct Work {
    std::vector<int32_t>& out;
    WordCache& cache;
    struct Symbol {
      int32_t id, prev, next;  // id -1: merged into its left neighbour
    };
    std::vector<Symbol> symbols;
    std::vector<uint64_t> heap;  // (rank << 32 | position), min first
    std::string text;
    std::vector<utf8proc_int32_t> code_points;  // NFC scratch
  };

  std::string path;
  StringMap<int32_t> vocab;  // model vocabulary, byte-level text -> id
  MergeTable merges{0};
  std::array<int32_t, 256> byte_id{};  // id of each byte's one-character token, -1 if none
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;
  bool nfc = false;  // the normalizer: NFC, or none

  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  std::vector<AddedToken> added;
  AddedMatcher added_plain, added_normalized;  // HF matches these in two passes
  StringMap<int32_t> added_ids;
  std::vector<Stage> stages;

  std::vector<std::string> id_bytes;  // what each id decodes to, before the UTF-8 repair
  std::vector<uint8_t> id_known, id_special;

  const uint64_t instance = next_instance++;
  static inline std::atomic<uint64_t> next_instance{1};

  void load_normalizer(const json& normalizer);
  void load_model(const json& model);
  void load_pre_tokenizer(const json& pt);
  void load_added_tokens(const json& tokens);
  void build_decoding_tables();

  void encode_added(std::string_view text, int pass, Work& w) const;
  // Runs the pre-tokenizer stages from `stage` on and hands each final piece (raw bytes) to fn.
  template <class F>
  void split_pieces(std::string_view piece, size_t stage, F&& fn) const;
  void bpe(std::string_view word, Work& w) const;
  void bpe_uncached(std::string_view word, Work& w) const;
};

// NFC, a Sequence of NFCs (NFC twice is NFC once), or null.
void Tokenizer::Impl::load_normalizer(const json& normalizer) {
  if (normalizer.is_null()) return;
  const std::string type = type_of(normalizer);
  if (type == "Sequence") {
    for (const json& n : normalizer.at("normalizers")) load_normalizer(n);
  } else if (type == "NFC") {
    nfc = true;
  } else {
    throw Error(
        path, "normalizer '" + type + "' is not supported (only NFC, a Sequence of NFC, or null)");
  }
}

void Tokenizer::Impl::load_model(const json& model) {
  if (!model.is_object()) throw Error(path, "missing 'model'");
  if (type_of(model) != "BPE")
    throw Error(path, "model type '" + type_of(model) + "' is not supported (only BPE)");
  const auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && dropout->get<double>() != 0.0)
    throw Error(path, "BPE dropout is not supported");
  // GPT-2's file has "" for both, which changes nothing in HF's BPE.
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model.find(key);
    if (it != model.end() && !it->is_null() && *it != "")
      throw Error(path, std::string("BPE ") + key + " is not supported");
  }
  if (flag(model, "byte_fallback", false)) throw Error(path, "BPE byte_fallback is not supported");
  fuse_unk = flag(model, "fuse_unk", false);
  ignore_merges = flag(model, "ignore_merges", false);

  const auto v = model.find("vocab");
  if (v == model.end() || !v->is_object()) throw Error(path, "model has no 'vocab' object");
  vocab.reserve(v->size());
  for (const auto& [token, id] : v->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      throw Error(path, "vocab entry '" + token + "' has a bad id");
    vocab.emplace(token, id.get<int32_t>());
  }

  const auto unk = model.find("unk_token");
  if (unk != model.end() && !unk->is_null()) {
    const auto it = vocab.find(unk->get<std::string>());
    if (it == vocab.end())
      throw Error(path, "unk_token '" + unk->get<std::string>() + "' not in vocab");
    unk_id = it->second;
  }

  const auto& alpha = byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, alpha.to_char[b]);
    const auto it = vocab.find(ch);
    byte_id[b] = it == vocab.end() ? -1 : it->second;
  }

  const auto m = model.find("merges");
  if (m == model.end() || !m->is_array()) throw Error(path, "model has no 'merges' list");
  merges = MergeTable(m->size());
  auto id_of = [&](const std::string& token, const std::string& merge) {
    const auto it = vocab.find(token);
    if (it == vocab.end()) throw Error(path, "merge '" + merge + "': '" + token + "' not in vocab");
    return it->second;
  };
  uint32_t rank = 0;
  for (const json& entry : *m) {
    std::string a, b;
    if (entry.is_string()) {
      // Older files: "a b" (split on the one space; "#version" lines are comments).
      const std::string line = entry.get<std::string>();
      if (line.starts_with("#version")) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
        throw Error(path, "merge " + std::to_string(rank + 1) + " ('" + line + "') is not 'a b'");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      throw Error(path,
                  "merge " + std::to_string(rank + 1) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const std::string name = a + " " + b;
    merges.insert(id_of(a, name), id_of(b, name), {rank++, id_of(a + b, name)});
  }
}

void Tokenizer::Impl::load_pre_tokenizer(const json& pt) {
  if (pt.is_null()) throw Error(path, "pre_tokenizer is null (ByteLevel is required)");
  std::vector<const json*> steps;
  flatten_pre_tokenizer(pt, steps);
  for (size_t k = 0; k < steps.size(); ++k) {
    const json& step = *steps[k];
    const std::string type = type_of(step);
    const bool last = k + 1 == steps.size();
    if (type == "Split" && !last) {
      const std::string behavior = step.at("behavior").get<std::string>();
      if (behavior != "Isolated")
        throw Error(path, "pre_tokenizer Split behavior '" + behavior +
                              "' is not supported (only Isolated)");
      if (flag(step, "invert", false))
        throw Error(path, "pre_tokenizer Split with invert is not supported");
      const json& pattern = step.at("pattern");
      if (pattern.contains("Regex"))
        stages.push_back({compile_regex(path, pattern["Regex"].get<std::string>(), false)});
      else if (pattern.contains("String"))
        stages.push_back({compile_regex(path, pattern["String"].get<std::string>(), true)});
      else
        throw Error(path, "pre_tokenizer Split pattern is neither Regex nor String");
    } else if (type == "ByteLevel" && last) {
      // HF's defaults for missing fields: add_prefix_space true, use_regex true.
      if (flag(step, "add_prefix_space", true)) stages.push_back({nullptr, true});
      if (flag(step, "use_regex", true)) {
        static const std::string kGpt2 =
            R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
        stages.push_back({compile_regex(path, kGpt2, false)});
      }
    } else if (type == "Split" || type == "ByteLevel") {
      throw Error(path, "pre_tokenizer must be Splits followed by one ByteLevel");
    } else {
      throw Error(path, "pre_tokenizer type '" + type + "' is not supported");
    }
  }
}

void Tokenizer::Impl::load_added_tokens(const json& tokens) {
  for (const json& t : tokens) {
    const std::string content = t.at("content").get<std::string>();
    const json& id_value = t.at("id");
    // Only an integer is an id: reading a float such as 5e24 as one was undefined (found by
    // fuzz_tokenizer).
    if (!id_value.is_number_integer() ||
        (id_value.is_number_unsigned() &&
         id_value.get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max())))
      throw Error(path, "added token '" + content + "' has a bad id");
    const int64_t id = id_value.get<int64_t>();
    if (content.empty()) continue;  // HF ignores these
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      throw Error(path, "added token '" + content + "' has a bad id");
    for (const char* key : {"single_word", "lstrip", "rstrip"})
      if (flag(t, key, false))
        throw Error(path, "added token '" + content + "': " + key + " is not supported");
    // HF takes the id from the vocabulary when the token is in it; we insist they agree.
    const auto in_vocab = vocab.find(content);
    if (in_vocab != vocab.end() && in_vocab->second != id)
      throw Error(path, "added token '" + content + "' has id " + std::to_string(id) +
                            " but the vocab says " + std::to_string(in_vocab->second));
    added.push_back({content, static_cast<int32_t>(id), flag(t, "special", false)});
    if (!flag(t, "normalized", true)) {
      added_plain.add(content, static_cast<int32_t>(id));
      continue;
    }
    // HF matches these in the normalized text, so it normalizes their content too.
    std::string normalized;
    std::vector<utf8proc_int32_t> scratch;
    if (!nfc || !nfc_append(content, normalized, scratch)) normalized = content;
    added_normalized.add(normalized, static_cast<int32_t>(id));
  }
}

void Tokenizer::Impl::build_decoding_tables() {
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) max_id = std::max(max_id, id);
  for (const AddedToken& t : added) max_id = std::max(max_id, t.id);
  const size_t n = static_cast<size_t>(max_id) + 1;
  std::vector<const std::string*> vocab_token(n, nullptr);
  for (const auto& [token, id] : vocab) vocab_token[id] = &token;
  id_bytes.assign(n, {});
  id_known.assign(n, 0);
  id_special.assign(n, 0);
  for (const auto& [token, id] : vocab) id_bytes[id] = byte_level_decode(token);
  // HF decodes an added token's id from the token's content.
  for (const AddedToken& t : added) {
    if (vocab_token[t.id] && *vocab_token[t.id] != t.content)
      throw Error(path, "added token '" + t.content + "' reuses the id of vocab token '" +
                            *vocab_token[t.id] + "'");
    id_bytes[t.id] = byte_level_decode(t.content);
    id_special[t.id] = t.special;
  }
  for (size_t id = 0; id < n; ++id) id_known[id] = vocab_token[id] != nullptr;
  for (const AddedToken& t : added) {
    id_known[t.id] = 1;
    added_ids[t.content] = t.id;
  }
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  return from_json(read_json_file(path), path);
}

Tokenizer Tokenizer::from_json(const nlohmann::json& j, const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  try {
    if (!j.is_object()) throw Error(path, "not a tokenizer.json object");
    const json none;
    auto field = [&](const char* key) -> const json& {
      const auto it = j.find(key);
      return it == j.end() ? none : *it;
    };
    impl->load_normalizer(field("normalizer"));
    if (type_of(field("decoder")) != "ByteLevel")
      throw Error(path,
                  "decoder '" + type_of(field("decoder")) + "' is not supported (only ByteLevel)");
    impl->load_model(field("model"));
    impl->load_pre_tokenizer(field("pre_tokenizer"));
    if (!field("added_tokens").is_null()) impl->load_added_tokens(field("added_tokens"));
    impl->build_decoding_tables();
  } catch (const json::exception& e) {
    throw Error(path, std::string("unexpected content: ") + e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

// ---------------------------------------------------------------------------------------------
// Encoding

// Pass 0 takes out the added tokens matched in the raw text, pass 1 normalizes each piece
// pass 0 leaves and takes out the added tokens HF matches in the normalized text, pass 2
// pre-tokenizes the rest.
void Tokenizer::Impl::encode_added(std::string_view text, int pass, Work& w) const {
  if (pass == 2) {
    split_pieces(text, 0, [&](std::string_view word) {
      check_interrupted();  // one relaxed load a word: a long document stops within a second
      bpe(word, w);
    });
    return;
  }
  // Pass 1 is entered once per piece of pass 0; what follows reads views into `normalized`.
  std::string normalized;
  if (pass == 1 && nfc && nfc_append(text, normalized, w.code_points)) text = normalized;
  const AddedMatcher& matcher = pass == 0 ? added_plain : added_normalized;
  if (matcher.empty()) {
    encode_added(text, pass + 1, w);
    return;
  }
  size_t prev = 0;
  for (auto hit = matcher.find(text, 0); hit; hit = matcher.find(text, prev)) {
    if (hit->pos > prev) encode_added(text.substr(prev, hit->pos - prev), pass + 1, w);
    w.out.push_back(hit->id);
    prev = hit->pos + hit->len;
  }
  if (prev < text.size()) encode_added(text.substr(prev), pass + 1, w);
}

template <class F>
void Tokenizer::Impl::split_pieces(std::string_view piece, size_t stage, F&& fn) const {
  if (stage == stages.size()) {
    fn(piece);
    return;
  }
  const Stage& st = stages[stage];
  if (!st.prepend_space) {
    split_isolated(st.re.get(), piece, [&](std::string_view p) { split_pieces(p, stage + 1, fn); });
  } else if (piece.starts_with(' ')) {
    split_pieces(piece, stage + 1, fn);
  } else {
    std::string spaced(1, ' ');
    spaced += piece;
    split_pieces(spaced, stage + 1, fn);
  }
}

void Tokenizer::Impl::bpe(std::string_view word, Work& w) const {
  if (word.size() > WordCache::kMaxWordBytes) {
    bpe_uncached(word, w);
    return;
  }
  if (const auto* ids = w.cache.find(word)) {
    w.out.insert(w.out.end(), ids->begin(), ids->end());
    return;
  }
  const size_t start = w.out.size();
  bpe_uncached(word, w);
  w.cache.put(word, std::span(w.out).subspan(start));
}

// HF BPE::merge_word + Word::merge_all: one symbol per byte (unknown ones become unk, or are
// dropped without one), then merge the adjacent pair of lowest rank, leftmost first, until no
// pair has a merge.
void Tokenizer::Impl::bpe_uncached(std::string_view word, Work& w) const {
  if (ignore_merges) {
    const auto& alpha = byte_alphabet();
    w.text.clear();
    for (const char c : word) append_utf8(w.text, alpha.to_char[static_cast<unsigned char>(c)]);
    const auto it = vocab.find(w.text);
    if (it != vocab.end()) {
      w.out.push_back(it->second);
      return;
    }
  }
  auto& sym = w.symbols;
  sym.clear();
  auto push = [&](int32_t id) {
    const auto n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, -1});
    if (n > 0) sym[n - 1].next = n;
  };
  bool pending_unk = false;
  for (const char c : word) {
    const int32_t id = byte_id[static_cast<unsigned char>(c)];
    if (id < 0) {
      if (unk_id < 0) continue;
      if (pending_unk && !fuse_unk) push(unk_id);
      pending_unk = true;
      continue;
    }
    if (pending_unk) push(unk_id);
    pending_unk = false;
    push(id);
  }
  if (pending_unk) push(unk_id);

  auto& heap = w.heap;
  heap.clear();
  auto enqueue = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    if (const auto* m = merges.find(sym[pos].id, sym[next].id)) {
      heap.push_back(uint64_t{m->rank} << 32 | static_cast<uint32_t>(pos));
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) enqueue(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto pos = static_cast<int32_t>(top & 0xFFFFFFFF);
    const int32_t next = sym[pos].next;
    if (sym[pos].id < 0 || next < 0) continue;
    // Entries go stale when a neighbour merges first; the pair now there decides.
    const auto* m = merges.find(sym[pos].id, sym[next].id);
    if (!m || m->rank != top >> 32) continue;
    sym[pos].id = m->id;
    sym[pos].next = sym[next].next;
    if (sym[pos].next >= 0) sym[sym[pos].next].prev = pos;
    sym[next].id = -1;
    if (sym[pos].prev >= 0) enqueue(sym[pos].prev);
    enqueue(pos);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) w.out.push_back(sym[i].id);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const size_t bad = first_invalid_utf8(text);
  if (bad != std::string_view::npos) throw Error("invalid UTF-8 at byte " + std::to_string(bad));
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  Impl::Work w{out, WordCache::for_tokenizer(impl_->instance), {}, {}, {}, {}};
  impl_->encode_added(text, 0, w);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding and lookups

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.id_known.size() || !m.id_known[id])
      throw Error("decode: unknown token id " + std::to_string(id));
    if (skip_special && m.id_special[id]) continue;
    bytes += m.id_bytes[id];
  }
  return utf8_lossy(bytes);
}

void Tokenizer::for_each_word(std::string_view text,
                              const std::function<void(std::string_view)>& fn) const {
  const size_t bad = first_invalid_utf8(text);
  if (bad != std::string_view::npos) throw Error("invalid UTF-8 at byte " + std::to_string(bad));
  std::string normalized;
  std::vector<utf8proc_int32_t> scratch;
  if (impl_->nfc && nfc_append(text, normalized, scratch)) text = normalized;
  impl_->split_pieces(text, 0, fn);
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& alpha = byte_alphabet();
  std::string out;
  for (const char c : bytes) append_utf8(out, alpha.to_char[static_cast<unsigned char>(c)]);
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

// HF get_vocab_size(with_added_tokens = true): the model's entries plus the added tokens that
// are not among them.
size_t Tokenizer::vocab_size() const {
  size_t n = impl_->vocab.size();
  for (const auto& [token, id] : impl_->added_ids) n += !impl_->vocab.contains(token);
  return n;
}

}  // namespace hs
