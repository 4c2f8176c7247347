#include "bus/history_file.h"

#include <algorithm>
#include <limits>
#include <random>
#include <stdexcept>
#include <tuple>

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

// SQLite copies the text (SQLITE_TRANSIENT): callers bind temporaries and strings they change
// while the statement still steps; room ids and client ids are a few dozen bytes.
void bind_text(sqlite3_stmt* st, int i, const std::string& s) {
  sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
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
    // No automatic checkpoint (its fsyncs would stall the writer): the hook counts the WAL's
    // pages and the owner checkpoints (LocalBus, from another thread). After a checkpoint the
    // WAL file is cut back to this size.
    sqlite3_wal_hook(db_, &HistoryFile::on_wal, this);
    exec("PRAGMA journal_size_limit=67108864");
    exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    exec("CREATE TABLE IF NOT EXISTS room_seq (room TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID");
    // Keyed by (room, seq) and nothing else: a message is one B-tree insert, and a room's rows
    // are its history in order. Age pruning walks each room from its oldest row (a room's ts
    // grow with its seq), so no index on ts is needed.
    exec("CREATE TABLE IF NOT EXISTS history (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
         " payload BLOB NOT NULL, client_id TEXT, PRIMARY KEY (room, seq)) WITHOUT ROWID");
    // What was written since the last flush, in writing order: appending here dirties only the
    // table's last pages, where a row in `history` dirties a page of its room's (one page per
    // room per commit, most of a page per message when many rooms talk at once).
    exec("CREATE TABLE IF NOT EXISTS journal (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
         " payload BLOB NOT NULL, client_id TEXT)");
    migrate();
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

    insert_ = prepare("INSERT INTO journal (room, seq, ts, payload, client_id) VALUES (?, ?, ?, ?, ?)");
    upsert_seq_ = prepare("INSERT INTO room_seq (room, seq) VALUES (?, ?)"
                          " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)");
    trim_ = prepare("DELETE FROM history WHERE room = ? AND seq <= ?");
    read_after_ = prepare("SELECT seq, payload FROM history WHERE room = ? AND seq > ? AND seq < ? AND ts >= ?"
                          " ORDER BY seq LIMIT ?");
    read_before_ = prepare("SELECT seq, payload FROM history WHERE room = ? AND seq > ? AND seq < ? AND ts >= ?"
                           " ORDER BY seq DESC LIMIT ?");
    // A room's ts grow with its seq, so this stops at the first row young enough.
    first_seq_ = prepare("SELECT seq FROM history WHERE room = ? AND seq > ? AND ts >= ? ORDER BY seq LIMIT 1");
  } catch (...) {
    sqlite3_close_v2(db_);
    throw;
  }
}

// A file written before the `history` table (one rowid table `messages` with a unique index on
// (room, seq)) is moved into it in one transaction, so an upgrade keeps every message.
void HistoryFile::migrate() {
  auto* st = prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'");
  const bool old = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_finalize(st);
  if (!old) return;
  exec("BEGIN IMMEDIATE");
  try {
    // Another opener may have moved it while this one waited for the lock.
    st = prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'");
    const bool still = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (still) {
      exec("INSERT OR REPLACE INTO history (room, seq, ts, payload, client_id)"
           " SELECT room, seq, ts, payload, client_id FROM messages ORDER BY room, seq");
      exec("DROP TABLE messages");
    }
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
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

int HistoryFile::on_wal(void* self, sqlite3*, const char*, int pages) {
  static_cast<HistoryFile*>(self)->wal_pages_.store(pages, std::memory_order_relaxed);
  return SQLITE_OK;
}

bool HistoryFile::checkpoint() {
  int log = 0, done = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  return rc == SQLITE_OK && log == done;
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
  // Each room from its newest row back, stopping at its first row that is too old.
  std::vector<ClientId> out;
  auto* rooms = prepare("SELECT room FROM room_seq");
  auto* st = prepare("SELECT client_id, seq, ts FROM history WHERE room = ? ORDER BY seq DESC");
  while (sqlite3_step(rooms) == SQLITE_ROW) {
    auto room = column_text(rooms, 0);
    Reset reset{st};
    bind_text(st, 1, room);
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto ts = sqlite3_column_int64(st, 2);
      if (ts < since_ms) break;
      if (sqlite3_column_type(st, 0) == SQLITE_NULL) continue;
      out.push_back({room, column_text(st, 0), static_cast<std::uint64_t>(sqlite3_column_int64(st, 1)), ts});
    }
  }
  sqlite3_finalize(st);
  sqlite3_finalize(rooms);
  std::sort(out.begin(), out.end(), [](const ClientId& x, const ClientId& y) {
    return std::tie(x.ts_ms, x.room_id, x.seq) < std::tie(y.ts_ms, y.room_id, y.seq);
  });
  return out;
}

bool HistoryFile::append(const std::vector<Row>& rows, bool keep_rows) {
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  std::unordered_map<std::string_view, std::uint64_t> last;  // room -> newest seq in this batch
  bool ok = true;
  for (const auto& r : rows) {
    auto& l = last[r.room_id];
    l = std::max(l, r.seq);
    if (!keep_rows) continue;  // history off: only the seqs are kept
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
  // With rows kept, the journal holds the seqs until flush() copies them to room_seq: a commit
  // then touches only the journal's last pages.
  for (auto it = last.begin(); ok && !keep_rows && it != last.end(); ++it) {
    Reset reset{upsert_seq_};
    bind_text(upsert_seq_, 1, std::string(it->first));
    bind_u64(upsert_seq_, 2, it->second);
    ok = sqlite3_step(upsert_seq_) == SQLITE_DONE;
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return true;
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return false;
}

bool HistoryFile::flush(std::size_t keep_per_room) {
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  bool ok = true;
  try {
    exec("INSERT INTO room_seq (room, seq) SELECT room, max(seq) FROM journal WHERE true GROUP BY room"
         " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)");
    // Sorted by room, so each room's pages are written once per flush, however many rows.
    exec("INSERT OR REPLACE INTO history (room, seq, ts, payload, client_id)"
         " SELECT room, seq, ts, payload, client_id FROM journal ORDER BY room, seq");
    if (keep_per_room > 0) {
      // Each flushed room keeps its newest keep_per_room.
      auto* st = trim_;
      auto* rooms = prepare("SELECT room, max(seq) FROM journal GROUP BY room");
      while (ok && sqlite3_step(rooms) == SQLITE_ROW) {
        const auto last = static_cast<std::uint64_t>(sqlite3_column_int64(rooms, 1));
        if (last <= keep_per_room) continue;
        Reset reset{st};
        bind_text(st, 1, column_text(rooms, 0));
        bind_u64(st, 2, last - keep_per_room);
        ok = sqlite3_step(st) == SQLITE_DONE;
      }
      sqlite3_finalize(rooms);
    }
    if (ok) exec("DELETE FROM journal");
  } catch (const std::runtime_error&) {
    ok = false;
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return true;
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return false;
}

bool HistoryFile::erase_room(const std::string& room) {
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  bool ok = true;
  // The journal's seqs go to room_seq first, so the room's seq never goes back.
  for (const char* sql : {"INSERT INTO room_seq (room, seq) SELECT room, max(seq) FROM journal WHERE room = ?1 GROUP BY room"
                          " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)",
                          "DELETE FROM history WHERE room = ?1", "DELETE FROM journal WHERE room = ?1"}) {
    auto* st = prepare(sql);
    bind_text(st, 1, room);
    ok = sqlite3_step(st) == SQLITE_DONE && ok;
    sqlite3_finalize(st);
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return true;
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return false;
}

std::size_t HistoryFile::prune(std::int64_t cutoff_ms, std::size_t keep_per_room, std::size_t rooms_per_transaction) {
  auto* rooms = prepare("SELECT room, seq FROM room_seq WHERE room > ? ORDER BY room LIMIT ?");
  auto* young = prepare("SELECT seq FROM history WHERE room = ? AND ts >= ? ORDER BY seq LIMIT 1");
  auto* drop = prepare("DELETE FROM history WHERE room = ? AND seq <= ?");
  std::size_t deleted = 0;
  std::string after;  // the last room done: rooms are walked in key order, a chunk at a time
  for (bool more = true; more;) {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) break;
    bind_text(rooms, 1, after);
    sqlite3_bind_int64(rooms, 2, static_cast<sqlite3_int64>(rooms_per_transaction));
    std::size_t n = 0;
    bool ok = true;
    while (ok && sqlite3_step(rooms) == SQLITE_ROW) {
      ++n;
      after = column_text(rooms, 0);
      const auto last = static_cast<std::uint64_t>(sqlite3_column_int64(rooms, 1));
      // Everything before the room's first young row goes (all of it if none is young), and
      // what the size bound leaves out.
      std::uint64_t upto = last > keep_per_room ? last - keep_per_room : 0;
      {
        Reset reset{young};
        bind_text(young, 1, after);
        sqlite3_bind_int64(young, 2, cutoff_ms);
        const int rc = sqlite3_step(young);
        if (rc == SQLITE_ROW) upto = std::max(upto, static_cast<std::uint64_t>(sqlite3_column_int64(young, 0)) - 1);
        else if (rc == SQLITE_DONE) upto = std::numeric_limits<std::uint64_t>::max();
        else ok = false;
      }
      if (ok && upto > 0) {
        Reset reset{drop};
        bind_text(drop, 1, after);
        bind_u64(drop, 2, upto);
        ok = sqlite3_step(drop) == SQLITE_DONE;
        if (ok) deleted += static_cast<std::size_t>(sqlite3_changes(db_));
      }
    }
    sqlite3_reset(rooms);
    sqlite3_clear_bindings(rooms);
    more = ok && n == rooms_per_transaction;
    sqlite3_exec(db_, ok ? "COMMIT" : "ROLLBACK", nullptr, nullptr, nullptr);
  }
  for (auto* st : {rooms, young, drop}) sqlite3_finalize(st);
  return deleted;
}

bool HistoryFile::read(const HistoryRequest& req, std::int64_t cutoff_ms, std::uint64_t floor_seq, History& out) {
  // One read transaction: first_seq and the messages come from the same snapshot.
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  bool ok = true;
  {
    Reset reset{first_seq_};
    bind_text(first_seq_, 1, req.room_id);
    bind_u64(first_seq_, 2, floor_seq);
    sqlite3_bind_int64(first_seq_, 3, cutoff_ms);
    int rc = sqlite3_step(first_seq_);
    if (rc == SQLITE_ROW) out.first_seq = static_cast<std::uint64_t>(sqlite3_column_int64(first_seq_, 0));
    else ok = rc == SQLITE_DONE;
  }
  if (ok && req.limit > 0) {
    const std::uint64_t before = req.before_seq ? req.before_seq : std::numeric_limits<std::uint64_t>::max();
    auto* st = req.after_seq ? read_after_ : read_before_;
    Reset reset{st};
    bind_text(st, 1, req.room_id);
    bind_u64(st, 2, std::max(req.after_seq, floor_seq));
    bind_u64(st, 3, before);
    sqlite3_bind_int64(st, 4, cutoff_ms);
    bind_u64(st, 5, static_cast<std::uint64_t>(req.limit));
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
