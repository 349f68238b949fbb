// Drawing helpers shared by the figures (the diagnosis, drift between two diagnoses, the repair
// run report): number formatting, XML escaping, colour scales, heatmap/histogram/colour-bar
// panels and line charts. Everything is plain SVG 1.1 without scripts or external resources.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "diagnose/diagnosis.h"

namespace hs::svg {

[[gnu::format(printf, 1, 2)]] std::string fmt(const char* f, ...);
// Coordinates with one decimal, "12" rather than "12.0".
std::string num(double v);
// Text for XML and HTML: escaped, valid UTF-8 (invalid bytes become U+FFFD), control characters
// as spaces; with keep_breaks, newlines and tabs are kept (generated text shown preformatted).
std::string xml(const std::string& s, bool keep_breaks = false);

using Rgb = std::array<int, 3>;
// Viridis over [0, 1] (clamped): perceptually uniform, readable in grey and by colour-blind
// readers. NaN is grey.
Rgb viridis(double v);
// Blue (-1) through near-white (0) to red (+1), clamped; for signed changes. NaN is grey.
Rgb diverging(double v);
// The scales' stops, evenly spaced from their low end to their high end (for colour bars).
std::vector<Rgb> viridis_stops();
std::vector<Rgb> diverging_stops();
std::string hex(const Rgb& c);
// Black text on light colours, white on dark ones.
const char* ink(const Rgb& c);

// Label every k-th index, k from 1, 2, 5, 10, 20, ... so labels sit at least `gap` px apart.
int label_step(double cell, double gap);
// A round tick step giving at most five intervals up to `max`.
int count_step(int max);

std::string text(double x, double y, const std::string& s, const std::string& extra = "");
std::string line(double x1, double y1, double x2, double y2, const std::string& extra);
// Text rotated to run upwards, centred on (x, y): vertical axis titles.
std::string vertical_text(double x, double y, const std::string& s);

// Cell size for a layers x heads grid within max_w x max_h: never below 8 px (112 heads x 70
// layers is 896 x 560) nor above 28 px; everything is vector, so small cells zoom cleanly.
double heatmap_cell(int layers, int heads, double max_w, double max_h);

struct HeatmapCell {
  Rgb fill;
  std::string tooltip;  // plain text, escaped here
  std::string mark;     // drawn in the cell (class letter, "T", ...), empty for none
  bool outlined = false;
};

// Layer x head grid: rows are layers top to bottom, columns head indices, with index labels
// and a title 44 px above the origin (x, y) of the cells. Cells are <rect class="cell">.
struct Heatmap {
  double x = 0, y = 0, cell = 10;
  int layers = 0, heads = 0;
  std::string title;  // escaped here
};
std::string heatmap(const Heatmap& g, const std::function<HeatmapCell(int, int)>& cell);

// Vertical colour bar: `stops` evenly spaced from the bottom to the top, ticks at fractions of
// the height (0 = bottom) with their labels, and red marks at `marks` (fractions too). The
// gradient id must be unique within the document (several figures may share an HTML page).
struct ColourBar {
  std::string id, title;
  double x = 0, y = 0, w = 14, h = 140;
  std::vector<Rgb> stops;
  std::vector<std::pair<double, std::string>> ticks;
  std::vector<double> marks;
};
std::string colour_bar(const ColourBar& b);

// Histogram of bos_mass in 20 bins over [0, 1] (values outside land in the end bins) with the
// sink and dead thresholds dashed. One series: bars coloured by the bos_mass scale, as in the
// diagnosis figure; several: side by side in each bin in their colours, with a legend.
struct HistogramSeries {
  std::string label, colour;
  std::vector<double> values;
};
struct Histogram {
  double x = 0, y = 0, w = 400, h = 220;  // plot area
  std::string title;                      // escaped here
  std::vector<HistogramSeries> series;
};
std::string bos_histogram(const Histogram& p, const Thresholds& t);

// A complete <svg> line chart: x and y ranges from the data (y from 0 when `from_zero`), round
// ticks, one polyline with point markers per series (tooltips "label: x, y"), a legend.
struct LineSeries {
  std::string label, colour;
  std::vector<std::pair<double, double>> points;
  bool dashed = false;
};
struct LineChart {
  std::string title, x_label, y_label;
  double width = 560, height = 300;
  bool from_zero = false;
  std::vector<LineSeries> series;
};
std::string line_chart(const LineChart& c);

}  // namespace hs::svg
