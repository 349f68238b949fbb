// The headsurgeon binary running in the background, its stderr read as it comes (the tests of
// Ctrl-C and of crash safety).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace hs::test {

class Child {
  using Clock = std::chrono::steady_clock;

 public:
  // env: NAME=VALUE pairs set in the child only.
  explicit Child(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDERR_FILENO);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, STDOUT_FILENO);
      ::close(fds[0]);
      ::setenv("HEADSURGEON_DEVICE", "cpu", 0);
      for (const std::string& e : env) ::putenv(::strdup(e.c_str()));
      std::vector<char*> argv;
      std::string bin = HS_BINARY;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(HS_BINARY, argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~Child() {
    if (code_ == kRunning) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(fd_);
  }

  // Reads stderr until it holds `needle` (true) or the process ends or `timeout` passes.
  bool wait_for(const std::string& needle, double timeout = 120) {
    const auto t0 = Clock::now();
    while (err_.find(needle) == std::string::npos) {
      if (!read_some(0.05) && exited()) return err_.find(needle) != std::string::npos;
      if (seconds(t0) > timeout) return false;
    }
    return true;
  }
  void signal(int sig) { ::kill(pid_, sig); }
  bool running() { return !exited(); }
  // Waits for the exit; returns the exit code (-1 when killed by a signal).
  int wait(double timeout = 120) {
    const auto t0 = Clock::now();
    while (!exited() && seconds(t0) < timeout) read_some(0.01);
    while (read_some(0)) {
    }
    return code_;
  }
  const std::string& err() const { return err_; }

  static double seconds(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

 private:
  static constexpr int kRunning = -2;
  bool exited() {
    if (code_ != kRunning) return true;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) != pid_) return false;
    code_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return true;
  }
  bool read_some(double timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, int(timeout * 1000)) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    err_.append(buf, size_t(n));
    return true;
  }
  pid_t pid_ = -1;
  int fd_ = -1;
  int code_ = kRunning;
  std::string err_;
};

}  // namespace hs::test
