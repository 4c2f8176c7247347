// The browser pages and their assets, read once at start-up and served from memory: the set
// is small, and a fixed map cannot be walked out of with "..".
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace chatd::net {

class StaticFiles {
 public:
  struct File {
    std::string body;
    std::string content_type;
    std::string etag;  // "\"<hash of body>\"": a browser revalidates with it and gets a 304
  };
  // Loads every file under `root` (up to a bound) keyed by "/" + its relative path.
  // An empty or missing root loads nothing.
  explicit StaticFiles(const std::string& root);

  // Returns the file at `path` ("/room.html", "/assets/app.css"), or nullptr.
  const File* find(std::string_view path) const;
  // Returns whether an If-None-Match value names `etag` (RFC 9110 13.1.2: weak comparison).
  static bool matches(std::string_view if_none_match, std::string_view etag);
  std::size_t size() const { return files_.size(); }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::map<std::string, File, std::less<>> files_;
};

}  // namespace chatd::net
