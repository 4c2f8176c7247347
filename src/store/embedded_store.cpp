// The embedded store: rooms in an SQLite file in the data dir, so a restart keeps them, and
// a copy in memory so reads never touch the disk. Writes are synchronous and small (a room is
// created by a person clicking a button), so callers' threads may run them directly.
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "store/room_store.h"

namespace chatd::store {
namespace {

class EmbeddedStore final : public RoomStore {
 public:
  explicit EmbeddedStore(const StoreConfig& cfg) : max_rooms_(cfg.max_rooms) {
    std::error_code ec;
    std::filesystem::create_directories(cfg.data_dir, ec);
    if (ec) throw std::runtime_error("cannot create data dir '" + cfg.data_dir + "': " + ec.message());
    path_ = (std::filesystem::path(cfg.data_dir) / "chatd.db").string();
    // SQLite takes a 0-byte file for a new, empty database: it would start with no rooms and
    // say nothing. A store that was written once has a header, so 0 bytes means it was lost.
    if (std::filesystem::exists(path_, ec) && std::filesystem::file_size(path_, ec) == 0 && !ec)
      throw std::runtime_error(path_ + " is empty (0 bytes) though it exists: the room store was truncated. Restore it "
                               "from a backup, or delete it to start with no rooms.");
    if (sqlite3_open(path_.c_str(), &db_) != SQLITE_OK) {
      std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw std::runtime_error("cannot open " + path_ + ": " + why);
    }
    // A damaged file is refused, not served in part (issue 13, finding 9). quick_check reads
    // every page once: milliseconds for the 10 MiB of 100k rooms.
    // A constructor that throws runs no destructor: close the file here when refusing it.
    try {
      check_integrity();
      exec("PRAGMA journal_mode=WAL");
      exec("PRAGMA synchronous=NORMAL");
      exec("CREATE TABLE IF NOT EXISTS rooms (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
           " id TEXT UNIQUE NOT NULL, name TEXT NOT NULL)");
      load();
    } catch (...) {
      sqlite3_close(db_);
      throw;
    }
  }
  ~EmbeddedStore() override { sqlite3_close(db_); }

  void create(Room room, CreateFn done) override {
    std::error_code ec;
    {
      std::lock_guard lock(mu_);
      if (rooms_.size() >= max_rooms_) {
        ec = Error::full;
      } else if (!insert(room)) {
        ec = Error::engine_down;
        last_error_ = sqlite3_errmsg(db_);
        write_failed_ = true;
      } else {
        last_error_.clear();
        write_failed_ = false;
        index_.emplace(room.id, rooms_.size());
        rooms_.push_back(std::move(room));
      }
    }
    done(ec);
  }

  void list(ListFn done) override {
    std::vector<Room> copy;
    {
      std::lock_guard lock(mu_);
      copy = rooms_;
    }
    done({}, std::move(copy));
  }

  void find(const std::string& room_id, FindFn done) override {
    std::optional<Room> found;
    {
      std::lock_guard lock(mu_);
      if (auto it = index_.find(room_id); it != index_.end()) found = rooms_[it->second];
    }
    done({}, std::move(found));
  }

  // Down while the last write failed (disk full, I/O error): /healthz must not say UP while
  // rooms cannot be created. The next write that succeeds brings it back.
  bool up() const override { return !write_failed_.load(std::memory_order_relaxed); }
  std::string describe() const override {
    std::lock_guard lock(mu_);
    return "embedded (" + path_ + ")" + (last_error_.empty() ? "" : ": last write failed: " + last_error_);
  }
  void stop() override {}

 private:
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string why = err ? err : "unknown";
      sqlite3_free(err);
      throw std::runtime_error(path_ + ": " + why);
    }
  }

  // Throws unless PRAGMA quick_check answers "ok".
  void check_integrity() {
    sqlite3_stmt* st = nullptr;
    std::string problems;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA quick_check(5)", -1, &st, nullptr);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      auto p = sqlite3_column_text(st, 0);
      std::string line = p ? reinterpret_cast<const char*>(p) : "";
      if (line != "ok") problems += (problems.empty() ? "" : "; ") + line;
      rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && problems.empty()) problems = sqlite3_errmsg(db_);
    sqlite3_finalize(st);
    if (!problems.empty())
      throw std::runtime_error(path_ + " is damaged (" + problems + "). Restore it from a backup; chatd will not serve "
                               "a partial room list. (sqlite3 " + path_ + " .recover can save what is readable.)");
  }

  void load() {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT id, name FROM rooms ORDER BY seq", -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      auto text = [st](int col) {
        auto p = sqlite3_column_text(st, col);
        return std::string(p ? reinterpret_cast<const char*>(p) : "");
      };
      index_.emplace(text(0), rooms_.size());
      rooms_.push_back(Room{text(0), text(1)});
    }
    std::string why = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db_);
    sqlite3_finalize(st);
    if (!why.empty()) throw std::runtime_error(path_ + ": reading the rooms failed after " + std::to_string(rooms_.size()) +
                                               " of them (" + why + "); chatd will not serve a partial room list.");
  }

  // Returns whether the room reached the file.
  bool insert(const Room& room) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "INSERT INTO rooms (id, name) VALUES (?, ?)", -1, &st, nullptr) != SQLITE_OK)
      return false;
    sqlite3_bind_text(st, 1, room.id.data(), static_cast<int>(room.id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, room.name.data(), static_cast<int>(room.name.size()), SQLITE_TRANSIENT);
    bool ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
  }

  std::size_t max_rooms_;
  std::string path_;
  sqlite3* db_ = nullptr;
  mutable std::mutex mu_;
  std::atomic<bool> write_failed_{false};
  std::string last_error_;  // under mu_
  std::vector<Room> rooms_;  // creation order, which GET /chat/rooms keeps
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace

std::unique_ptr<RoomStore> make_embedded_store(const StoreConfig& cfg) {
  return std::make_unique<EmbeddedStore>(cfg);
}

}  // namespace chatd::store
