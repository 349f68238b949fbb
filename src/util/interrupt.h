// Ctrl-C and SIGTERM for the long commands: the first signal asks the work to stop at its next
// boundary (a micro-batch, a layer, a few attention rows, a decoding step: well under a second),
// the second says what is being finished, the third exits at once with code 130. The handler
// only counts; the work looks at the count where stopping is safe and throws Interrupted there.
#pragma once

#include <atomic>
#include <csignal>
#include <exception>

namespace hs {

// Thrown at the first boundary after an interruption; the commands end with exit code 130.
class Interrupted : public std::exception {
 public:
  const char* what() const noexcept override { return "interrupted"; }
};

namespace detail {
inline std::atomic<int> g_interrupts{0};  // signals received since the handlers were installed
}  // namespace detail

// Cheap enough for inner loops (one relaxed load). Inside an OpenMP region test this and skip
// the remaining work: an exception must not leave the region.
inline bool interrupted() noexcept {
  return detail::g_interrupts.load(std::memory_order_relaxed) > 0;
}

// At a boundary outside OpenMP regions: throws Interrupted once a signal has arrived.
inline void check_interrupted() {
  if (interrupted()) throw Interrupted();
}

// Signals counted so far (0 = none).
int interrupt_count() noexcept;

// As if Ctrl-C had arrived once (repair's --interrupt-after-steps testing hook).
void request_interrupt() noexcept;

// Installs the SIGINT and SIGTERM handlers for its lifetime, the count starting at zero; the
// previous handlers come back (and the count goes to zero) when it ends. One per long command.
class InterruptHandlers {
 public:
  InterruptHandlers();
  ~InterruptHandlers();
  InterruptHandlers(const InterruptHandlers&) = delete;
  InterruptHandlers& operator=(const InterruptHandlers&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

// While one exists, a second signal says the state is being saved (and is not abandoned): the
// save finishes unless a third signal exits at once, which atomic writes make safe.
class SavingState {
 public:
  SavingState();
  ~SavingState();
  SavingState(const SavingState&) = delete;
  SavingState& operator=(const SavingState&) = delete;
};

}  // namespace hs
