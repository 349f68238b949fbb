// headsurgeon report RUN_DIR -o report.html: a repair run as one self-contained HTML page.
#include <iostream>

#include "cli/common.h"
#include "report/run_report.h"

namespace hs::cli {

void add_report(CLI::App& app) {
  struct Args {
    std::string run, out;
    RunReportOptions opts;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "report",
      "One self-contained HTML page about a repair run: summary, before/after heatmaps and "
      "histogram, trajectory charts, drift tables, sample generations. No scripts, no network.");
  sub->add_option("RUN_DIR", a->run, "run directory written by `headsurgeon repair -o`")
      ->required();
  sub->add_option("-o,--out", a->out, "HTML file to write ('-' = stdout)")->required();
  sub->add_option("--threshold", a->opts.threshold, "drift threshold on |δ bos_mass|")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->callback([a] {
    check_output_path(a->out);
    write_output(a->out, render_run_report(a->run, a->opts));
    if (a->out != "-") std::cout << "wrote " << a->out << "\n";
  });
}

}  // namespace hs::cli
