// A gtest fixture for tests that run the headsurgeon binary: a fresh directory per test, removed
// afterwards, and helpers to write inputs into it and run the binary there.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "test_util.h"

namespace hs::test {

template <class Base = ::testing::Test>
class ScratchTest : public Base {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // Parameterised names hold '/', which must not make a subdirectory.
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ =
        std::filesystem::temp_directory_path() / ("hs_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Result run(const std::string& args) const { return run_binary(dir_, args); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path write(const std::string& name, const std::string& content) const {
    std::ofstream(dir_ / name, std::ios::binary) << content;
    return dir_ / name;
  }
  // Exit 1 and exactly one stderr line containing every needle.
  static void expect_error(const Result& r, std::initializer_list<std::string> needles) {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    for (const auto& n : needles)
      EXPECT_NE(r.err.find(n), std::string::npos) << n << " in: " << r.err;
  }

  std::filesystem::path dir_;
};

}  // namespace hs::test
