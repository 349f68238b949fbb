// The diagnosis figure (layer x head heatmap of bos_mass with the classes marked, next to the
// histogram of bos_mass over all heads: the bimodality figure), and the drawing helpers the
// other figures share. Plain SVG 1.1, no scripts and no external resources, so it opens
// anywhere and embeds in papers.
#include "diagnose/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <tuple>

namespace hs {

namespace svg {

std::string fmt(const char* f, ...) {
  // Sized by a first pass: arguments may be user paths of any length.
  va_list ap, again;
  va_start(ap, f);
  va_copy(again, ap);
  const int n = std::vsnprintf(nullptr, 0, f, ap);
  va_end(ap);
  std::string s(size_t(std::max(n, 0)), '\0');
  std::vsnprintf(s.data(), s.size() + 1, f, again);
  va_end(again);
  return s;
}

std::string num(double v) {
  std::string s = fmt("%.1f", v);
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s == "-0" ? "0" : s;
}

namespace {

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

// Viridis at 0, 0.1, ..., 1.
constexpr std::array<Rgb, 11> kViridis = {{{68, 1, 84},
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

// Blue to red through near-white at -1, -0.75, ..., 1 (the usual red-blue diverging map).
constexpr std::array<Rgb, 9> kDiverging = {{{33, 102, 172},
                                            {67, 147, 195},
                                            {146, 197, 222},
                                            {209, 229, 240},
                                            {247, 247, 247},
                                            {253, 219, 199},
                                            {244, 165, 130},
                                            {214, 96, 77},
                                            {178, 24, 43}}};

// Linear interpolation between evenly spaced stops, f in [0, 1].
template <size_t N>
Rgb interpolate(const std::array<Rgb, N>& stops, double f) {
  const double x = std::clamp(f, 0.0, 1.0) * double(N - 1);
  const size_t i = std::min(N - 2, size_t(x));
  const double w = x - double(i);
  Rgb rgb{};
  for (size_t k = 0; k < 3; ++k)
    rgb[k] = int(std::lround(stops[i][k] * (1 - w) + stops[i + 1][k] * w));
  return rgb;
}

// A round step (1, 2 or 5 times a power of ten) giving about `intervals` intervals over span.
double nice_step(double span, int intervals) {
  const double raw = span / intervals;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

}  // namespace

std::string xml(const std::string& s, bool keep_breaks) {
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
    else if (keep_breaks && (c == '\n' || c == '\t'))
      out += c;
    else
      out += (c < 0x20 || c == 0x7f) ? ' ' : c;
  }
  return out;
}

Rgb viridis(double v) {
  if (std::isnan(v)) return {160, 160, 160};
  return interpolate(kViridis, v);
}

Rgb diverging(double v) {
  if (std::isnan(v)) return {160, 160, 160};
  return interpolate(kDiverging, (v + 1) / 2);
}

std::vector<Rgb> viridis_stops() { return {kViridis.begin(), kViridis.end()}; }
std::vector<Rgb> diverging_stops() { return {kDiverging.begin(), kDiverging.end()}; }

std::string hex(const Rgb& c) { return fmt("#%02x%02x%02x", c[0], c[1], c[2]); }

const char* ink(const Rgb& c) {
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 ? "#000" : "#fff";
}

int label_step(double cell, double gap) {
  for (int k = 1;; k *= 10)
    for (int m : {1, 2, 5})
      if (cell * k * m >= gap) return k * m;
}

int count_step(int max) {
  for (int k = 1;; k *= 10)
    for (int m : {1, 2, 5})
      if (max <= 5 * k * m) return k * m;
}

std::string text(double x, double y, const std::string& s, const std::string& extra) {
  return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"" + extra + ">" + s + "</text>\n";
}

std::string line(double x1, double y1, double x2, double y2, const std::string& extra) {
  return "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
         num(y2) + "\"" + extra + "/>\n";
}

std::string vertical_text(double x, double y, const std::string& s) {
  return text(x, y, s,
              " text-anchor=\"middle\" transform=\"rotate(-90 " + num(x) + " " + num(y) + ")\"");
}

double heatmap_cell(int layers, int heads, double max_w, double max_h) {
  return std::clamp(std::floor(std::min(max_w / std::max(heads, 1), max_h / std::max(layers, 1))),
                    8.0, 28.0);
}

std::string heatmap(const Heatmap& g, const std::function<HeatmapCell(int, int)>& cell_at) {
  const double cell = g.cell, hw = cell * g.heads, hh = cell * g.layers;
  std::string o;
  o += text(g.x, g.y - 44, xml(g.title), " font-size=\"13\" font-weight=\"bold\"");
  o += text(g.x + hw / 2, g.y - 22, "head index", " text-anchor=\"middle\"");
  const int hstep = label_step(cell, 7.0 * double(std::to_string(g.heads - 1).size()) + 6);
  for (int h = 0; h < g.heads; h += hstep)
    o += text(g.x + (h + 0.5) * cell, g.y - 5, std::to_string(h), " text-anchor=\"middle\"");
  const int lstep = label_step(cell, 13);
  for (int l = 0; l < g.layers; l += lstep)
    o += text(g.x - 5, g.y + (l + 0.5) * cell + 4, std::to_string(l), " text-anchor=\"end\"");
  o += vertical_text(g.x - 38, g.y + hh / 2, "layer");
  const std::string mark_size = num(cell * 0.62);
  // Thin white grid lines separate cells; thinner on small cells so they do not grey the map.
  const std::string grid_line = cell >= 14 ? "0.5" : "0.2";
  for (int l = 0; l < g.layers; ++l)
    for (int h = 0; h < g.heads; ++h) {
      const HeatmapCell c = cell_at(l, h);
      const double x = g.x + h * cell, y = g.y + l * cell;
      o += "<g><title>" + xml(c.tooltip) + "</title>";
      o += "<rect class=\"cell\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(cell) +
           "\" height=\"" + num(cell) + "\" fill=\"" + hex(c.fill) + "\" stroke=\"" +
           (c.outlined ? "#000" : "#fff") + "\" stroke-width=\"" +
           (c.outlined ? "1.5" : grid_line) + "\"/>";
      if (!c.mark.empty())
        o += "<text x=\"" + num(x + cell / 2) + "\" y=\"" + num(y + cell * 0.72) +
             "\" text-anchor=\"middle\" font-size=\"" + mark_size + "\" font-weight=\"bold\"" +
             " fill=\"" + ink(c.fill) + "\">" + xml(c.mark) + "</text>";
      o += "</g>\n";
    }
  return o;
}

std::string colour_bar(const ColourBar& b) {
  std::string o = "<defs><linearGradient id=\"" + b.id + "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  // The same stops as the cells, so SVG's linear interpolation gives the same scale.
  for (size_t i = 0; i < b.stops.size(); ++i)
    o += "<stop offset=\"" + num(double(i) / double(std::max<size_t>(b.stops.size() - 1, 1))) +
         "\" stop-color=\"" + hex(b.stops[i]) + "\"/>";
  o += "</linearGradient></defs>\n";
  o += "<rect x=\"" + num(b.x) + "\" y=\"" + num(b.y) + "\" width=\"" + num(b.w) + "\" height=\"" +
       num(b.h) + "\" fill=\"url(#" + b.id + ")\" stroke=\"#444\" stroke-width=\"0.5\"/>\n";
  for (const auto& [f, label] : b.ticks) {
    const double y = b.y + b.h * (1 - f);
    o += line(b.x + b.w, y, b.x + b.w + 4, y, " stroke=\"#444\"");
    o += text(b.x + b.w + 6, y + 4, xml(label));
  }
  for (double f : b.marks)
    if (f >= 0 && f <= 1)
      o += line(b.x - 3, b.y + b.h * (1 - f), b.x + b.w, b.y + b.h * (1 - f),
                " stroke=\"#e0301e\" stroke-width=\"1.5\"");
  o += text(b.x - 4, b.y - 8, xml(b.title));
  return o;
}

std::string bos_histogram(const Histogram& p, const Thresholds& t) {
  constexpr int kBins = 20;
  const size_t S = p.series.size();
  std::vector<std::array<int, kBins>> bins(S, std::array<int, kBins>{});
  int top = 0;
  for (size_t s = 0; s < S; ++s) {
    for (double v : p.series[s].values)
      if (!std::isnan(v))  // clamped as a double: a diagnosis file may hold any number
        ++bins[s][size_t(std::clamp(std::floor(v * kBins), 0.0, double(kBins - 1)))];
    top = std::max(top, *std::max_element(bins[s].begin(), bins[s].end()));
  }
  const int ystep = count_step(std::max(top, 1));
  const int ymax = std::max(1, (top + ystep - 1) / ystep) * ystep;
  auto X = [&](double v) { return p.x + p.w * v; };
  auto Y = [&](double c) { return p.y + p.h * (1 - c / ymax); };
  std::string o = text(p.x, p.y - 44, xml(p.title), " font-size=\"13\" font-weight=\"bold\"");
  const double slot = (p.w / kBins - 2) / double(std::max<size_t>(S, 1));
  for (size_t s = 0; s < S; ++s) {
    const std::string who = S > 1 ? xml(p.series[s].label) + " " : "";
    for (int i = 0; i < kBins; ++i) {
      const double lo = double(i) / kBins, hi = double(i + 1) / kBins;
      const int c = bins[s][size_t(i)];
      const std::string fill = S > 1 ? p.series[s].colour : hex(viridis((lo + hi) / 2));
      o += fmt(
          "<rect class=\"bar\" x=\"%s\" y=\"%s\" width=\"%s\" height=\"%s\" fill=\"%s\" "
          "stroke=\"#333\" stroke-width=\"0.5\"><title>%s%.2f–%.2f: %d head%s</title></rect>\n",
          num(X(lo) + 1 + slot * double(s)).c_str(), num(Y(c)).c_str(), num(slot).c_str(),
          num(p.y + p.h - Y(c)).c_str(), fill.c_str(), who.c_str(), lo, hi, c, c == 1 ? "" : "s");
    }
  }
  if (S > 1)  // legend between the title and the threshold labels
    for (size_t s = 0; s < S; ++s) {
      const double lx = p.x + 110 * double(s);
      o += "<rect x=\"" + num(lx) + "\" y=\"" + num(p.y - 34) +
           "\" width=\"10\" height=\"10\" fill=\"" + p.series[s].colour +
           "\" stroke=\"#333\" stroke-width=\"0.5\"/>";
      o += text(lx + 14, p.y - 25, xml(p.series[s].label));
    }
  o += line(p.x, p.y + p.h, p.x + p.w, p.y + p.h, " stroke=\"#000\"");
  o += line(p.x, p.y, p.x, p.y + p.h, " stroke=\"#000\"");
  for (int i = 0; i <= 10; ++i) {
    o += line(X(i / 10.0), p.y + p.h, X(i / 10.0), p.y + p.h + 4, " stroke=\"#000\"");
    o += text(X(i / 10.0), p.y + p.h + 16, fmt("%.1f", i / 10.0), " text-anchor=\"middle\"");
  }
  for (int c = 0; c <= ymax; c += ystep) {
    o += line(p.x - 4, Y(c), p.x, Y(c), " stroke=\"#000\"");
    o += text(p.x - 6, Y(c) + 4, std::to_string(c), " text-anchor=\"end\"");
  }
  o += text(p.x + p.w / 2, p.y + p.h + 34, "bos_mass (attention on the first token)",
            " text-anchor=\"middle\"");
  o += vertical_text(p.x - 40, p.y + p.h / 2, "heads");
  // Threshold lines; the sink label sits left of its line and the dead label right, so they do
  // not collide when the thresholds are close.
  for (const auto& [v, name, anchor, dx] :
       {std::tuple{t.sink, "sink", "end", -3.0}, std::tuple{t.dead, "dead", "start", 3.0}})
    if (v >= 0 && v <= 1) {
      o += line(X(v), p.y + p.h, X(v), p.y - 6,
                " class=\"threshold\" stroke=\"#e0301e\" stroke-width=\"1.5\" "
                "stroke-dasharray=\"5 4\"");
      o += text(X(v) + dx, p.y - 2, fmt("%s %g", name, v),
                std::string(" text-anchor=\"") + anchor + "\" fill=\"#e0301e\"");
    }
  return o;
}

std::string line_chart(const LineChart& c) {
  const double left = 64, right = 16, top = 48, bottom = 44;
  const double pw = c.width - left - right, ph = c.height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = c.from_zero ? 0 : INFINITY, y1 = -INFINITY;
  for (const LineSeries& s : c.series)
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        x0 = std::min(x0, x), x1 = std::max(x1, x);
        y0 = std::min(y0, y), y1 = std::max(y1, y);
      }
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" +
                  num(c.width) + "\" height=\"" + num(c.height) + "\" viewBox=\"0 0 " +
                  num(c.width) + " " + num(c.height) +
                  "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  o += text(left, 20, xml(c.title), " font-size=\"13\" font-weight=\"bold\"");
  if (!(x0 <= x1)) {
    o += text(left + pw / 2, top + ph / 2, "no data", " text-anchor=\"middle\" fill=\"#666\"");
    return o + "</svg>\n";
  }
  // One point (or a flat series) still gets a readable axis around it.
  if (x1 == x0) x0 -= 1, x1 += 1;
  if (y1 == y0) y1 = y0 + std::max(std::abs(y0) * 0.1, 1.0);
  const double xs = nice_step(x1 - x0, 5), ys = nice_step(y1 - y0, 4);
  x0 = std::floor(x0 / xs) * xs, x1 = std::ceil(x1 / xs) * xs;
  y0 = std::floor(y0 / ys) * ys, y1 = std::ceil(y1 / ys) * ys;
  auto X = [&](double v) { return left + pw * (v - x0) / (x1 - x0); };
  auto Y = [&](double v) { return top + ph * (1 - (v - y0) / (y1 - y0)); };
  for (double v = y0; v <= y1 + ys / 2; v += ys) {
    o += line(left, Y(v), left + pw, Y(v), " stroke=\"#e4e4e4\"");
    o += text(left - 6, Y(v) + 4, fmt("%g", v), " text-anchor=\"end\"");
  }
  for (double v = x0; v <= x1 + xs / 2; v += xs) {
    o += line(X(v), top + ph, X(v), top + ph + 4, " stroke=\"#000\"");
    o += text(X(v), top + ph + 16, fmt("%g", v), " text-anchor=\"middle\"");
  }
  o += line(left, top + ph, left + pw, top + ph, " stroke=\"#000\"");
  o += line(left, top, left, top + ph, " stroke=\"#000\"");
  o += text(left + pw / 2, top + ph + 34, xml(c.x_label), " text-anchor=\"middle\"");
  o += vertical_text(16, top + ph / 2, xml(c.y_label));
  double lx = left + pw;  // legend right-aligned above the plot
  for (auto s = c.series.rbegin(); s != c.series.rend(); ++s) {
    lx -= 30 + 6.5 * double(s->label.size());
    o += line(lx, 34, lx + 20, 34,
              " stroke=\"" + s->colour + "\" stroke-width=\"2\"" +
                  (s->dashed ? " stroke-dasharray=\"5 3\"" : ""));
    o += text(lx + 24, 38, xml(s->label));
  }
  for (const LineSeries& s : c.series) {
    std::string pts;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        if (!pts.empty()) pts += ' ';
        pts += num(X(x)) + "," + num(Y(y));
      }
    o += "<polyline class=\"series\" points=\"" + pts + "\" fill=\"none\" stroke=\"" + s.colour +
         "\" stroke-width=\"2\"" + (s.dashed ? " stroke-dasharray=\"5 3\"" : "") + "/>\n";
    if (s.dashed) continue;  // reference lines carry no markers
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y))
        o += "<circle cx=\"" + num(X(x)) + "\" cy=\"" + num(Y(y)) + "\" r=\"3\" fill=\"" +
             s.colour + "\"><title>" + xml(s.label) + fmt(": step %g, %.5g", x, y) +
             "</title></circle>\n";
  }
  return o + "</svg>\n";
}

}  // namespace svg

using namespace svg;

std::string render_svg(const Diagnosis& d) {
  check_consistent(d);
  const Thresholds& t = d.thresholds;
  const Summary s = summarize(d);
  const Band b = detect_band(d);
  const int L = d.layers, H = d.heads;

  const double cell = heatmap_cell(L, H, 720, 640);
  const double hx = 70, hy = 112;  // heatmap origin: room for layer labels, head labels, titles
  const double hw = cell * H, hh = cell * L;
  const double cbx = hx + hw + 20, cbw = 14, cbh = std::clamp(hh, 140.0, 320.0);
  const double px = cbx + cbw + 100, py = hy, pw = 400;  // histogram plot area
  const double ph = std::clamp(hh / 2, 220.0, 320.0);
  const double legend_y = hy + std::max(hh, cbh) + 28;
  const double width = std::max(px + pw + 70, 20 + 8.5 * double(d.model.size()));
  const double height = std::max(legend_y + 56, py + ph + 60);

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + num(width) +
       "\" height=\"" + num(height) + "\" viewBox=\"0 0 " + num(width) + " " + num(height) +
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
  o += heatmap({hx, hy, cell, L, H, "bos_mass per head"}, [&](int l, int h) {
    const HeadMetrics& m = d.at(l, h);
    const HeadClass c = classify(m, t);
    return HeatmapCell{viridis(m.bos_mass),
                       fmt("L%d H%d bos %.2f %s%s%s (entropy %.2f, local %.2f)", l, h, m.bos_mass,
                           class_name(c), is_sick(c) ? "" : " ",
                           is_sick(c) ? "" : healthy_pattern(m, t), m.entropy, m.local_mass),
                       is_sick(c) ? std::string(1, class_letter(c)) : ""};
  });
  if (b.found)
    o += "<rect class=\"band\" x=\"" + num(hx + b.first * cell - 1.5) + "\" y=\"" +
         num(hy + b.layer_first * cell - 1.5) + "\" width=\"" +
         num((b.last - b.first + 1) * cell + 3) + "\" height=\"" +
         num((b.layer_last - b.layer_first + 1) * cell + 3) +
         "\" fill=\"none\" stroke=\"#e0301e\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\n";
  o += "</g>\n";

  ColourBar bar{"hs-bos-scale",  "bos_mass", cbx, hy, cbw, cbh, viridis_stops(), {},
                {t.sink, t.dead}};
  for (int i = 0; i <= 4; ++i) bar.ticks.push_back({i / 4.0, fmt("%.2f", i / 4.0)});
  o += "<g id=\"colorbar\">\n" + colour_bar(bar) + "</g>\n";

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

  // Panel 2: histogram of bos_mass.
  Histogram hist{px, py, pw, ph, fmt("bos_mass over all %zu heads", d.metrics.size()), {}};
  hist.series.push_back({"", "", {}});
  for (const HeadMetrics& m : d.metrics) hist.series[0].values.push_back(m.bos_mass);
  o += "<g id=\"histogram\">\n" + bos_histogram(hist, t) + "</g>\n</svg>\n";
  return o;
}

}  // namespace hs
