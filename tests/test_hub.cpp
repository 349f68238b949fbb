// headsurgeon download, and hub ids fetched by the model commands, against a stand-in hub on
// 127.0.0.1 (stand_in_hub.h): the cache laid out as huggingface_hub lays it out, the token kept
// from the redirect's other host, gated repos, 404s, a connection dropped half-way and resumed
// with Range, Ctrl-C and a resumed run, a corrupt partial file, a full disk, offline use.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>

#include "scratch_test.h"
#include "stand_in_hub.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using hs::test::HubFile;
using hs::test::HubRepo;
using hs::test::Result;
using hs::test::slurp;
using Clock = std::chrono::steady_clock;

const std::string kTiny8 = std::string(HS_TEST_DATA) + "/golden/models/tiny8";
const std::string kSha = "0123456789abcdef0123456789abcdef01234567";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = char(rng());
  return s;
}

// tiny8 as the hub holds it: the model's files, and files a model download leaves alone.
HubRepo tiny8_repo() {
  HubRepo r;
  r.sha = kSha;
  r.revisions = {"main", "v1"};
  r.files["config.json"] = {slurp(kTiny8 + "/config.json")};
  r.files["model.safetensors"] = {slurp(kTiny8 + "/model.safetensors"), true};
  r.files["tokenizer.json"] = {slurp(kTiny8 + "/tokenizer.json"), true};
  r.files["tokenizer_config.json"] = {"{\"model_max_length\": 1024}"};
  r.files["pytorch_model.bin"] = {"a pickle", true};
  r.files["README.md"] = {"# tiny8"};
  r.files["onnx/model.onnx"] = {"onnx bytes", true};
  return r;
}

class Hub : public hs::test::ScratchTest<> {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    cache_ = dir_ / "cache";
  }

  // The command line of the binary against the stand-in: its cache, no token unless ENV gives
  // one, and no proxy for the loopback addresses.
  std::string command(const std::string& args, const std::string& env) const {
    return "env HF_HUB_OFFLINE=0 HF_ENDPOINT=" + hub_.endpoint() +
           " HF_HUB_CACHE=" + cache_.string() + " HF_HOME=" + path("hf_home") +
           " HF_TOKEN= NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost "
           "HEADSURGEON_DEVICE=cpu " +
           env + " " + HS_BINARY + " " + args + " >" + path("stdout") + " 2>" + path("stderr");
  }
  Result hub_run(const std::string& args, const std::string& env = "") const {
    const int st = std::system(command(args, env).c_str());
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(path("stdout")), slurp(path("stderr"))};
  }
  // The same in the background; returns its pid (the shell execs the binary).
  pid_t spawn(const std::string& args, const std::string& env = "") const {
    const std::string cmd = "exec " + command(args, env);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  }
  // Exit code of PID once it ends (-1: killed by a signal, or still running after `timeout`).
  static int wait_exit(pid_t pid, double timeout) {
    const auto t0 = Clock::now();
    int st = 0;
    while (::waitpid(pid, &st, WNOHANG) != pid) {
      if (seconds_since(t0) > timeout) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &st, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

  fs::path repo_dir(const std::string& id) const {
    return cache_ / ("models--" + id.substr(0, id.find('/')) + "--" + id.substr(id.find('/') + 1));
  }
  fs::path snapshot(const std::string& id) const { return repo_dir(id) / "snapshots" / kSha; }

  // SNAPSHOT/FILE is a relative link into blobs/, named by the file's ETag, with its content.
  static void expect_blob(const fs::path& snap, const std::string& file, const HubFile& f) {
    const fs::path link = snap / file;
    ASSERT_TRUE(fs::is_symlink(link)) << link;
    std::string up = "../../";
    for (const char c : file)
      if (c == '/') up += "../";
    EXPECT_EQ(fs::read_symlink(link).string(), up + "blobs/" + f.etag()) << file;
    EXPECT_EQ(slurp(link), f.content) << file;
  }
  // No blobs/*.incomplete left behind.
  int incomplete(const std::string& id) const {
    int n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(repo_dir(id) / "blobs", ec))
      n += e.path().extension() == ".incomplete";
    return n;
  }
  std::vector<hs::test::Seen> cdn_gets() const {
    std::vector<hs::test::Seen> v;
    for (const auto& s : hub_.log())
      if (s.server == "cdn" && s.method == "GET") v.push_back(s);
    return v;
  }

  hs::test::StandInHub hub_;
  fs::path cache_;
};

TEST_F(Hub, DownloadLaysOutTheCacheAsHuggingFaceHubDoes) {
  const HubRepo repo = tiny8_repo();
  hub_.add_repo("bigscience/tiny8", repo);
  Result r = hub_run("download bigscience/tiny8", "HF_TOKEN=hf_secret");
  ASSERT_EQ(r.code, 0) << r.err;
  const fs::path snap = snapshot("bigscience/tiny8");
  EXPECT_EQ(r.out, snap.string() + "\n");
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    expect_blob(snap, f, repo.files.at(f));
  // LFS blobs are named by their sha256.
  EXPECT_EQ(repo.files.at("model.safetensors").etag(),
            hs::test::sha256_hex(repo.files.at("model.safetensors").content));
  for (const char* f : {"pytorch_model.bin", "README.md", "onnx"})
    EXPECT_FALSE(fs::exists(snap / f)) << f;
  EXPECT_EQ(slurp(repo_dir("bigscience/tiny8") / "refs" / "main"), kSha);
  EXPECT_EQ(incomplete("bigscience/tiny8"), 0);

  // The token goes to the hub and never to the redirect's other host.
  int hub_requests = 0;
  for (const auto& s : hub_.log()) {
    if (s.server == "hub") {
      ++hub_requests;
      EXPECT_EQ(s.authorization, "Bearer hf_secret") << s.path;
    } else {
      EXPECT_EQ(s.authorization, "") << s.path;
      EXPECT_EQ(s.host, "localhost:" + std::to_string(hub_.cdn_port()));
    }
  }
  EXPECT_EQ(hub_requests, 7);        // the revision, HEAD of the 4 files, GET of the 2 small ones
  EXPECT_EQ(cdn_gets().size(), 2u);  // the two LFS files
  EXPECT_EQ(r.err.find("hf_secret"), std::string::npos) << r.err;

  // Again: the snapshot holds every file, so only the revision is asked for.
  hub_.clear_log();
  r = hub_run("download bigscience/tiny8");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, snap.string() + "\n");
  EXPECT_EQ(hub_.log().size(), 1u);
  EXPECT_NE(r.err.find("all in the cache already"), std::string::npos) << r.err;
  // -q: nothing on stderr.
  r = hub_run("download bigscience/tiny8 -q");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.err, "");
}

TEST_F(Hub, ModelCommandsDownloadAnIdNotInTheCache) {
  hub_.add_repo("bigscience/tiny8", tiny8_repo());
  const fs::path snap = snapshot("bigscience/tiny8");
  // tokenize needs the tokenizer only: no weights are fetched.
  write("t.txt", "The river carried sediment downstream.");
  Result r = hub_run("tokenize bigscience/tiny8 " + path("t.txt"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, run("tokenize " + kTiny8 + " " + path("t.txt")).out);
  EXPECT_TRUE(fs::exists(snap / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(snap / "model.safetensors"));

  // diagnose fetches the rest, and diagnoses as from the directory.
  r = hub_run("diagnose bigscience/tiny8 --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  auto got = nlohmann::json::parse(r.out);
  auto want = nlohmann::json::parse(run("diagnose " + kTiny8 + " --json -").out);
  EXPECT_EQ(got["model"], "bigscience/tiny8");
  got.erase("model");
  want.erase("model");
  EXPECT_EQ(got, want);
  EXPECT_TRUE(fs::exists(snap / "model.safetensors"));

  // A cached model is not asked about again, and works offline.
  hub_.clear_log();
  EXPECT_EQ(hub_run("dormancy bigscience/tiny8").code, 0);
  EXPECT_EQ(hub_run("--offline diagnose bigscience/tiny8 -q").code, 0);
  EXPECT_EQ(hub_run("diagnose bigscience/tiny8 -q", "HF_HUB_OFFLINE=1").code, 0);
  EXPECT_TRUE(hub_.log().empty());
}

TEST_F(Hub, RevisionsAndIncludeGlobs) {
  const HubRepo repo = tiny8_repo();
  hub_.add_repo("org/m", repo);
  Result r = hub_run("download org/m@v1 --include '*.json' --include 'onnx/*'");
  ASSERT_EQ(r.code, 0) << r.err;
  const fs::path snap = snapshot("org/m");
  for (const char* f :
       {"config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx"})
    expect_blob(snap, f, repo.files.at(f));
  EXPECT_FALSE(fs::exists(snap / "model.safetensors"));
  EXPECT_EQ(slurp(repo_dir("org/m") / "refs" / "v1"), kSha);
  EXPECT_FALSE(fs::exists(repo_dir("org/m") / "refs" / "main"));
  // The cached revision is found by its ref.
  EXPECT_EQ(hub_run("--offline download org/m@v1").out, snap.string() + "\n");
  // A commit names its snapshot: no ref is written for it.
  r = hub_run("download org/m@" + kSha + " --include config.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(fs::exists(repo_dir("org/m") / "refs" / kSha));
  // Pickles are never fetched, even when asked for.
  expect_error(hub_run("download org/m --include '*.bin'"),
               {"org/m", "no file", "*.bin", "pickles are never downloaded"});
}

TEST_F(Hub, ShardedWeightsFollowTheIndex) {
  HubRepo repo;
  repo.sha = kSha;
  repo.revisions = {"main"};
  repo.files["config.json"] = {"{}"};
  repo.files["model.safetensors.index.json"] = {
      R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                         "b": "model-00002-of-00002.safetensors",
                         "c": "model-00002-of-00002.safetensors"}})"};
  repo.files["model-00001-of-00002.safetensors"] = {random_bytes(300000, 1), true};
  repo.files["model-00002-of-00002.safetensors"] = {random_bytes(200000, 2), true};
  repo.files["model-00001-of-00003.safetensors"] = {"an old shard", true};
  hub_.add_repo("org/sharded", repo);
  const Result r = hub_run("download org/sharded");
  ASSERT_EQ(r.code, 0) << r.err;
  const fs::path snap = snapshot("org/sharded");
  for (const char* f : {"config.json", "model.safetensors.index.json",
                        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})
    expect_blob(snap, f, repo.files.at(f));
  EXPECT_FALSE(fs::exists(snap / "model-00001-of-00003.safetensors"));
  EXPECT_EQ(cdn_gets().size(), 2u);

  // The index names a shard the repo does not have: said, with the shard's name.
  repo.files.erase("model-00002-of-00002.safetensors");
  hub_.add_repo("org/broken", repo);
  expect_error(hub_run("download org/broken"),
               {"org/broken", "model-00002-of-00002.safetensors", "not in the repo"});
}

TEST_F(Hub, DroppedConnectionResumesWithRange) {
  const HubRepo repo = tiny8_repo();
  hub_.add_repo("org/m", repo);
  const HubFile& model = repo.files.at("model.safetensors");
  hub_.drop_next(model.etag(), 1000000);        // an LFS file, from the CDN
  hub_.drop_next("tokenizer_config.json", 10);  // a small file, from the hub
  const Result r = hub_run("download org/m");
  ASSERT_EQ(r.code, 0) << r.err;
  const fs::path snap = snapshot("org/m");
  expect_blob(snap, "model.safetensors", model);  // its sha256 was checked on arrival
  expect_blob(snap, "tokenizer_config.json", repo.files.at("tokenizer_config.json"));
  std::vector<std::string> model_ranges, config_ranges;
  for (const auto& s : hub_.log()) {
    if (s.method != "GET") continue;
    if (s.path == "/cdn/" + model.etag()) model_ranges.push_back(s.range);
    if (s.path.ends_with("/tokenizer_config.json")) config_ranges.push_back(s.range);
  }
  EXPECT_EQ(model_ranges, (std::vector<std::string>{"", "bytes=1000000-"}));
  EXPECT_EQ(config_ranges, (std::vector<std::string>{"", "bytes=10-"}));
  EXPECT_EQ(incomplete("org/m"), 0);
}

TEST_F(Hub, CtrlCKeepsThePartialFileAndTheNextRunResumes) {
  HubRepo repo = tiny8_repo();
  repo.files["model.safetensors"] = {random_bytes(6 << 20, 3), true};
  hub_.add_repo("org/m", repo);
  const HubFile& model = repo.files.at("model.safetensors");
  const fs::path part = repo_dir("org/m") / "blobs" / (model.etag() + ".incomplete");
  hub_.set_rate(2 << 20);  // 2 MB/s: three seconds for the file
  const pid_t pid = spawn("download org/m");
  const auto t_start = Clock::now();
  std::error_code ec;
  while (!(fs::exists(part, ec) && fs::file_size(part, ec) > 300000) && seconds_since(t_start) < 30)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GT(fs::file_size(part, ec), 300000u);
  const auto t0 = Clock::now();
  ::kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid, 10), 130);
  const double s = seconds_since(t0);
  std::printf("[ measured ] exit %.3f s after SIGINT\n", s);
  EXPECT_LT(s, 2.0);
  const auto kept = fs::file_size(part, ec);
  ASSERT_FALSE(ec);
  EXPECT_GT(kept, 300000u);
  EXPECT_LT(kept, model.content.size());
  EXPECT_EQ(slurp(part), model.content.substr(0, kept));
  EXPECT_FALSE(fs::exists(snapshot("org/m") / "model.safetensors"));

  hub_.set_rate(0);
  hub_.clear_log();
  const Result r = hub_run("download org/m");
  ASSERT_EQ(r.code, 0) << r.err;
  expect_blob(snapshot("org/m"), "model.safetensors", model);
  std::vector<std::string> ranges;  // of the model (the tokenizer may have finished before)
  for (const auto& g : cdn_gets())
    if (g.path == "/cdn/" + model.etag()) ranges.push_back(g.range);
  EXPECT_EQ(ranges, std::vector<std::string>{"bytes=" + std::to_string(kept) + "-"});
  EXPECT_EQ(incomplete("org/m"), 0);
}

TEST_F(Hub, CorruptPartialFileIsCaughtBySha256) {
  const HubRepo repo = tiny8_repo();
  hub_.add_repo("org/m", repo);
  const HubFile& model = repo.files.at("model.safetensors");
  const fs::path part = repo_dir("org/m") / "blobs" / (model.etag() + ".incomplete");
  fs::create_directories(part.parent_path());
  std::ofstream(part) << std::string(1000, 'x');
  expect_error(hub_run("download org/m"), {"org/m", "model.safetensors", "sha256", model.etag()});
  EXPECT_FALSE(fs::exists(part));
  EXPECT_FALSE(fs::exists(snapshot("org/m") / "model.safetensors"));
  // The next run starts over and succeeds.
  ASSERT_EQ(hub_run("download org/m").code, 0);
  expect_blob(snapshot("org/m"), "model.safetensors", model);
}

TEST_F(Hub, GatedRepoNeedsTheToken) {
  HubRepo repo = tiny8_repo();
  repo.token = "hf_right";
  hub_.add_repo("org/gated", repo);
  expect_error(hub_run("download org/gated"),
               {"org/gated", "gated or private", "HTTP 401", "HF_TOKEN"});
  Result r = hub_run("download org/gated", "HF_TOKEN=hf_wrong");
  expect_error(r, {"org/gated", "gated or private", "no access", "HTTP 403"});
  EXPECT_EQ(r.err.find("hf_wrong"), std::string::npos);
  // The token file of $HF_HOME serves when HF_TOKEN is not set.
  fs::create_directories(path("hf_home"));
  write("hf_home/token", "hf_right\n");
  r = hub_run("download org/gated");
  ASSERT_EQ(r.code, 0) << r.err;
  expect_blob(snapshot("org/gated"), "model.safetensors", repo.files.at("model.safetensors"));
  for (const auto& s : hub_.log())
    if (s.server == "cdn") {
      EXPECT_EQ(s.authorization, "");
    }
}

TEST_F(Hub, NotFoundNamesWhat) {
  HubRepo repo = tiny8_repo();
  hub_.add_repo("org/m", repo);
  expect_error(hub_run("download org/nothere"), {"org/nothere", "no such repo", hub_.endpoint()});
  expect_error(hub_run("download org/m@nope"), {"org/m@nope", "no revision 'nope'"});
  expect_error(hub_run("diagnose org/nothere"), {"org/nothere", "no such repo"});
  repo.files["tokenizer.json"].listed_only = true;
  hub_.add_repo("org/gone", repo);
  expect_error(hub_run("download org/gone"), {"org/gone", "no file 'tokenizer.json'", "main"});

  HubRepo old;
  old.sha = kSha;
  old.revisions = {"main"};
  old.files["config.json"] = {"{}"};
  old.files["pytorch_model.bin"] = {"a pickle", true};
  hub_.add_repo("org/old", old);
  expect_error(hub_run("download org/old"),
               {"org/old", "only PyTorch pickles", "pytorch_model.bin"});
  old.files.erase("config.json");
  hub_.add_repo("org/notamodel", old);
  expect_error(hub_run("download org/notamodel"), {"org/notamodel", "no config.json"});
}

TEST_F(Hub, OfflineOrUnreachableSaysWhereTheCacheIs) {
  hub_.add_repo("org/m", tiny8_repo());
  expect_error(hub_run("download org/m", "HF_HUB_OFFLINE=1"),
               {"org/m", "not in the Hugging Face cache", cache_.string(), "offline"});
  expect_error(hub_run("--offline diagnose org/m"),
               {"org/m", "not in the Hugging Face cache", cache_.string(), "offline"});
  EXPECT_TRUE(hub_.log().empty());
  // Port 1 of the loopback: nothing listens, the connection is refused at once.
  const std::string nowhere = "HF_ENDPOINT=http://127.0.0.1:1";
  expect_error(hub_run("download org/m", nowhere),
               {"org/m", "cannot reach http://127.0.0.1:1", "not in the Hugging Face cache",
                cache_.string()});
  expect_error(hub_run("ppl org/m --heldout", nowhere), {"org/m", "cannot reach"});
  // Once cached, offline use needs no network.
  ASSERT_EQ(hub_run("download org/m").code, 0);
  const Result r = hub_run("download org/m", nowhere + " HF_HUB_OFFLINE=1");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, snapshot("org/m").string() + "\n");
  expect_error(hub_run("download org/m", nowhere), {"cannot reach", "HF_HUB_OFFLINE=1"});
}

TEST_F(Hub, FullDiskNamesTheFileAndLeavesTheSnapshotClean) {
  HubRepo repo = tiny8_repo();
  repo.files["model.safetensors"] = {random_bytes(4 << 20, 4), true};
  hub_.add_repo("org/m", repo);
  const std::string part =
      (repo_dir("org/m") / "blobs" / (repo.files.at("model.safetensors").etag() + ".incomplete"))
          .string();
  // A file size limit of 1 MiB makes writes fail as a full disk does (EFBIG instead of ENOSPC,
  // through the same path); SIGXFSZ ignored so that the write returns the error.
  const std::string cmd =
      "bash -c 'ulimit -f 1024; trap \"\" XFSZ; " + command("download org/m", "") + "'";
  const int st = std::system(cmd.c_str());
  const Result r{WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(path("stdout")),
                 slurp(path("stderr"))};
  expect_error(r, {part, "cannot write"});
  EXPECT_FALSE(fs::exists(snapshot("org/m") / "model.safetensors"));
  EXPECT_TRUE(fs::exists(part));  // kept for the next run
}

TEST_F(Hub, ConcurrentDownloadsOfOneBlobTakeTurns) {
  const HubRepo repo = tiny8_repo();
  hub_.add_repo("org/m", repo);
  const HubFile& model = repo.files.at("model.safetensors");
  // Another process (huggingface_hub's filelock, or a second headsurgeon) holds the blob's lock.
  const fs::path locks = cache_ / ".locks" / "models--org--m";
  fs::create_directories(locks);
  const int fd =
      ::open((locks / (model.etag() + ".lock")).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  const pid_t pid = spawn("download org/m");
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0);  // still waiting
  for (const auto& g : cdn_gets()) EXPECT_NE(g.path, "/cdn/" + model.etag());
  ::close(fd);  // released
  EXPECT_EQ(wait_exit(pid, 30), 0) << slurp(path("stderr"));
  expect_blob(snapshot("org/m"), "model.safetensors", model);
}

TEST_F(Hub, UsageErrors) {
  EXPECT_EQ(hub_run("download").code, 2);
  EXPECT_EQ(hub_run("download notanid").code, 2);
  EXPECT_EQ(hub_run("download org/m@").code, 2);
  EXPECT_EQ(hub_run("download ../x/y").code, 2);
  const Result r = hub_run("download --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--include"), std::string::npos);
  EXPECT_TRUE(hub_.log().empty());
}

}  // namespace
