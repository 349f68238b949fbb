// The report as a reader meets it: headless Chromium renders the HTML of a real repair run; the
// screenshot must not be blank (figures drawn, not just text) and the page must report no
// errors. Labelled `browser`; skipped, saying so, where Chromium is not installed.
#include <gtest/gtest.h>
#include <png.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "tiny_run.h"

namespace {

namespace fs = std::filesystem;
using hs::test::slurp;

const char* kChromium = "/usr/bin/chromium";

// Records script errors, failed loads and console errors/warnings into an attribute of <html>,
// which --dump-dom then shows. Injected into a test copy of the page only.
const char* kRecorder =
    "<script>(function(){var e=[];function rec(m){e.push(String(m));"
    "document.documentElement.setAttribute('data-hs-errors',e.join(' | '));}"
    "window.addEventListener('error',function(ev){rec(ev.message||('failed to load '+"
    "(ev.target&&(ev.target.src||ev.target.href))));},true);"
    "['error','warn'].forEach(function(k){var f=console[k];console[k]=function(){"
    "rec(k+': '+Array.prototype.join.call(arguments,' '));f.apply(console,arguments);};});"
    "})();</script>";

struct Image {
  int width = 0, height = 0;
  std::vector<unsigned char> rgb;
};

Image read_png(const fs::path& path) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str())) return {};
  img.format = PNG_FORMAT_RGB;
  Image out{int(img.width), int(img.height), std::vector<unsigned char>(PNG_IMAGE_SIZE(img))};
  if (!png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr)) {
    png_image_free(&img);
    return {};
  }
  return out;
}

struct Pixels {
  size_t total = 0, ink = 0, colour = 0;  // ink: not near-white; colour: clearly not grey
};

Pixels count(const Image& im) {
  Pixels p;
  for (size_t i = 0; i + 2 < im.rgb.size(); i += 3) {
    const int r = im.rgb[i], g = im.rgb[i + 1], b = im.rgb[i + 2];
    ++p.total;
    p.ink += std::min({r, g, b}) < 240;
    p.colour += std::max({r, g, b}) - std::min({r, g, b}) > 60;
  }
  return p;
}

class ReportBrowser : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kChromium))
      GTEST_SKIP() << kChromium << " is not installed (apt-get install chromium): not rendered";
    dir_ = fs::temp_directory_path() /
           ("hs_browser_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Chromium on a local file with a fresh profile and no network services; its log (console
  // messages included) goes to `err`.
  int chromium(const std::string& args, const fs::path& html, std::string* out, std::string* err) {
    const fs::path profile = dir_ / ("profile" + std::to_string(++runs_));
    const std::string o = (dir_ / "chromium.out").string(), e = (dir_ / "chromium.err").string();
    const std::string cmd = std::string("timeout 120 ") + kChromium +
                            " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
                            " --disable-background-networking --disable-component-update"
                            " --disable-sync --enable-logging=stderr --v=0 --user-data-dir=" +
                            profile.string() + " " + args + " file://" + html.string() + " >" + o +
                            " 2>" + e;
    const int st = std::system(cmd.c_str());
    *out = slurp(o);
    *err = slurp(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

  // Console messages in Chromium's log and errors the page itself recorded; fails the test when
  // the page was not rendered at all.
  std::vector<std::string> page_errors(const fs::path& html) {
    std::string page = slurp(html);
    const size_t head = page.find("<head>");
    if (head == std::string::npos) {
      ADD_FAILURE() << html << " has no <head>";
      return {};
    }
    page.insert(head + 6, kRecorder);
    const fs::path probe = dir_ / ("probe-" + html.filename().string());
    std::ofstream(probe) << page;
    std::string dom, log;
    EXPECT_EQ(chromium("--dump-dom", probe, &dom, &log), 0) << log;
    EXPECT_NE(dom.find("</html>"), std::string::npos) << "no DOM dumped: " << log;
    std::vector<std::string> errors;
    std::istringstream lines(log);
    for (std::string line; std::getline(lines, line);)
      if (line.find(":CONSOLE") != std::string::npos) errors.push_back(line);
    const size_t at = dom.find("data-hs-errors=\"");
    if (at != std::string::npos) errors.push_back(dom.substr(at, dom.find('"', at + 16) - at + 1));
    return errors;
  }

  fs::path dir_;
  int runs_ = 0;
};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

TEST_F(ReportBrowser, RendersWithoutErrorsAndIsNotBlank) {
  ASSERT_EQ(hs::test::tiny_repair_run(dir_, "run", 2, 5), 0) << slurp(dir_ / "repair.err");
  const fs::path report = dir_ / "report.html";
  const std::string cmd = std::string(HS_BINARY) + " report " + (dir_ / "run").string() + " -o " +
                          report.string() + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);

  // The detector sees errors where there are some: a broken script and a missing image.
  std::string bad = slurp(report);
  bad.insert(bad.find("</body>"),
             "<img src=\"missing.png\"><script>undefined_function();</script>");
  std::ofstream(dir_ / "bad.html") << bad;
  EXPECT_GE(page_errors(dir_ / "bad.html").size(), 2u);

  const auto errors = page_errors(report);
  EXPECT_TRUE(errors.empty()) << join(errors);

  std::string out, log;
  const fs::path png = dir_ / "report.png";
  ASSERT_EQ(chromium("--screenshot=" + png.string() + " --window-size=1200,2000 --hide-scrollbars",
                     report, &out, &log),
            0)
      << log;
  const Image im = read_png(png);
  ASSERT_EQ(im.width, 1200) << "not a readable PNG: " << png;
  ASSERT_EQ(im.height, 2000);
  const Pixels p = count(im);
  // Text, tables and figures cover a good part of the first screen, and the heatmaps and
  // histogram bring colour (text and table lines alone are grey).
  EXPECT_GT(double(p.ink) / double(p.total), 0.03) << p.ink << " of " << p.total;
  EXPECT_GT(p.colour, 5000u);
  EXPECT_EQ(log.find(":CONSOLE"), std::string::npos) << log;

  // ... and the count tells a blank page apart.
  std::ofstream(dir_ / "blank.html") << "<!DOCTYPE html><html><head></head><body></body></html>";
  const fs::path blank_png = dir_ / "blank.png";
  ASSERT_EQ(chromium("--screenshot=" + blank_png.string() + " --window-size=1200,2000",
                     dir_ / "blank.html", &out, &log),
            0)
      << log;
  EXPECT_EQ(count(read_png(blank_png)).ink, 0u);
}

}  // namespace
