// The diagnosis figure: layer x head heatmap of bos_mass with the classes marked, next to the
// histogram of bos_mass over all heads (the bimodality figure). Plain SVG 1.1, no scripts and
// no external resources, so it opens anywhere and embeds in papers.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <tuple>

#include "diagnose/diagnosis.h"

namespace hs {

namespace {

[[gnu::format(printf, 1, 2)]] std::string fmt(const char* f, ...);
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Coordinates with one decimal, "12" rather than "12.0".
std::string n(double v) {
  std::string s = fmt("%.1f", v);
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s == "-0" ? "0" : s;
}

// Length of the UTF-8 sequence at s[i], 0 when it is not valid (truncated, overlong, a
// surrogate, or beyond U+10FFFF).
size_t utf8_length(const std::string& s, size_t i) {
  const unsigned char c = (unsigned char)s[i];
  const size_t len = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xE  ? 3
                     : (c >> 3) == 0x1E ? 4
                                        : 0;
  if (len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k)
    if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
  const unsigned char c1 = len > 1 ? (unsigned char)s[i + 1] : 0;
  if ((len == 2 && c < 0xC2) || (c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0) ||
      (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90) || c > 0xF4)
    return 0;
  return len;
}

// Text for XML: escaped, and valid UTF-8 without the control characters XML 1.0 forbids
// (a model name comes from the command line and may hold anything).
std::string xml(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_length(s, i);
    if (len != 1) {
      out += len ? s.substr(i, len) : "\xEF\xBF\xBD";  // U+FFFD for invalid bytes
      i += std::max<size_t>(len, 1);
      continue;
    }
    const char c = s[i++];
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else if (c == '\'')
      out += "&apos;";
    else
      out += (c < 0x20 || c == 0x7f) ? ' ' : c;
  }
  return out;
}

// Viridis at 0, 0.1, ..., 1: perceptually uniform, readable in grey and by colour-blind readers.
constexpr std::array<std::array<int, 3>, 11> kViridis = {{{68, 1, 84},
                                                          {72, 36, 117},
                                                          {65, 68, 135},
                                                          {53, 95, 141},
                                                          {42, 120, 142},
                                                          {33, 145, 140},
                                                          {34, 168, 132},
                                                          {68, 191, 112},
                                                          {122, 209, 81},
                                                          {189, 223, 38},
                                                          {253, 231, 37}}};

std::array<int, 3> colour(double v) {
  if (std::isnan(v)) return {160, 160, 160};
  const double x = std::clamp(v, 0.0, 1.0) * 10;
  const int i = std::min(9, int(x));
  const double f = x - i;
  std::array<int, 3> rgb{};
  for (int k = 0; k < 3; ++k)
    rgb[size_t(k)] = int(std::lround(kViridis[size_t(i)][size_t(k)] * (1 - f) +
                                     kViridis[size_t(i) + 1][size_t(k)] * f));
  return rgb;
}

std::string hex(const std::array<int, 3>& c) { return fmt("#%02x%02x%02x", c[0], c[1], c[2]); }

// Dark letters on the bright end of the scale, white ones on the dark end.
const char* ink(const std::array<int, 3>& c) {
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 ? "#000" : "#fff";
}

// Label every k-th index, k from 1, 2, 5, 10, 20, ... so labels sit at least `gap` px apart.
int label_step(double cell, double gap) {
  for (int k = 1;; k *= 10)
    for (int m : {1, 2, 5})
      if (cell * k * m >= gap) return k * m;
}

// A round tick step giving at most five intervals up to `max`.
int count_step(int max) {
  for (int k = 1;; k *= 10)
    for (int m : {1, 2, 5})
      if (max <= 5 * k * m) return k * m;
}

std::string text(double x, double y, const std::string& s, const char* extra = "") {
  return "<text x=\"" + n(x) + "\" y=\"" + n(y) + "\"" + extra + ">" + s + "</text>\n";
}

std::string line(double x1, double y1, double x2, double y2, const char* extra) {
  return "<line x1=\"" + n(x1) + "\" y1=\"" + n(y1) + "\" x2=\"" + n(x2) + "\" y2=\"" + n(y2) +
         "\"" + extra + "/>\n";
}

}  // namespace

std::string render_svg(const Diagnosis& d) {
  check_consistent(d);
  const Thresholds& t = d.thresholds;
  const Summary s = summarize(d);
  const Band b = detect_band(d);
  const int L = d.layers, H = d.heads;

  // Cells shrink with the model but not below 8 px: 112 heads x 70 layers is 896 x 560, and the
  // letters stay legible when zoomed since everything is vector.
  const double cell =
      std::clamp(std::floor(std::min(720.0 / std::max(H, 1), 640.0 / std::max(L, 1))), 8.0, 28.0);
  const double hx = 70, hy = 112;  // heatmap origin: room for layer labels, head labels, titles
  const double hw = cell * H, hh = cell * L;
  const double cbx = hx + hw + 20, cbw = 14, cbh = std::clamp(hh, 140.0, 320.0);
  const double px = cbx + cbw + 100, py = hy, pw = 400;  // histogram plot area
  const double ph = std::clamp(hh / 2, 220.0, 320.0);
  const double legend_y = hy + std::max(hh, cbh) + 28;
  const double width = std::max(px + pw + 70, 20 + 8.5 * double(d.model.size()));
  const double height = std::max(legend_y + 56, py + ph + 60);

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + n(width) +
       "\" height=\"" + n(height) + "\" viewBox=\"0 0 " + n(width) + " " + n(height) +
       "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n";
  o += "<title>headsurgeon diagnosis: " + xml(d.model) + "</title>\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  o += text(20, 30, xml(d.model), " font-size=\"17\" font-weight=\"bold\"");
  o += text(20, 50,
            fmt("%d layers × %d heads: %d healthy, %d bos-sink, %d dead, %d low-entropy "
                "(%.1f%% operational)",
                L, H, s.healthy, s.bos_sink, s.dead, s.low_entropy, 100.0 * s.operational_fraction),
            " font-size=\"13\"");

  // Panel 1: heatmap, rows = layers top to bottom, columns = head index.
  o += "<g id=\"heatmap\">\n";
  o += text(hx, hy - 44, "bos_mass per head", " font-size=\"13\" font-weight=\"bold\"");
  o += text(hx + hw / 2, hy - 22, "head index", " text-anchor=\"middle\"");
  const int hstep = label_step(cell, 7.0 * double(std::to_string(H - 1).size()) + 6);
  for (int h = 0; h < H; h += hstep)
    o += text(hx + (h + 0.5) * cell, hy - 5, std::to_string(h), " text-anchor=\"middle\"");
  const int lstep = label_step(cell, 13);
  for (int l = 0; l < L; l += lstep)
    o += text(hx - 5, hy + (l + 0.5) * cell + 4, std::to_string(l), " text-anchor=\"end\"");
  o += text(hx - 38, hy + hh / 2, "layer",
            (" text-anchor=\"middle\" transform=\"rotate(-90 " + n(hx - 38) + " " + n(hy + hh / 2) +
             ")\"")
                .c_str());
  const std::string letter_size = n(cell * 0.62);
  // Thin white grid lines separate cells; thinner on small cells so they do not grey the map.
  const std::string grid_line = cell >= 14 ? "0.5" : "0.2";
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h) {
      const HeadMetrics& m = d.at(l, h);
      const HeadClass c = classify(m, t);
      const auto rgb = colour(m.bos_mass);
      const double x = hx + h * cell, y = hy + l * cell;
      o += fmt("<g><title>L%d H%d bos %.2f %s%s%s (entropy %.2f, local %.2f)</title>", l, h,
               m.bos_mass, class_name(c), is_sick(c) ? "" : " ",
               is_sick(c) ? "" : healthy_pattern(m, t), m.entropy, m.local_mass);
      o += "<rect class=\"cell\" x=\"" + n(x) + "\" y=\"" + n(y) + "\" width=\"" + n(cell) +
           "\" height=\"" + n(cell) + "\" fill=\"" + hex(rgb) +
           "\" stroke=\"#fff\" stroke-width=\"" + grid_line + "\"/>";
      if (is_sick(c))
        o += "<text x=\"" + n(x + cell / 2) + "\" y=\"" + n(y + cell * 0.72) +
             "\" text-anchor=\"middle\" font-size=\"" + letter_size + "\" font-weight=\"bold\"" +
             " fill=\"" + ink(rgb) + "\">" + class_letter(c) + "</text>";
      o += "</g>\n";
    }
  if (b.found)
    o += "<rect class=\"band\" x=\"" + n(hx + b.first * cell - 1.5) + "\" y=\"" +
         n(hy + b.layer_first * cell - 1.5) + "\" width=\"" + n((b.last - b.first + 1) * cell + 3) +
         "\" height=\"" + n((b.layer_last - b.layer_first + 1) * cell + 3) +
         "\" fill=\"none\" stroke=\"#e0301e\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n";
  o += "</g>\n";

  // Colour bar: the same stops as the cells, so SVG's linear interpolation gives the same scale.
  o += "<g id=\"colorbar\">\n<defs><linearGradient id=\"hs-bos-scale\" x1=\"0\" y1=\"1\" x2=\"0\" "
       "y2=\"0\">";
  for (size_t i = 0; i < kViridis.size(); ++i)
    o += "<stop offset=\"" + n(double(i) / 10) + "\" stop-color=\"" + hex(kViridis[i]) + "\"/>";
  o += "</linearGradient></defs>\n";
  o += "<rect x=\"" + n(cbx) + "\" y=\"" + n(hy) + "\" width=\"" + n(cbw) + "\" height=\"" +
       n(cbh) + "\" fill=\"url(#hs-bos-scale)\" stroke=\"#444\" stroke-width=\"0.5\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = hy + cbh * (1 - i / 4.0);
    o += line(cbx + cbw, y, cbx + cbw + 4, y, " stroke=\"#444\"");
    o += text(cbx + cbw + 6, y + 4, fmt("%.2f", i / 4.0));
  }
  for (double v : {t.sink, t.dead})  // where the classes start on the scale
    if (v >= 0 && v <= 1)
      o += line(cbx - 3, hy + cbh * (1 - v), cbx + cbw, hy + cbh * (1 - v),
                " stroke=\"#e0301e\" stroke-width=\"1.5\"");
  o += text(cbx - 4, hy - 8, "bos_mass");
  o += "</g>\n";

  // Legend under the heatmap.
  o += text(hx - 60, legend_y,
            xml("letters: S = BOS-sink (" + fmt("%g", t.sink) + " < bos_mass ≤ " +
                fmt("%g", t.dead) + "), D = DEAD (bos_mass > " + fmt("%g", t.dead) + "),"));
  // Two lines: one would run under the histogram panel for small models.
  o += text(hx - 60, legend_y + 16,
            xml("E = low-entropy (entropy < " + fmt("%g", t.low_entropy) + "), none = healthy"));
  o += text(hx - 60, legend_y + 32,
            b.found ? xml(fmt("red dashed box: sick band, heads %d–%d, layers %d–%d (sick in ≥ %g "
                              "of the layers)",
                              b.first, b.last, b.layer_first, b.layer_last, t.band))
                    : xml(fmt("no sick band (no head index sick in ≥ %g of the layers)", t.band)));

  // Panel 2: histogram of bos_mass, 20 bins over [0, 1]; values outside land in the end bins.
  constexpr int kBins = 20;
  std::array<int, kBins> bins{};
  for (const HeadMetrics& m : d.metrics)
    if (!std::isnan(m.bos_mass))
      ++bins[size_t(std::clamp(int(std::floor(m.bos_mass * kBins)), 0, kBins - 1))];
  const int top = *std::max_element(bins.begin(), bins.end());
  const int ystep = count_step(std::max(top, 1));
  const int ymax = std::max(1, (top + ystep - 1) / ystep) * ystep;
  auto X = [&](double v) { return px + pw * v; };
  auto Y = [&](double c) { return py + ph * (1 - c / ymax); };
  o += "<g id=\"histogram\">\n";
  o += text(px, hy - 44, fmt("bos_mass over all %zu heads", d.metrics.size()),
            " font-size=\"13\" font-weight=\"bold\"");
  for (int i = 0; i < kBins; ++i) {
    const double lo = double(i) / kBins, hi = double(i + 1) / kBins;
    o +=
        fmt("<rect class=\"bar\" x=\"%s\" y=\"%s\" width=\"%s\" height=\"%s\" fill=\"%s\" "
            "stroke=\"#333\" stroke-width=\"0.5\"><title>%.2f–%.2f: %d head%s</title></rect>\n",
            n(X(lo) + 1).c_str(), n(Y(bins[size_t(i)])).c_str(), n(pw / kBins - 2).c_str(),
            n(py + ph - Y(bins[size_t(i)])).c_str(), hex(colour((lo + hi) / 2)).c_str(), lo, hi,
            bins[size_t(i)], bins[size_t(i)] == 1 ? "" : "s");
  }
  o += line(px, py + ph, px + pw, py + ph, " stroke=\"#000\"");
  o += line(px, py, px, py + ph, " stroke=\"#000\"");
  for (int i = 0; i <= 10; ++i) {
    o += line(X(i / 10.0), py + ph, X(i / 10.0), py + ph + 4, " stroke=\"#000\"");
    o += text(X(i / 10.0), py + ph + 16, fmt("%.1f", i / 10.0), " text-anchor=\"middle\"");
  }
  for (int c = 0; c <= ymax; c += ystep) {
    o += line(px - 4, Y(c), px, Y(c), " stroke=\"#000\"");
    o += text(px - 6, Y(c) + 4, std::to_string(c), " text-anchor=\"end\"");
  }
  o += text(px + pw / 2, py + ph + 34, "bos_mass (attention on the first token)",
            " text-anchor=\"middle\"");
  o += text(px - 40, py + ph / 2, "heads",
            (" text-anchor=\"middle\" transform=\"rotate(-90 " + n(px - 40) + " " + n(py + ph / 2) +
             ")\"")
                .c_str());
  // Threshold lines; the sink label sits left of its line and the dead label right, so they do
  // not collide when the thresholds are close.
  for (const auto& [v, name, anchor, dx] :
       {std::tuple{t.sink, "sink", "end", -3.0}, std::tuple{t.dead, "dead", "start", 3.0}})
    if (v >= 0 && v <= 1) {
      o += line(X(v), py + ph, X(v), py - 6,
                " class=\"threshold\" stroke=\"#e0301e\" stroke-width=\"1.5\" "
                "stroke-dasharray=\"5 4\"");
      o += text(X(v) + dx, py - 2, fmt("%s %g", name, v),
                (std::string(" text-anchor=\"") + anchor + "\" fill=\"#e0301e\"").c_str());
    }
  o += "</g>\n</svg>\n";
  return o;
}

}  // namespace hs
