// Shared helpers for the tests: where the golden data lives, and reading it.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace hs::test {

// Colon-separated list from the environment variable, else the default.
inline std::vector<std::string> dirs_from_env(const char* var, const std::string& fallback) {
  const char* v = std::getenv(var);
  std::string s = (v && *v) ? v : fallback;
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ':');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// Model golden directories (config.json, model.safetensors, golden*.safetensors, golden.json).
inline std::vector<std::string> golden_model_dirs() {
  const std::string d = std::string(HS_TEST_DATA) + "/golden/models/";
  return dirs_from_env("HEADSURGEON_GOLDEN_DIRS",
                       d + "tiny16:" + d + "tiny8:" + d + "mpt8:" + d + "falconrw8");
}

// Tokenizer golden directories (tokenizer.json + cases.json): BLOOM's and GPT-NeoX-20B's.
inline std::vector<std::string> golden_tokenizer_dirs() {
  return dirs_from_env("HEADSURGEON_TOKENIZER_DIRS", std::string(HS_TEST_DATA) +
                                                         "/golden/tokenizer:" HS_TEST_DATA
                                                         "/golden/tokenizer_neox");
}

// `n` words drawn from a 16-word vocabulary (seed 1): the training corpus of the tiny repair runs.
inline std::string random_words(int n) {
  std::mt19937 rng(1);
  const char* words[] = {"the", "cat", "sat",  "on",   "a",    "mat", "while", "dogs",
                         "ran", "far", "away", "from", "home", "and", "birds", "sang"};
  std::string text;
  for (int i = 0; i < n; ++i) text += std::string(words[rng() % 16]) + " ";
  return text;
}

// Whole file as a string ("" when missing).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// What a run of the headsurgeon binary left: exit code (-1 when killed), stdout, stderr.
struct Result {
  int code;
  std::string out, err;
};

// Runs the binary with args (a shell word list), capturing its output through files in dir.
// The CLI tests check the fp32 CPU reference's numbers, so on a GPU machine they still run on the
// CPU unless HEADSURGEON_DEVICE says otherwise.
inline Result run_binary(const std::filesystem::path& dir, const std::string& args) {
  const std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  const std::string cmd = "HEADSURGEON_DEVICE=${HEADSURGEON_DEVICE:-cpu} " +
                          std::string(HS_BINARY) + " " + args + " >" + out + " 2>" + err;
  const int st = std::system(cmd.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(out), slurp(err)};
}

}  // namespace hs::test
