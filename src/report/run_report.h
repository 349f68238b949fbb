// The report of a repair run: one self-contained HTML page (inline CSS and SVG, no scripts, no
// network) with the run summary, before/after heatmaps and histogram, the trajectory charts,
// the drift tables and the sample generations.
#pragma once

#include <string>

namespace hs {

struct RunReportOptions {
  double threshold = 0.05;  // drift threshold on |δ bos_mass|
};

// Reads RUN_DIR as `repair` writes it: plan.json and config.json (required), trajectory.json,
// diagnosis_before.json and diagnoses/step-N.json (optional: missing pieces are shown as
// missing). Throws hs::Error naming the directory when it is not a run, or the file at fault.
std::string render_run_report(const std::string& run_dir, const RunReportOptions& o = {});

}  // namespace hs
