// The Ctrl-C facility (util/interrupt.h): counting, messages, the third signal, the reset between
// commands.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>

#include "util/interrupt.h"

namespace {

using hs::Interrupted;
using hs::InterruptHandlers;

TEST(Interrupt, NothingWithoutASignal) {
  EXPECT_EQ(hs::interrupt_count(), 0);
  EXPECT_FALSE(hs::interrupted());
  EXPECT_NO_THROW(hs::check_interrupted());
}

TEST(Interrupt, SignalsAreCountedAndResetWithTheHandlers) {
  struct sigaction before {};
  sigaction(SIGINT, nullptr, &before);
  {
    const InterruptHandlers h;
    std::raise(SIGINT);
    EXPECT_EQ(hs::interrupt_count(), 1);
    EXPECT_TRUE(hs::interrupted());
    EXPECT_THROW(hs::check_interrupted(), Interrupted);
    EXPECT_THROW(hs::check_interrupted(), Interrupted);  // it stays set
  }
  EXPECT_EQ(hs::interrupt_count(), 0);
  EXPECT_NO_THROW(hs::check_interrupted());
  struct sigaction after {};
  sigaction(SIGINT, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  // A new command starts from zero.
  const InterruptHandlers h;
  EXPECT_EQ(hs::interrupt_count(), 0);
}

TEST(Interrupt, SigtermCountsLikeSigint) {
  const InterruptHandlers h;
  std::raise(SIGTERM);
  EXPECT_EQ(hs::interrupt_count(), 1);
  EXPECT_THROW(hs::check_interrupted(), Interrupted);
}

TEST(Interrupt, RequestActsAsOneSignal) {
  const InterruptHandlers h;
  hs::request_interrupt();
  hs::request_interrupt();
  EXPECT_EQ(hs::interrupt_count(), 1);
  EXPECT_THROW(hs::check_interrupted(), Interrupted);
}

TEST(Interrupt, SecondSignalSaysWhatIsBeingFinished) {
  const InterruptHandlers h;
  testing::internal::CaptureStderr();
  std::raise(SIGINT);
  std::raise(SIGINT);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("stopping"), std::string::npos) << err;
  EXPECT_EQ(err.find("finishing"), std::string::npos) << err;
  EXPECT_EQ(hs::interrupt_count(), 2);

  const InterruptHandlers again;
  const hs::SavingState saving;
  testing::internal::CaptureStderr();
  std::raise(SIGINT);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");  // the first only asks to stop
  testing::internal::CaptureStderr();
  std::raise(SIGINT);
  err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("finishing the save"), std::string::npos) << err;
}

TEST(Interrupt, ThirdSignalExitsAtOnceWith130) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const InterruptHandlers h;
        const hs::SavingState saving;
        std::raise(SIGINT);
        std::raise(SIGTERM);
        std::raise(SIGINT);
        std::abort();  // not reached
      },
      testing::ExitedWithCode(130), "exiting at once");
}

}  // namespace
