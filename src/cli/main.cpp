// headsurgeon: find and repair collapsed attention heads in ALiBi (BLOOM) transformers.
#include <malloc.h>

#include <csignal>
#include <iostream>

#include "cli/common.h"
#include "util/error.h"
#include "util/interrupt.h"

int main(int argc, char** argv) {
  // Keep large freed buffers in the heap for reuse: the training step allocates the same
  // multi-MB activation buffers every layer, and fresh mmaps cost page faults + zeroing
  // (17 % of a surgical step's samples in perf).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Past a file-size limit (ulimit -f) a write fails with EFBIG and the run stops with one line
  // naming the file, instead of the process dying of SIGXFSZ mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{
      "headsurgeon — find and repair collapsed attention heads in ALiBi (BLOOM) transformers.\n"
      "MODEL is a Hugging Face checkpoint directory or a hub id (org/name[@revision]), downloaded\n"
      "into the local Hugging Face cache when it is not there yet (unless --offline)."};
  app.name("headsurgeon");
  app.set_version_flag("--version", "headsurgeon 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  bool offline = false;
  app.add_flag("--offline", offline,
               "no network: hub ids only from the local Hugging Face cache (as HF_HUB_OFFLINE=1)");
  app.parse_complete_callback([&] {
    hs::cli::set_threads(threads);
    hs::cli::set_offline(offline);
  });

  hs::cli::add_diagnose(app);
  hs::cli::add_tokenize(app);
  hs::cli::add_ppl(app);
  hs::cli::add_plan(app);
  hs::cli::add_repair(app);
  hs::cli::add_dormancy(app);
  hs::cli::add_ablate(app);
  hs::cli::add_drift(app);
  hs::cli::add_report(app);
  hs::cli::add_generate(app);
  hs::cli::add_pretrain(app);
  hs::cli::add_demo(app);
  hs::cli::add_download(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help / the usage error
    return rc == 0 ? hs::cli::kExitOk : hs::cli::kExitUsage;
  } catch (const hs::cli::ExitCode& e) {
    return e.code;
  } catch (const hs::Interrupted&) {
    std::cerr << "headsurgeon: interrupted\n";
    return hs::cli::kExitInterrupted;
  } catch (const hs::Error& e) {
    std::cerr << "headsurgeon: error: " << e.what() << "\n";
    return hs::cli::kExitError;
  } catch (const std::bad_alloc&) {
    std::cerr << "headsurgeon: error: out of memory\n";
    return hs::cli::kExitError;
  } catch (const std::exception& e) {
    std::cerr << "headsurgeon: error: " << e.what() << "\n";
    return hs::cli::kExitError;
  }
  return hs::cli::kExitOk;
}
