// headsurgeon report RUN_DIR... -o report.html: a repair run, or the passes of a surgery, as one
// self-contained HTML page.
#include <iostream>

#include "cli/common.h"
#include "report/run_report.h"

namespace hs::cli {

void add_report(CLI::App& app) {
  struct Args {
    std::vector<std::string> runs;
    std::string out;
    RunReportOptions opts;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "report",
      "One self-contained HTML page about a repair run: summary, before/after heatmaps and "
      "histogram, trajectory charts, drift tables, sample generations. Several runs are the "
      "passes in order (report runs/pass1 runs/pass2): a table of the passes and the heatmaps "
      "before pass 1 and after each pass come first. No scripts, no network.");
  sub->add_option("RUN_DIR", a->runs,
                  "run directory written by `headsurgeon repair -o`; several: the passes, in order")
      ->required();
  sub->add_option("-o,--out", a->out, "HTML file to write ('-' = stdout)")->required();
  sub->add_option("--threshold", a->opts.threshold, "drift threshold on |δ bos_mass|")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->callback([a] {
    check_output_path(a->out);
    write_output(a->out, render_run_report(a->runs, a->opts));
    if (a->out != "-") std::cout << "wrote " << a->out << "\n";
  });
}

}  // namespace hs::cli
