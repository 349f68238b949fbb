// Downloading a model from the Hugging Face hub into the local cache, laid out as
// huggingface_hub lays it out so that transformers and huggingface_hub share what we fetch:
//   CACHE/models--org--name/blobs/<etag>                 the bytes, named by their ETag
//   CACHE/models--org--name/snapshots/<commit>/<file>    relative symbolic links into blobs/
//   CACHE/models--org--name/refs/<revision>              the commit a branch or tag was at
// The protocol: GET ENDPOINT/api/models/REPO/revision/REV answers the commit ("sha") and the
// files ("siblings"); HEAD ENDPOINT/REPO/resolve/COMMIT/FILE answers the file's ETag and size,
// or for large (LFS) files a redirect to where the bytes are, with X-Linked-Etag (their sha256)
// and X-Linked-Size; that URL serves Range requests.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/model_files.h"

namespace hs::hub {

// Where to download from and to, as huggingface_hub reads them from the environment.
struct Settings {
  std::string endpoint;  // $HF_ENDPOINT, else https://huggingface.co (no trailing '/')
  std::string token;     // $HF_TOKEN, else the file $HF_HOME/token; "" when none. Never printed.
  std::string cache;     // hub_cache_root()
  bool offline = false;  // $HF_HUB_OFFLINE is 1, true, yes or on: the cache only
};
Settings settings_from_env();

// Bytes of the files this download fetches (files already cached do not count).
struct Progress {
  int64_t done = 0, total = 0;
  int files_done = 0, files = 0;
};

struct Options {
  // Globs (fnmatch, '*' crossing '/') of the files to fetch; empty: the files a model needs
  // (config.json, the safetensors weights and their index, tokenizer.json, tokenizer_config.json
  // and generation_config.json when present). PyTorch pickles (*.bin, *.pt, *.pth, *.pkl,
  // *.ckpt) are never fetched.
  std::vector<std::string> include;
  int parallel = 4;  // files downloaded at once
  // Called on the calling thread about 10 times a second while bytes arrive, and once at the end.
  std::function<void(const Progress&)> progress;
};

// What a download did.
struct Result {
  std::string snapshot;  // the snapshot directory
  std::string commit;
  int files = 0;      // files in the snapshot that were asked for
  int fetched = 0;    // of them, downloaded now (the others were cached)
  int64_t bytes = 0;  // bytes received now
  double seconds = 0;
};

// Downloads ID into s.cache (offline: finds it there) and returns its snapshot. Errors are one
// line naming the id (or the file that could not be written): gated or private repos (401/403:
// set HF_TOKEN), no such repo, revision or file (404), the hub not reachable, a full disk.
// Blobs arrive as blobs/<etag>.incomplete, renamed once complete (and, for LFS files, their
// sha256 checked); an interrupted download (Ctrl-C: hs::Interrupted) or one that failed leaves
// the .incomplete file, which the next attempt resumes with a Range request. A connection that
// drops is retried with backoff.
Result download(const HubId& id, const Settings& s, const Options& o);

}  // namespace hs::hub
