#include "bus/history_file.h"

#include <algorithm>
#include <limits>
#include <random>
#include <stdexcept>

namespace chatd::bus {
namespace {

// Returns a fresh epoch token: 12 hex digits from the OS's randomness.
std::string new_epoch() {
  std::random_device rd;
  std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  static const char* hex = "0123456789abcdef";
  std::string s(12, '0');
  for (auto& c : s) {
    c = hex[v & 15];
    v >>= 4;
  }
  return s;
}

std::string column_text(sqlite3_stmt* st, int col) {
  auto p = sqlite3_column_text(st, col);
  return std::string(p ? reinterpret_cast<const char*>(p) : "", static_cast<std::size_t>(sqlite3_column_bytes(st, col)));
}

void bind_text(sqlite3_stmt* st, int i, const std::string& s) {
  sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
}

void bind_u64(sqlite3_stmt* st, int i, std::uint64_t v) {
  sqlite3_bind_int64(st, i, static_cast<sqlite3_int64>(std::min<std::uint64_t>(v, std::numeric_limits<sqlite3_int64>::max())));
}

// Resets a statement for reuse whatever happened to it.
struct Reset {
  sqlite3_stmt* st;
  ~Reset() {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }
};

}  // namespace

HistoryFile::HistoryFile(const std::string& path) : path_(path) {
  if (sqlite3_open(path_.c_str(), &db_) != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open " + path_ + ": " + why);
  }
  try {
    // Two connections (writer, reader) share the file; a rare lock wait must not fail a write.
    sqlite3_busy_timeout(db_, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    exec("CREATE TABLE IF NOT EXISTS room_seq (room TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID");
    // A rowid table: rowids grow with writing time, so the rows --history-ttl expires are a
    // prefix of the rowid order and pruning needs no index on ts.
    exec("CREATE TABLE IF NOT EXISTS messages (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
         " payload BLOB NOT NULL, client_id TEXT)");
    exec("CREATE UNIQUE INDEX IF NOT EXISTS messages_room_seq ON messages (room, seq)");
    // The epoch is drawn once per file; INSERT OR IGNORE keeps a concurrent opener's.
    auto* st = prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)");
    auto fresh = new_epoch();
    bind_text(st, 1, fresh);
    sqlite3_step(st);
    sqlite3_finalize(st);
    st = prepare("SELECT value FROM meta WHERE key = 'epoch'");
    if (sqlite3_step(st) == SQLITE_ROW) epoch_ = column_text(st, 0);
    sqlite3_finalize(st);
    if (epoch_.empty()) throw std::runtime_error(path_ + ": no epoch");

    insert_ = prepare("INSERT OR REPLACE INTO messages (room, seq, ts, payload, client_id) VALUES (?, ?, ?, ?, ?)");
    upsert_seq_ = prepare("INSERT INTO room_seq (room, seq) VALUES (?, ?)"
                          " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)");
    trim_ = prepare("DELETE FROM messages WHERE room = ? AND seq <= ?");
    read_after_ = prepare("SELECT seq, payload FROM messages WHERE room = ? AND seq > ? AND seq < ? AND ts >= ?"
                          " ORDER BY seq LIMIT ?");
    read_before_ = prepare("SELECT seq, payload FROM messages WHERE room = ? AND seq < ? AND ts >= ?"
                           " ORDER BY seq DESC LIMIT ?");
    // A room's ts grow with its seq, so this stops at the first row young enough.
    first_seq_ = prepare("SELECT seq FROM messages WHERE room = ? AND ts >= ? ORDER BY seq LIMIT 1");
  } catch (...) {
    sqlite3_close_v2(db_);
    throw;
  }
}

HistoryFile::~HistoryFile() {
  for (auto* st : {insert_, upsert_seq_, trim_, read_after_, read_before_, first_seq_}) sqlite3_finalize(st);
  sqlite3_close_v2(db_);
}

void HistoryFile::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : "unknown";
    sqlite3_free(err);
    throw std::runtime_error(path_ + ": " + why);
  }
}

sqlite3_stmt* HistoryFile::prepare(const char* sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) != SQLITE_OK)
    throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
  return st;
}

std::string HistoryFile::last_error() const { return sqlite3_errmsg(db_); }

std::unordered_map<std::string, std::uint64_t> HistoryFile::load_seqs() {
  std::unordered_map<std::string, std::uint64_t> out;
  auto* st = prepare("SELECT room, seq FROM room_seq");
  while (sqlite3_step(st) == SQLITE_ROW) out[column_text(st, 0)] = static_cast<std::uint64_t>(sqlite3_column_int64(st, 1));
  sqlite3_finalize(st);
  return out;
}

std::vector<HistoryFile::ClientId> HistoryFile::load_client_ids(std::int64_t since_ms) {
  // Newest first along the rowid (writing order), stopping at the first row that is too old.
  std::vector<ClientId> out;
  auto* st = prepare("SELECT room, client_id, seq, ts FROM messages ORDER BY rowid DESC");
  while (sqlite3_step(st) == SQLITE_ROW) {
    auto ts = sqlite3_column_int64(st, 3);
    if (ts < since_ms) break;
    if (sqlite3_column_type(st, 1) == SQLITE_NULL) continue;
    out.push_back({column_text(st, 0), column_text(st, 1), static_cast<std::uint64_t>(sqlite3_column_int64(st, 2)), ts});
  }
  sqlite3_finalize(st);
  std::reverse(out.begin(), out.end());
  return out;
}

bool HistoryFile::append(const std::vector<Row>& rows, std::size_t keep_per_room) {
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  std::unordered_map<std::string_view, std::uint64_t> last;  // room -> newest seq in this batch
  bool ok = true;
  for (const auto& r : rows) {
    auto& l = last[r.room_id];
    l = std::max(l, r.seq);
    if (keep_per_room == 0) continue;  // history off: only the seqs are kept
    Reset reset{insert_};
    bind_text(insert_, 1, r.room_id);
    bind_u64(insert_, 2, r.seq);
    sqlite3_bind_int64(insert_, 3, r.ts_ms);
    sqlite3_bind_blob(insert_, 4, r.payload.data(), static_cast<int>(r.payload.size()), SQLITE_STATIC);
    if (r.client_id.empty()) sqlite3_bind_null(insert_, 5);
    else bind_text(insert_, 5, r.client_id);
    if (sqlite3_step(insert_) != SQLITE_DONE) {
      ok = false;
      break;
    }
  }
  for (auto it = last.begin(); ok && it != last.end(); ++it) {
    const std::string room(it->first);
    {
      Reset reset{upsert_seq_};
      bind_text(upsert_seq_, 1, room);
      bind_u64(upsert_seq_, 2, it->second);
      ok = sqlite3_step(upsert_seq_) == SQLITE_DONE;
    }
    if (ok && keep_per_room > 0 && it->second > keep_per_room) {
      Reset reset{trim_};
      bind_text(trim_, 1, room);
      bind_u64(trim_, 2, it->second - keep_per_room);
      ok = sqlite3_step(trim_) == SQLITE_DONE;
    }
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return true;
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return false;
}

bool HistoryFile::erase_room(const std::string& room) {
  auto* st = prepare("DELETE FROM messages WHERE room = ?");
  bind_text(st, 1, room);
  const bool ok = sqlite3_step(st) == SQLITE_DONE;
  sqlite3_finalize(st);
  return ok;
}

std::size_t HistoryFile::prune_before(std::int64_t cutoff_ms, std::size_t max_rows) {
  // The expired rows are the oldest rowids: find the last of them among the first max_rows.
  auto* st = prepare("SELECT max(rowid) FROM (SELECT rowid, ts FROM messages ORDER BY rowid LIMIT ?) WHERE ts < ?");
  sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(max_rows));
  sqlite3_bind_int64(st, 2, cutoff_ms);
  sqlite3_int64 upto = 0;
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) upto = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (upto == 0) return 0;
  st = prepare("DELETE FROM messages WHERE rowid <= ?");
  sqlite3_bind_int64(st, 1, upto);
  std::size_t n = 0;
  if (sqlite3_step(st) == SQLITE_DONE) n = static_cast<std::size_t>(sqlite3_changes(db_));
  sqlite3_finalize(st);
  return n;
}

bool HistoryFile::read(const HistoryRequest& req, std::int64_t cutoff_ms, History& out) {
  // One read transaction: first_seq and the messages come from the same snapshot.
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  bool ok = true;
  {
    Reset reset{first_seq_};
    bind_text(first_seq_, 1, req.room_id);
    sqlite3_bind_int64(first_seq_, 2, cutoff_ms);
    int rc = sqlite3_step(first_seq_);
    if (rc == SQLITE_ROW) out.first_seq = static_cast<std::uint64_t>(sqlite3_column_int64(first_seq_, 0));
    else ok = rc == SQLITE_DONE;
  }
  if (ok && req.limit > 0) {
    const std::uint64_t before = req.before_seq ? req.before_seq : std::numeric_limits<std::uint64_t>::max();
    auto* st = req.after_seq ? read_after_ : read_before_;
    Reset reset{st};
    bind_text(st, 1, req.room_id);
    if (req.after_seq) {
      bind_u64(st, 2, req.after_seq);
      bind_u64(st, 3, before);
      sqlite3_bind_int64(st, 4, cutoff_ms);
      bind_u64(st, 5, static_cast<std::uint64_t>(req.limit));
    } else {
      bind_u64(st, 2, before);
      sqlite3_bind_int64(st, 3, cutoff_ms);
      bind_u64(st, 4, static_cast<std::uint64_t>(req.limit));
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      Delivery d;
      d.room_id = req.room_id;
      d.seq = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
      d.epoch = epoch_;
      auto* p = static_cast<const char*>(sqlite3_column_blob(st, 1));
      d.payload.assign(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(st, 1)));
      out.messages.push_back(std::move(d));
    }
    ok = rc == SQLITE_DONE;
    if (!req.after_seq) std::reverse(out.messages.begin(), out.messages.end());
  }
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  return ok;
}

}  // namespace chatd::bus
