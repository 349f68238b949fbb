// Download throughput from the stand-in hub on 127.0.0.1 (tests/stand_in_hub.h): one LFS file of
// --mb megabytes through the hub client (HEAD, redirect, GET, sha256 as it arrives, fsync,
// rename, link), into a fresh cache each run; and, for where the time goes, the sha256 and the
// write + fsync of the same bytes alone.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "hub/hub.h"
#include "stand_in_hub.h"

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Download throughput from a stand-in hub on 127.0.0.1"};
  int mb = 200, runs = 3;
  app.add_option("--mb", mb, "size of the file in MB (10^6 bytes)")->capture_default_str();
  app.add_option("--runs", runs, "downloads timed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  namespace fs = std::filesystem;
  const fs::path tmp = fs::temp_directory_path() / ("bench_download_" + std::to_string(::getpid()));
  hs::test::HubRepo repo;
  repo.sha = "0123456789abcdef0123456789abcdef01234567";
  repo.revisions = {"main"};
  std::string bytes(size_t(mb) * 1000000, '\0');
  uint64_t x = 88172645463325252ull;  // xorshift: incompressible, cheap to make
  for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(bytes.data() + i, &x, 8);
  }
  repo.files["big.safetensors"] = {std::move(bytes), true};
  hs::test::StandInHub hub;
  hub.add_repo("bench/big", std::move(repo));

  hs::hub::Settings s;
  s.endpoint = hub.endpoint();
  s.cache = (tmp / "cache").string();
  hs::hub::Options o;
  o.include = {"big.safetensors"};
  const double size = double(mb) * 1e6;
  for (int r = 0; r < runs; ++r) {
    fs::remove_all(tmp);
    const auto t0 = std::chrono::steady_clock::now();
    const auto res = hs::hub::download({"bench/big", ""}, s, o);
    const double sec = since(t0);
    std::printf("download %d MB: %.3f s, %.0f MB/s (%d file)\n", mb, sec, size / sec / 1e6,
                res.fetched);
  }

  // The parts alone, on the same bytes.
  const std::string data(std::string(size_t(mb) * 1000000, '\1'));
  auto t0 = std::chrono::steady_clock::now();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  std::printf("sha256 alone: %.0f MB/s\n", size / since(t0) / 1e6);
  fs::create_directories(tmp);
  const std::string f = (tmp / "w").string();
  t0 = std::chrono::steady_clock::now();
  const int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (size_t at = 0; at < data.size(); at += 1 << 20)
    if (::pwrite(fd, data.data() + at, std::min<size_t>(1 << 20, data.size() - at), off_t(at)) < 0)
      return 1;
  const double written = since(t0);
  ::fsync(fd);
  ::close(fd);
  std::printf("write alone: %.0f MB/s; with fsync: %.0f MB/s\n", size / written / 1e6,
              size / since(t0) / 1e6);
  fs::remove_all(tmp);
  return 0;
}
