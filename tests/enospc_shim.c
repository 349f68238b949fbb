// A disk that fills up, for the crash-safety tests: loaded with LD_PRELOAD into headsurgeon, it
// lets HS_ENOSPC_BYTES bytes be written to regular files under HS_ENOSPC_DIR, then fails every
// further write(2) there with ENOSPC, as a full filesystem does. Writes elsewhere (stderr, pipes,
// other folders) pass through. A mounted tiny filesystem would need privileges CI may not have.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long long g_left = -1;  // bytes the disk still takes; -1 until read from the environment
static const char* g_dir;

static int under_dir(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = 0;
  return strncmp(path, g_dir, strlen(g_dir)) == 0;
}

ssize_t write(int fd, const void* buf, size_t count) {
  static ssize_t (*real)(int, const void*, size_t);
  if (!real) real = (ssize_t(*)(int, const void*, size_t))dlsym(RTLD_NEXT, "write");
  if (g_left < 0) {
    const char* b = getenv("HS_ENOSPC_BYTES");
    g_dir = getenv("HS_ENOSPC_DIR");
    g_left = b && g_dir ? atoll(b) : LLONG_MAX;
    if (!g_dir) g_dir = "/";
  }
  if (g_left == LLONG_MAX || !under_dir(fd)) return real(fd, buf, count);
  if (g_left == 0) {
    errno = ENOSPC;
    return -1;
  }
  const size_t n = count < (size_t)g_left ? count : (size_t)g_left;
  const ssize_t w = real(fd, buf, n);
  if (w > 0) g_left -= w;
  return w;
}
