// Reading the keys of one config.json object, with HF's aliases and one-line errors naming the
// file and the key (shared by the families' parsers, family_*.cpp).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace hs {

class ConfigKeys {
 public:
  // `j` must be an object; `prefix` names a nested object in messages ("attn_config.").
  ConfigKeys(const nlohmann::json& j, std::string path, std::string prefix = "");

  // The integer under the first present key of `names` (null counts as absent); when several
  // aliases are present they must agree, as HF accepts every one of them.
  std::optional<int64_t> find_int(std::initializer_list<const char*> names) const;
  int64_t require_int(std::initializer_list<const char*> names) const;
  // A positive size no larger than `max`.
  int64_t require_size(std::initializer_list<const char*> names, int64_t max) const;
  std::optional<double> find_number(const char* key) const;  // finite
  std::optional<bool> find_bool(const char* key) const;
  std::optional<std::string> find_string(const char* key) const;
  // The nested object under key (absent or null: an empty object).
  ConfigKeys object(const char* key) const;
  bool has(const char* key) const;
  // The raw value (null when absent).
  const nlohmann::json& raw(const char* key) const;

  [[noreturn]] void fail(const std::string& msg) const;
  const std::string& path() const { return path_; }
  std::string key(const char* k) const { return prefix_ + k; }

 private:
  const nlohmann::json* find(const char* key) const;
  const nlohmann::json& j_;
  std::string path_, prefix_;
};

}  // namespace hs
