#include "net/static_files.h"

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>

namespace chatd::net {
namespace {

constexpr std::size_t kMaxFiles = 256;
constexpr std::uintmax_t kMaxFileBytes = 4 * 1024 * 1024;

std::string content_type_for(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace

StaticFiles::StaticFiles(const std::string& root) : root_(root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (root.empty() || !fs::is_directory(root, ec)) return;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->file_size(ec) > kMaxFileBytes) continue;
    if (files_.size() >= kMaxFiles) break;
    std::ifstream in(it->path(), std::ios::binary);
    std::ostringstream body;
    body << in.rdbuf();
    auto rel = fs::relative(it->path(), root, ec).generic_string();
    auto bytes = body.str();
    char tag[24];
    std::snprintf(tag, sizeof tag, "\"%016zx\"", std::hash<std::string>{}(bytes));
    files_.emplace("/" + rel, File{std::move(bytes), content_type_for(it->path()), tag});
  }
}

bool StaticFiles::matches(std::string_view list, std::string_view etag) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == "*" || item == etag) return true;
  }
  return false;
}

const StaticFiles::File* StaticFiles::find(std::string_view path) const {
  auto it = files_.find(path);
  return it == files_.end() ? nullptr : &it->second;
}

}  // namespace chatd::net
