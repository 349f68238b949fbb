// The Ctrl-C facility (util/interrupt.h): counting, messages, the third signal, the reset between
// commands; and that the long CPU operations stop inside themselves and let the exception out of
// their OpenMP regions.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <random>
#include <thread>

#include "engine/cpu/train.h"
#include "model/alibi.h"
#include "ops/cpu/ops.h"
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

// Random fused qkv of one sequence: T rows of 3 * H * hd.
std::vector<float> random_qkv(int64_t T, int64_t H, int64_t hd) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> qkv(size_t(T * 3 * H * hd));
  for (float& x : qkv) x = nd(rng);
  return qkv;
}

// A signal from another thread while a long attention runs (seconds uninterrupted): the row
// loops see it, the function throws well before it would have finished.
TEST(Interrupt, AttentionStopsWithinRows) {
  const int64_t T = 8192, H = 4, hd = 16;
  const auto qkv = random_qkv(T, H, hd);
  const auto slopes = hs::alibi_slopes(H);
  std::vector<float> ctx(size_t(T * H * hd)), dqkv(qkv.size(), 0.0f);
  const InterruptHandlers h;
  auto timed = [&](auto&& fn) {
    std::thread t([] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::raise(SIGINT);  // delivered on this thread; the handler only counts
    });
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(fn(), Interrupted);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t.join();
    return s;
  };
  const double fwd = timed([&] {
    hs::cpu::alibi_attention_forward<float>(ctx.data(), H * hd, nullptr, nullptr,
                                            hs::cpu::fused_qkv(qkv.data(), T, H, hd), slopes.data(),
                                            {}, H, hd);
  });
  EXPECT_LT(fwd, 0.6) << "forward";
  const InterruptHandlers again;
  const double bwd = timed([&] {
    hs::cpu::alibi_attention_backward<float>(dqkv.data(), ctx.data(), qkv.data(), slopes.data(), {},
                                             nullptr, T, H, hd);
  });
  EXPECT_LT(bwd, 0.6) << "backward";
}

// Interrupted inside the OpenMP region of a batch (two threads, one sequence each): the exception
// comes out of the function, after both threads, instead of terminating the process.
TEST(Interrupt, BatchGradientLetsTheExceptionOutOfItsThreads) {
  const hs::ModelConfig c = hs::bloom_config(32, 4, 2, 64);
  hs::TrainWeights w = hs::TrainWeights::zeros(c);
  w.slopes = hs::alibi_slopes(c.n_head);
  std::vector<int32_t> a(64), b(64);
  for (int i = 0; i < 64; ++i) a[i] = b[63 - i] = i;
  const std::vector<const std::vector<int32_t>*> batch = {&a, &b};
  std::vector<hs::Gradients> scratch(2, hs::Gradients::all(w));
  EXPECT_TRUE(std::isfinite(hs::batch_loss_and_grad(w, batch, 1.0, scratch)));
  const InterruptHandlers h;
  hs::request_interrupt();
  EXPECT_THROW(hs::batch_loss_and_grad(w, batch, 1.0, scratch), Interrupted);
}

}  // namespace
