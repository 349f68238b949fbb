#include "util/interrupt.h"

#include <unistd.h>

namespace hs {

namespace {

std::atomic<bool> g_saving{false};

// Async-signal-safe: lock-free atomics, write(2) and _exit(2) only.
template <size_t N>
void say(const char (&msg)[N]) {
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, N - 1);
}

extern "C" void on_interrupt(int) {
  const int n = detail::g_interrupts.fetch_add(1) + 1;
  if (n == 2 && g_saving.load())
    say("headsurgeon: finishing the save of the state (once more to exit at once; the previous "
        "state stays intact)\n");
  else if (n == 2)
    say("headsurgeon: stopping (once more to exit at once)\n");
  else if (n >= 3) {
    say("headsurgeon: interrupted, exiting at once\n");
    ::_exit(130);
  }
}

}  // namespace

int interrupt_count() noexcept { return detail::g_interrupts.load(); }

void request_interrupt() noexcept {
  int none = 0;
  detail::g_interrupts.compare_exchange_strong(none, 1);
}

InterruptHandlers::InterruptHandlers() {
  detail::g_interrupts = 0;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in progress go on instead of failing with EINTR
  sigaction(SIGINT, &sa, &old_int_);
  sigaction(SIGTERM, &sa, &old_term_);
}

InterruptHandlers::~InterruptHandlers() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  detail::g_interrupts = 0;
}

SavingState::SavingState() { g_saving = true; }
SavingState::~SavingState() { g_saving = false; }

}  // namespace hs
