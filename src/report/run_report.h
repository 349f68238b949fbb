// The report of a repair run, or of several passes: one self-contained HTML page (inline CSS and
// SVG, no scripts, no network) with the run summary, before/after heatmaps and histogram, the
// trajectory charts, the drift tables and the sample generations of each run; for several
// passes, first a table of the passes and the heatmaps before pass 1 and after each pass.
#pragma once

#include <string>
#include <vector>

namespace hs {

struct RunReportOptions {
  double threshold = 0.05;  // drift threshold on |δ bos_mass|
};

// Reads each RUN_DIR as `repair` writes it: plan.json and config.json (required),
// trajectory.json, diagnosis_before.json and diagnoses/step-N.json (optional: missing pieces are
// shown as missing). Several runs are passes in the order given, each normally repairing a
// checkpoint of the one before (the page says when not). Throws hs::Error naming the directory
// when it is not a run, or the file at fault.
std::string render_run_report(const std::vector<std::string>& run_dirs,
                              const RunReportOptions& o = {});

}  // namespace hs
