// The terminal report of `headsurgeon diagnose`: laid out for a researcher reading a terminal,
// with lines of at most kWidth columns whatever the number of heads.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "diagnose/diagnosis.h"

namespace hs {

namespace {

constexpr size_t kWidth = 100;
constexpr size_t kMaxPromptLines = 3;
constexpr int kGridLabel = 16;  // "  sick fraction "

[[gnu::format(printf, 1, 2)]] std::string fmt(const char* f, ...);
std::string fmt(const char* f, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Terminal columns of UTF-8 text: one per code point (only prompts could hold wide characters).
size_t columns(const std::string& s) {
  return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// User text on one line, without control characters that would move the cursor or colour the
// terminal; whitespace runs collapse to one space.
std::string one_line(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    const bool space = c < 0x20 || c == 0x7f || c == ' ';
    if (!space)
      out += char(c);
    else if (!out.empty() && out.back() != ' ')
      out += ' ';
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// At most `cols` columns, cut at a code point boundary, "…" marking the cut.
std::string truncate(const std::string& s, size_t cols) {
  if (columns(s) <= cols) return s;
  std::string out;
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((s[i] & 0xC0) != 0x80 && ++n == cols) break;
    out += s[i];
  }
  return out + "…";
}

// Thresholds as typed: "0.50" for the usual two decimals, all digits otherwise.
std::string threshold(double x) {
  const std::string two = fmt("%.2f", x);
  return std::strtod(two.c_str(), nullptr) == x ? two : fmt("%g", x);
}

// bos_mass in the sick list: ".82", "1.0" when it rounds to one.
std::string short_mass(double x) {
  const std::string s = fmt("%.2f", x);
  if (s.rfind("0.", 0) == 0) return s.substr(1);
  return s == "1.00" ? "1.0" : s;
}

std::string header(const Diagnosis& d) {
  const size_t n = d.prompts.size();
  std::string toks;
  if (n <= 4) {
    for (size_t i = 0; i < n; ++i) toks += (i ? ", " : "") + std::to_string(d.tokens[i]);
  } else {
    const auto [lo, hi] = std::minmax_element(d.tokens.begin(), d.tokens.end());
    toks = std::to_string(*lo) + "–" + std::to_string(*hi);
  }
  const std::string model = one_line(d.model);
  const std::string shape = std::to_string(d.layers) + " layers × " + std::to_string(d.heads) +
                            " heads, " + std::to_string(n) + (n == 1 ? " prompt" : " prompts") +
                            (n ? " (" + toks + " tokens)" : "") +
                            (d.bos ? ", <s> prepended" : ", no <s> prepended");
  // A long model path gets a line of its own rather than pushing the facts off screen.
  std::string out = columns(model) + 2 + columns(shape) <= kWidth ? model + ": " + shape + "\n"
                                                                  : model + "\n  " + shape + "\n";
  for (size_t i = 0; i < std::min(n, kMaxPromptLines); ++i) {
    const std::string lead = fmt("  prompt %zu (%d tokens): \"", i + 1, d.tokens[i]);
    out += lead + truncate(one_line(d.prompts[i]), kWidth - columns(lead) - 1) + "\"\n";
  }
  if (n > kMaxPromptLines) out += fmt("  … and %zu more prompts\n", n - kMaxPromptLines);
  return out;
}

std::string legend(const Thresholds& t) {
  return "legend: S = BOS-sink (" + threshold(t.sink) + " < bos_mass ≤ " + threshold(t.dead) +
         "), D = DEAD (bos_mass > " + threshold(t.dead) + "),\n" +
         "        E = low-entropy (bos_mass ≤ " + threshold(t.sink) + " and entropy < " +
         threshold(t.low_entropy) + " nats);\n" +
         "        H9:S.82 = head 9, BOS-sink, bos_mass 0.82; healthy heads are local when " +
         "local_mass > " + threshold(t.local) + "\n";
}

std::string layer_table(const Diagnosis& d, const Summary& s) {
  const int lw = std::max(5, int(std::to_string(d.layers - 1).size()));
  auto row = [&](const std::string& label, int healthy, int sink, int dead, int low) {
    return fmt("%*s  %7d  %4d  %4d  %7d", lw, label.c_str(), healthy, sink, dead, low);
  };
  // Short headers leave room for seven sick heads on a line; the legend spells the classes out.
  std::string out = fmt("%*s  %7s  %4s  %4s  %7s  sick heads\n", lw, "layer", "healthy", "sink",
                        "dead", "low-ent");
  for (int l = 0; l < d.layers; ++l) {
    int count[4] = {0, 0, 0, 0};
    std::vector<std::string> sick;
    for (int h = 0; h < d.heads; ++h) {
      const HeadClass c = d.class_of(l, h);
      ++count[int(c)];
      if (!is_sick(c)) continue;
      std::string item = fmt("H%d:%c", h, class_letter(c));
      if (c != HeadClass::LowEntropy) item += short_mass(d.at(l, h).bos_mass);
      sick.push_back(std::move(item));
    }
    std::string line =
        row(std::to_string(l), count[int(HeadClass::Healthy)], count[int(HeadClass::BosSink)],
            count[int(HeadClass::Dead)], count[int(HeadClass::LowEntropy)]);
    // Wrapped lines continue under the first sick head.
    const size_t indent = line.size() + 2;
    std::string cur = line + (sick.empty() ? "" : "  ");
    for (size_t i = 0; i < sick.size(); ++i) {
      if (i > 0 && cur.size() + 1 + sick[i].size() > kWidth) {
        out += cur + "\n";
        cur = std::string(indent, ' ');
      } else if (i > 0) {
        cur += ' ';
      }
      cur += sick[i];
    }
    out += cur + "\n";
  }
  out += fmt("%s  -------  ----  ----  -------\n", std::string(size_t(lw), '-').c_str());
  out += row("total", s.healthy, s.bos_sink, s.dead, s.low_entropy) + "\n";
  return out;
}

std::string band_line(const Diagnosis& d, const Band& b) {
  const std::string th = threshold(d.thresholds.band);
  if (!b.found) return "no sick band (no head index is sick in ≥ " + th + " of the layers)\n";
  const std::string heads =
      b.first == b.last ? fmt("head H%d", b.first) : fmt("heads H%d–H%d", b.first, b.last);
  const std::string layers = b.layer_first == b.layer_last
                                 ? fmt("layer %d", b.layer_first)
                                 : fmt("layers %d–%d", b.layer_first, b.layer_last);
  return "sick band: " + heads + " (fraction of sick layers ≥ " + th + "), " + layers + "\n";
}

// Sick fraction and slope per head index, in aligned columns so they read against each other.
std::string per_index_grid(const Diagnosis& d, const Band& b) {
  // Values carry a trailing mark column ("0.83*"), so each column is cw + 2 wide: a space, the
  // value right-aligned in cw, the mark; head labels end where the values' digits end.
  std::vector<std::string> frac, slope;
  size_t cw = std::to_string(d.heads - 1).size() + 1;  // "H15"
  for (int h = 0; h < d.heads; ++h) {
    const bool in_band = b.found && h >= b.first && h <= b.last;
    frac.push_back(fmt("%.2f", b.per_index_sick_fraction[size_t(h)]) + (in_band ? "*" : " "));
    slope.push_back(fmt("%.4g", d.slopes[size_t(h)]) + " ");
    cw = std::max({cw, frac.back().size() - 1, slope.back().size() - 1});
  }
  // Eight per row when they fit, so power-of-two head counts fill whole rows.
  const int per_row = std::clamp(int(kWidth - kGridLabel) / int(cw + 2), 1, 8);
  std::string out =
      fmt("per head index (sick fraction = sick layers / %d; * = in the sick band):\n", d.layers);
  for (int h0 = 0; h0 < d.heads; h0 += per_row) {
    const int h1 = std::min(d.heads, h0 + per_row);
    auto label = [](const char* name) { return fmt("  %-*s", kGridLabel - 2, name); };
    std::string head = label("head"), fr = label("sick fraction"), sl = label("ALiBi slope");
    for (int h = h0; h < h1; ++h) {
      head += fmt(" %*s ", int(cw), fmt("H%d", h).c_str());
      fr += fmt(" %*s", int(cw) + 1, frac[size_t(h)].c_str());
      sl += fmt(" %*s", int(cw) + 1, slope[size_t(h)].c_str());
    }
    for (std::string* s : {&head, &fr, &sl}) {
      while (!s->empty() && s->back() == ' ') s->pop_back();
      out += *s + "\n";
    }
  }
  return out;
}

std::string spread_note(const Diagnosis& d) {
  if (d.prompts.size() < 2 || d.metrics.empty()) return "";
  const auto it = std::max_element(
      d.metrics.begin(), d.metrics.end(),
      [](const HeadMetrics& a, const HeadMetrics& b) { return a.bos_mass_std < b.bos_mass_std; });
  const size_t k = size_t(it - d.metrics.begin());
  return fmt("bos_mass spread over %zu prompts: largest std %.3f at L%zu H%zu (mean %.2f)\n",
             d.prompts.size(), it->bos_mass_std, k / size_t(d.heads), k % size_t(d.heads),
             it->bos_mass);
}

}  // namespace

std::string render_table(const Diagnosis& d) {
  check_consistent(d);
  const Summary s = summarize(d);
  const Band b = detect_band(d);
  int local = 0;
  for (const HeadMetrics& m : d.metrics)
    if (!is_sick(classify(m, d.thresholds)) &&
        std::string_view(healthy_pattern(m, d.thresholds)) == "local")
      ++local;

  std::string out = header(d) + legend(d.thresholds) + "\n" + layer_table(d, s) + "\n";
  out += fmt("operational: %.1f%% of heads healthy (%d of %zu: %d local, %d distributed)\n",
             100.0 * s.operational_fraction, s.healthy, d.metrics.size(), local, s.healthy - local);
  out += band_line(d, b) + per_index_grid(d, b) + spread_note(d);
  return out;
}

}  // namespace hs
