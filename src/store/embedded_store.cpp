// The embedded store: rooms in an SQLite file in the data dir, so a restart keeps them, and
// a copy in memory so reads never touch the disk. Writes are synchronous and small (a room is
// created by a person clicking a button), so callers' threads may run them directly.
#include <sqlite3.h>

#include <algorithm>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "store/room_store.h"

namespace chatd::store {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class EmbeddedStore final : public RoomStore {
 public:
  explicit EmbeddedStore(const StoreConfig& cfg) : max_rooms_(cfg.max_rooms), max_members_(cfg.max_members_total) {
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
           " id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, last_active INTEGER NOT NULL DEFAULT 0)");
      // A file from before idle expiry: add the column (SQLite refuses it when present).
      sqlite3_exec(db_, "ALTER TABLE rooms ADD COLUMN last_active INTEGER NOT NULL DEFAULT 0", nullptr, nullptr, nullptr);
      // Rooms never marked count as active from now, so enabling expiry deletes nothing at once.
      exec(("UPDATE rooms SET last_active = " + std::to_string(now_ms()) + " WHERE last_active = 0").c_str());
      // Restricted rooms (issue 10): `access` holds the member list as a JSON array; NULL is
      // public. Files from before it get the column, every old room public.
      sqlite3_stmt* probe = nullptr;
      if (sqlite3_prepare_v2(db_, "SELECT access FROM rooms LIMIT 0", -1, &probe, nullptr) != SQLITE_OK)
        exec("ALTER TABLE rooms ADD COLUMN access TEXT");
      sqlite3_finalize(probe);
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
      const std::int64_t now = now_ms();
      std::int64_t seq = 0;
      if (rooms_.size() >= max_rooms_) {
        ec = Error::full;
      } else if (!room.members.empty() && members_ + room.members.size() > max_members_) {
        ec = Error::members_full;
      } else if (!insert(room, now, seq)) {
        failed_locked();
        ec = Error::engine_down;
      } else {
        succeeded_locked();
        members_ += room.members.size();
        index_.emplace(room.id, Slot{seq, now});
        rooms_.emplace(seq, std::move(room));
      }
    }
    done(ec);
  }

  void list(ListFn done) override {
    std::vector<Room> copy;
    {
      std::lock_guard lock(mu_);
      copy.reserve(rooms_.size());
      for (const auto& [seq, room] : rooms_) copy.push_back(room);
    }
    done({}, std::move(copy));
  }

  void find(const std::string& room_id, FindFn done) override {
    std::optional<Room> found;
    {
      std::lock_guard lock(mu_);
      if (auto it = index_.find(room_id); it != index_.end()) found = rooms_.at(it->second.seq);
    }
    done({}, std::move(found));
  }

  void remove(const std::string& room_id, std::int64_t idle_before_ms, RemoveFn done) override {
    std::error_code ec;
    bool removed = false;
    {
      std::lock_guard lock(mu_);
      auto it = index_.find(room_id);
      if (it != index_.end() && (idle_before_ms == 0 || it->second.last_active < idle_before_ms)) {
        if (!run("DELETE FROM rooms WHERE id = ?", room_id)) {
          failed_locked();
          ec = Error::engine_down;
        } else {
          succeeded_locked();
          members_ -= rooms_.at(it->second.seq).members.size();
          rooms_.erase(it->second.seq);
          index_.erase(it);
          removed = true;
        }
      }
    }
    done(ec, removed);
  }

  void touch(std::vector<std::string> room_ids, std::int64_t now_ms, CreateFn done) override {
    std::error_code ec;
    {
      std::lock_guard lock(mu_);
      // Memory takes the new time only after COMMIT: kept after a rollback, it would keep a
      // room alive here that the file (and so the first sweep after a restart) finds idle.
      std::vector<Slot*> touched;
      bool ok = sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) == SQLITE_OK;
      for (const auto& id : room_ids) {
        auto it = index_.find(id);
        if (!ok || it == index_.end() || it->second.last_active >= now_ms) continue;
        ok = run("UPDATE rooms SET last_active = ? WHERE id = ?", id, now_ms);
        touched.push_back(&it->second);
      }
      ok = ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK;
      if (ok) {
        succeeded_locked();
        for (auto* slot : touched) slot->last_active = now_ms;
      } else {
        failed_locked();
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        ec = Error::engine_down;
      }
    }
    done(ec);
  }

  void idle(std::int64_t before_ms, std::size_t limit, ListFn done) override {
    std::vector<std::pair<std::int64_t, std::int64_t>> found;  // last_active, seq
    std::vector<Room> out;
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, slot] : index_)
        if (slot.last_active < before_ms) found.emplace_back(slot.last_active, slot.seq);
      std::sort(found.begin(), found.end());
      if (found.size() > limit) found.resize(limit);
      for (auto& [t, seq] : found) out.push_back(rooms_.at(seq));
    }
    done({}, std::move(out));
  }

  // Down while the last write failed (disk full, I/O error): /healthz must not say UP while
  // rooms cannot be created. The next write that succeeds brings it back; with none coming
  // (nobody creates rooms on a node its balancer took out of rotation) a write is tried here
  // every few seconds, so freed space brings the node back by itself.
  bool up() const override {
    if (!write_failed_.load(std::memory_order_relaxed)) return true;
    std::lock_guard lock(mu_);
    const auto now = now_ms();
    if (now - last_probe_ms_ >= kProbeEveryMs) {
      last_probe_ms_ = now;
      if (probe_write_locked()) {
        last_error_.clear();
        write_failed_ = false;
      }
    }
    return !write_failed_.load(std::memory_order_relaxed);
  }
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

  // Whether a write reaches the disk now: the WAL is copied into the file and emptied (so what
  // follows must grow it again, not reuse its old space), then the header's user_version is
  // rewritten with its own value, a write that changes nothing.
  bool probe_write_locked() const {
    if (sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
    sqlite3_stmt* st = nullptr;
    int version = -1;
    if (sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0) return false;
    const std::string sql = "PRAGMA user_version = " + std::to_string(version);
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  }

  void failed_locked() {
    last_error_ = sqlite3_errmsg(db_);
    write_failed_ = true;
    last_probe_ms_ = now_ms();  // the first probe comes kProbeEveryMs after the failure
  }
  void succeeded_locked() {
    last_error_.clear();
    write_failed_ = false;
  }

  // Runs `sql` with the text `id` as its first parameter (and `n`, if any, as its first,
  // `id` then second). Returns whether it reached the file.
  bool run(const char* sql, const std::string& id, std::optional<std::int64_t> n = std::nullopt) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return false;
    int at = 1;
    if (n) sqlite3_bind_int64(st, at++, *n);
    sqlite3_bind_text(st, at, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    bool ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
  }

  void load() {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT id, name, seq, last_active, access FROM rooms ORDER BY seq", -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      auto text = [st](int col) {
        auto p = sqlite3_column_text(st, col);
        return std::string(p ? reinterpret_cast<const char*>(p) : "");
      };
      const std::int64_t seq = sqlite3_column_int64(st, 2);
      index_.emplace(text(0), Slot{seq, sqlite3_column_int64(st, 3)});
      Room room{text(0), text(1)};
      if (sqlite3_column_type(st, 4) != SQLITE_NULL) {
        room.restricted = true;
        boost::system::error_code jec;
        auto v = boost::json::parse(text(4), jec);
        if (jec || !v.is_array()) throw std::runtime_error(path_ + ": room " + room.id + " has an unreadable member list");
        for (const auto& u : v.get_array())
          if (u.is_string()) room.members.emplace_back(u.get_string());
      }
      members_ += room.members.size();  // a file from before the bound may hold more: none is dropped
      rooms_.emplace(seq, std::move(room));
    }
    std::string why = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db_);
    sqlite3_finalize(st);
    if (!why.empty()) throw std::runtime_error(path_ + ": reading the rooms failed after " + std::to_string(rooms_.size()) +
                                               " of them (" + why + "); chatd will not serve a partial room list.");
  }

  // Returns whether the room reached the file; `seq` gets its row's seq (creation order).
  bool insert(const Room& room, std::int64_t now, std::int64_t& seq) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, "INSERT INTO rooms (id, name, last_active, access) VALUES (?, ?, ?, ?)", -1, &st, nullptr) != SQLITE_OK)
      return false;
    sqlite3_bind_text(st, 1, room.id.data(), static_cast<int>(room.id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, room.name.data(), static_cast<int>(room.name.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, now);
    if (room.restricted) {
      boost::json::array m;
      for (const auto& u : room.members) m.emplace_back(u);
      auto access = boost::json::serialize(m);
      sqlite3_bind_text(st, 4, access.data(), static_cast<int>(access.size()), SQLITE_TRANSIENT);
    } else {
      sqlite3_bind_null(st, 4);
    }
    bool ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    if (ok) seq = sqlite3_last_insert_rowid(db_);
    return ok;
  }

  std::size_t max_rooms_;
  std::size_t max_members_;
  std::size_t members_ = 0;  // entries of all member lists in rooms_
  std::string path_;
  sqlite3* db_ = nullptr;
  mutable std::mutex mu_;
  mutable std::atomic<bool> write_failed_{false};  // up() may find the disk writable again
  mutable std::string last_error_;                 // under mu_
  static constexpr std::int64_t kProbeEveryMs = 3000;
  mutable std::int64_t last_probe_ms_ = 0;  // under mu_
  struct Slot {
    std::int64_t seq;          // the row's seq: the key in rooms_
    std::int64_t last_active;  // ms; creation or the latest touch
  };
  std::map<std::int64_t, Room> rooms_;  // by seq: creation order, which GET /chat/rooms keeps
  std::unordered_map<std::string, Slot> index_;
};

}  // namespace

std::unique_ptr<RoomStore> make_embedded_store(const StoreConfig& cfg) {
  return std::make_unique<EmbeddedStore>(cfg);
}

}  // namespace chatd::store
