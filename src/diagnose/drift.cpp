#include "diagnose/drift.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "diagnose/svg.h"
#include "util/error.h"

namespace hs {

using nlohmann::json;

const char* drift_group_name(DriftGroup g) {
  switch (g) {
    case DriftGroup::Outside:
      return "outside";
    case DriftGroup::FrozenInZone:
      return "frozen_in_zone";
    case DriftGroup::Target:
      return "target";
  }
  return "?";
}

namespace {

// Running count, mean |δ| and worst case of a set of heads.
struct Accumulator {
  DriftStats s;
  double sum = 0;
  void add(int l, int h, double delta, double threshold) {
    ++s.heads;
    s.drifting += std::abs(delta) > threshold;
    sum += std::abs(delta);
    if (!s.worst || std::abs(delta) > std::abs(s.worst->delta)) s.worst = HeadDelta{l, h, delta};
  }
  DriftStats done() const {
    DriftStats r = s;
    r.mean_abs_delta = s.heads ? sum / s.heads : 0;
    return r;
  }
};

json stats_json(const DriftStats& s) {
  return {
      {"heads", s.heads},
      {"drifting", s.drifting},
      {"mean_abs_delta", s.mean_abs_delta},
      {"worst",
       s.worst ? json{{"layer", s.worst->layer}, {"head", s.worst->head}, {"delta", s.worst->delta}}
               : json(nullptr)}};
}

// User-supplied names on one line in the table.
std::string printable(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if ((unsigned char)c < 0x20 || c == 0x7f) c = ' ';
  return out;
}

std::string stats_row(const std::string& name, const DriftStats& s) {
  std::string row =
      svg::fmt("%-16s %6d %9d %9.4f", name.c_str(), s.heads, s.drifting, s.mean_abs_delta);
  if (s.worst) row += svg::fmt("  L%d H%d %+.4f", s.worst->layer, s.worst->head, s.worst->delta);
  return row + "\n";
}

}  // namespace

Drift compute_drift(const Diagnosis& before, const Diagnosis& after, const DriftOptions& o) {
  check_consistent(before);
  check_consistent(after);
  if (before.layers != after.layers || before.heads != after.heads)
    throw Error(o.after_name,
                svg::fmt("%d layers x %d heads, but %s has %d x %d", after.layers, after.heads,
                         o.before_name.c_str(), before.layers, before.heads));
  if (!(o.threshold >= 0)) throw Error("--threshold", "must be a non-negative number");
  const int L = before.layers, H = before.heads;
  Drift d;
  d.threshold = o.threshold;
  d.has_plan = o.targets.has_value();
  d.layers = L;
  d.heads = H;
  d.before_model = before.model;
  d.after_model = after.model;
  d.delta.resize(size_t(L) * H);
  d.group.assign(size_t(L) * H, DriftGroup::Outside);

  if (o.targets) {
    std::set<int> zone_layers, zone_heads;
    for (const auto& [l, hs] : *o.targets)
      for (int h : hs) {
        if (l < 0 || l >= L || h < 0 || h >= H)
          throw Error("plan",
                      svg::fmt("target layer %d head %d is outside the %d x %d model", l, h, L, H));
        zone_layers.insert(l);
        zone_heads.insert(h);
      }
    for (int l : zone_layers)
      for (int h : zone_heads) d.group[size_t(l) * H + h] = DriftGroup::FrozenInZone;
    for (const auto& [l, hs] : *o.targets)
      for (int h : hs) d.group[size_t(l) * H + h] = DriftGroup::Target;
  }

  Accumulator outside, frozen, targets;
  std::vector<Accumulator> columns(static_cast<size_t>(H));
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h) {
      const size_t k = size_t(l) * H + h;
      const double delta = after.at(l, h).bos_mass - before.at(l, h).bos_mass;
      d.delta[k] = delta;
      const DriftGroup g = d.group[k];
      (g == DriftGroup::Outside        ? outside
       : g == DriftGroup::FrozenInZone ? frozen
                                       : targets)
          .add(l, h, delta, o.threshold);
      if (g != DriftGroup::Target) columns[size_t(h)].add(l, h, delta, o.threshold);
      const HeadClass from = before.class_of(l, h), to = after.class_of(l, h);
      if (from != to) d.class_changes.push_back({l, h, from, to, g});
    }
  d.outside = outside.done();
  d.frozen_in_zone = frozen.done();
  d.targets = targets.done();
  for (int h = 0; h < H; ++h) d.columns.push_back({h, columns[size_t(h)].done()});
  return d;
}

json to_json(const Drift& d) {
  json columns = json::array(), changes = json::array(), delta = json::array();
  for (const DriftColumn& c : d.columns) {
    json e = stats_json(c.stats);
    e["head"] = c.head;
    columns.push_back(std::move(e));
  }
  for (const ClassChange& c : d.class_changes)
    changes.push_back({{"layer", c.layer},
                       {"head", c.head},
                       {"from", class_name(c.from)},
                       {"to", class_name(c.to)},
                       {"group", drift_group_name(c.group)}});
  for (int l = 0; l < d.layers; ++l)
    delta.push_back(std::vector<double>(d.delta.begin() + ptrdiff_t(l) * d.heads,
                                        d.delta.begin() + ptrdiff_t(l + 1) * d.heads));
  return {{"threshold", d.threshold},
          {"before", d.before_model},
          {"after", d.after_model},
          {"plan", d.has_plan},
          {"layers", d.layers},
          {"heads", d.heads},
          {"outside", stats_json(d.outside)},
          {"frozen_in_zone", stats_json(d.frozen_in_zone)},
          {"targets", stats_json(d.targets)},
          {"columns", std::move(columns)},
          {"class_changes", std::move(changes)},
          {"delta", std::move(delta)}};
}

std::string render_drift_table(const Drift& d) {
  std::string o;
  o += "drift of bos_mass (δ = after − before), threshold " + svg::fmt("%g", d.threshold) + "\n";
  o += "  before: " + printable(d.before_model) + "\n";
  o += "  after:  " + printable(d.after_model) + "\n";
  if (!d.has_plan) o += "no plan: every head counts as outside the surgical zone\n";
  o += "\ngroup             heads  drifting  mean |δ|  worst\n";
  o += stats_row("outside", d.outside);
  if (d.has_plan) {
    o += stats_row("frozen in zone", d.frozen_in_zone);
    o += stats_row("targets", d.targets);
  }
  o += std::string("\nper head index") + (d.has_plan ? " (targets left out)" : "") +
       "\nhead              heads  drifting  mean |δ|  worst\n";
  for (const DriftColumn& c : d.columns) o += stats_row(svg::fmt("H%d", c.head), c.stats);
  o += "\nclass changes: " + std::to_string(d.class_changes.size()) + "\n";
  for (const ClassChange& c : d.class_changes)
    o += svg::fmt("  L%d H%d  %s -> %s", c.layer, c.head, class_name(c.from), class_name(c.to)) +
         (d.has_plan ? std::string("  (") + drift_group_name(c.group) + ")" : "") + "\n";
  return o;
}

std::string render_drift_svg(const Diagnosis& before, const Diagnosis& after, const Drift& d,
                             const std::string& id) {
  using namespace svg;
  check_consistent(before);
  check_consistent(after);
  if (before.layers != d.layers || after.layers != d.layers || before.heads != d.heads ||
      after.heads != d.heads)
    throw Error("drift figure", "the diagnoses do not match the drift's shape");
  const int L = d.layers, H = d.heads;

  // The δ scale spans the non-target heads (the targets' own change, often near −1 after a
  // re-initialisation, would wash out their neighbours' drift) and at least the threshold,
  // rounded up to 1, 2 or 5 times a power of ten; targets beyond it are clamped.
  double top = d.threshold;
  for (size_t k = 0; k < d.delta.size(); ++k)
    if (d.group[k] != DriftGroup::Target) top = std::max(top, std::abs(d.delta[k]));
  double range = 1;
  for (double r : {0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0})
    if (r >= top) {
      range = r;
      break;
    }

  const double cell = heatmap_cell(L, H, 320, 480);
  const double hw = cell * H, hh = cell * L, hy = 136;  // below three header lines
  const double x1 = 70, x2 = x1 + hw + 60;
  const double bar1 = x2 + hw + 20, x3 = bar1 + 14 + 110, bar2 = x3 + hw + 20;
  const double barh = std::clamp(hh, 140.0, 320.0);
  const double legend_y = hy + std::max(hh, barh) + 28;
  const double width = std::max(
      bar2 + 14 + 60, 20 + 7.0 * double(std::max(before.model.size(), after.model.size()) + 10));
  const double height = legend_y + 40;

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + num(width) +
       "\" height=\"" + num(height) + "\" viewBox=\"0 0 " + num(width) + " " + num(height) +
       "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n";
  o += "<title>headsurgeon drift: " + xml(before.model) + " → " + xml(after.model) + "</title>\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  o += text(20, 28, "before: " + xml(before.model), " font-size=\"13\"");
  o += text(20, 46, "after: " + xml(after.model), " font-size=\"13\"");
  std::string summary = fmt("threshold %g: outside %d of %d drifting (mean |δ| %.4f)", d.threshold,
                            d.outside.drifting, d.outside.heads, d.outside.mean_abs_delta);
  if (d.has_plan)
    summary += fmt(", frozen in zone %d of %d (mean |δ| %.4f)", d.frozen_in_zone.drifting,
                   d.frozen_in_zone.heads, d.frozen_in_zone.mean_abs_delta);
  o += text(20, 64, xml(summary), " font-size=\"13\"");

  for (const auto& [dg, x, name] :
       {std::tuple{&before, x1, "before"}, std::tuple{&after, x2, "after"}}) {
    const Diagnosis& g = *dg;
    o += "<g class=\"bos-" + std::string(name) + "\">\n";
    o += heatmap({x, hy, cell, L, H, std::string("bos_mass ") + name}, [&](int l, int h) {
      const HeadClass c = g.class_of(l, h);
      return HeatmapCell{viridis(g.at(l, h).bos_mass),
                         fmt("L%d H%d bos %.3f %s", l, h, g.at(l, h).bos_mass, class_name(c)),
                         is_sick(c) ? std::string(1, class_letter(c)) : ""};
    });
    o += "</g>\n";
  }
  ColourBar bos{id + "-bos", "bos_mass", bar1, hy, 14, barh, viridis_stops(), {}, {}};
  for (int i = 0; i <= 4; ++i) bos.ticks.push_back({i / 4.0, fmt("%.2f", i / 4.0)});
  o += colour_bar(bos);

  o += "<g class=\"delta\">\n";
  o += heatmap({x3, hy, cell, L, H, "δ = after − before"}, [&](int l, int h) {
    const double v = d.at(l, h);
    const DriftGroup g = d.group_of(l, h);
    const bool drifting = g != DriftGroup::Target && std::abs(v) > d.threshold;
    return HeatmapCell{
        diverging(v / range),
        fmt("L%d H%d δ %+.4f (%.3f → %.3f), %s%s", l, h, v, before.at(l, h).bos_mass,
            after.at(l, h).bos_mass, drift_group_name(g), drifting ? ", drifting" : ""),
        g == DriftGroup::Target         ? "T"
        : g == DriftGroup::FrozenInZone ? "F"
                                        : "",
        drifting};
  });
  o += "</g>\n";
  ColourBar db{id + "-delta", "δ", bar2, hy, 14, barh, diverging_stops(), {}, {}};
  for (int i = 0; i <= 4; ++i)
    db.ticks.push_back({i / 4.0, i == 2 ? "0" : fmt("%+g", range * (i / 2.0 - 1))});
  if (d.threshold <= range)
    for (double t : {-d.threshold, d.threshold}) db.marks.push_back((t / range + 1) / 2);
  o += colour_bar(db);

  o += text(x1 - 60, legend_y,
            xml("letters left: S = BOS-sink, D = DEAD, E = low-entropy. Right: T = target, "
                "F = frozen in the surgical zone; black outline = non-target head with |δ| > " +
                fmt("%g", d.threshold) + "."));
  o += text(x1 - 60, legend_y + 16,
            xml(fmt("δ colours: blue = less attention on the first token, red = more; scale ±%g "
                    "(red marks: ±threshold), targets beyond it clamped.",
                    range)));
  return o + "</svg>\n";
}

}  // namespace hs
