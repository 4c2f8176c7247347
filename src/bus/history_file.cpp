#include "bus/history_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <tuple>

#include "log/log.h"

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

std::string_view column_blob(sqlite3_stmt* st, int col) {
  auto* p = static_cast<const char*>(sqlite3_column_blob(st, col));
  return {p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(st, col))};
}

// SQLite copies the text (SQLITE_TRANSIENT): callers bind temporaries and strings they change
// while the statement still steps; room ids and client ids are a few dozen bytes.
void bind_text(sqlite3_stmt* st, int i, std::string_view s) {
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

// The blobs' encoding, little-endian. A message: seq u64, ts i64, client id length u32,
// payload length u32, client id, payload. A journal record: its length u32, then per message the
// room's length u32 and room, then the message. A chunk row: its room's messages, ascending seq.
void put_u32(std::string& b, std::size_t v) {
  const auto x = static_cast<std::uint32_t>(v);
  const char bytes[4] = {static_cast<char>(x), static_cast<char>(x >> 8), static_cast<char>(x >> 16), static_cast<char>(x >> 24)};
  b.append(bytes, 4);
}
void put_u64(std::string& b, std::uint64_t x) {
  put_u32(b, static_cast<std::size_t>(x & 0xffffffffu));
  put_u32(b, static_cast<std::size_t>(x >> 32));
}
void put_message(std::string& b, std::uint64_t seq, std::int64_t ts, std::string_view client_id, std::string_view payload) {
  put_u64(b, seq);
  put_u64(b, static_cast<std::uint64_t>(ts));
  put_u32(b, client_id.size());
  put_u32(b, payload.size());
  b.append(client_id);
  b.append(payload);
}

// Reads the blobs above; every read is checked against the end, so a damaged blob ends the
// walk (the callers answer an error) instead of reading past it.
struct Reader {
  std::string_view in;
  bool ok = true;
  std::uint64_t u(std::size_t n) {
    if (!ok || in.size() < n) {
      ok = false;
      return 0;
    }
    std::uint64_t x = 0;
    for (std::size_t i = 0; i < n; ++i) x |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
    in.remove_prefix(n);
    return x;
  }
  std::string_view bytes(std::size_t n) {
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    auto s = in.substr(0, n);
    in.remove_prefix(n);
    return s;
  }
};

struct MessageView {
  std::uint64_t seq = 0;
  std::int64_t ts_ms = 0;
  std::string_view client_id;
  std::string_view payload;
};

// Reads one message; returns false at the end of the blob or on damage (r.ok tells which).
bool next_message(Reader& r, MessageView& m) {
  if (r.in.empty()) return false;
  m.seq = r.u(8);
  m.ts_ms = static_cast<std::int64_t>(r.u(8));
  const auto c = static_cast<std::size_t>(r.u(4));
  const auto p = static_cast<std::size_t>(r.u(4));
  m.client_id = r.bytes(c);
  m.payload = r.bytes(p);
  return r.ok;
}

constexpr const char* kBegin = "BEGIN IMMEDIATE";

// A journal file is closed and a new one begun at this size, so that a file whose messages
// are all folded can be deleted while messages keep coming.
constexpr std::size_t kJournalFileBytes = 4u << 20;

// Writes all of `data` to `fd`; returns false (errno set) when it could not.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const auto n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

HistoryFile::HistoryFile(const std::string& path) : path_(path) {
  if (sqlite3_open(path_.c_str(), &db_) != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open " + path_ + ": " + why);
  }
  try {
    // Three connections (writer, reader, checkpointer) share the file; a rare lock wait must
    // not fail a write.
    sqlite3_busy_timeout(db_, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    // 16 MiB of pages (SQLite's default is 2 MiB): each fold writes new chunk pages, which in a
    // small cache evict the B-tree pages every fold needs, and those are then read again.
    exec("PRAGMA cache_size=-16384");
    // No automatic checkpoint (its fsyncs would stall the writer): the hook counts the WAL's
    // pages and the owner checkpoints (LocalBus, from another thread). After a checkpoint the
    // WAL file is cut back to this size.
    sqlite3_wal_hook(db_, &HistoryFile::on_wal, this);
    exec("PRAGMA journal_size_limit=67108864");
    exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    exec("CREATE TABLE IF NOT EXISTS room_seq (room TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID");
    // Erased rooms whose messages (seq <= seq) may still be in journal files numbered up to
    // `journal`: recover() skips those. The files are numbered in the order they are written.
    exec("CREATE TABLE IF NOT EXISTS erased (room TEXT PRIMARY KEY, seq INTEGER NOT NULL, journal INTEGER NOT NULL)"
         " WITHOUT ROWID");
    // A room's chunks are its history in order; last_ts lets age pruning and reads skip a
    // chunk without decoding it (a room's ts grow with its seq).
    exec("CREATE TABLE IF NOT EXISTS chunks (room TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
         " last_ts INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (room, first_seq)) WITHOUT ROWID");
    // Client ids whose messages left the chunks inside the dedupe window, by age (see
    // keep_client_ids_for): appended in ts order, dropped from the old end.
    exec("CREATE TABLE IF NOT EXISTS client_ids (ts INTEGER NOT NULL, room TEXT NOT NULL, id TEXT NOT NULL,"
         " seq INTEGER NOT NULL, PRIMARY KEY (ts, room, id)) WITHOUT ROWID");
    insert_id_ = prepare("INSERT OR IGNORE INTO client_ids (ts, room, id, seq) VALUES (?, ?, ?, ?)");
    chunks_upto_ = prepare("SELECT data FROM chunks WHERE room = ?1 AND first_seq <= ?2 AND last_ts >= ?3");
    insert_chunk_ = prepare("INSERT OR REPLACE INTO chunks (room, first_seq, last_seq, last_ts, data) VALUES (?, ?, ?, ?, ?)");
    upsert_seq_ = prepare("INSERT INTO room_seq (room, seq) VALUES (?, ?)"
                          " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)");
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
    st = prepare("SELECT coalesce(max(journal), 0) FROM erased");
    if (sqlite3_step(st) == SQLITE_ROW) erased_upto_ = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);

    // A chunk holds at most kChunkMessages, so first_seq <= ?2 bounds the walk to chunks that
    // lie wholly at or below ?2 + kChunkMessages - 1 (the caller passes that difference).
    trim_ = prepare("DELETE FROM chunks WHERE room = ? AND first_seq <= ?");
    // From the chunk that may hold ?2 (the newest starting at or below it) upwards.
    read_after_ = prepare("SELECT first_seq, data FROM chunks WHERE room = ?1 AND first_seq >= "
                          "(SELECT coalesce(max(first_seq), 0) FROM chunks WHERE room = ?1 AND first_seq <= ?2)"
                          " AND first_seq < ?3 AND last_ts >= ?4 ORDER BY first_seq");
    read_before_ = prepare("SELECT first_seq, data FROM chunks WHERE room = ?1 AND first_seq < ?2 AND last_ts >= ?3"
                           " ORDER BY first_seq DESC");
  } catch (...) {
    sqlite3_close_v2(db_);
    throw;
  }
}

// Files of older layouts are moved into chunks in one transaction, so an upgrade keeps every
// message: a rowid table `messages` (the first layout), and the WITHOUT ROWID (room, seq)
// table `history` with a per-message `journal` (room, seq, ts, payload, client_id).
void HistoryFile::migrate() {
  auto has = [&](const char* sql) {
    auto* st = prepare(sql);
    const bool yes = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return yes;
  };
  const char* old_messages = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'";
  const char* old_history = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'";
  const char* old_journal = "SELECT 1 FROM pragma_table_info('journal') WHERE name = 'room'";
  if (!has(old_messages) && !has(old_history) && !has(old_journal)) return;
  exec(kBegin);
  try {
    // Another opener may have moved them while this one waited for the lock.
    if (has(old_messages)) {
      import_rows("SELECT room, seq, ts, payload, client_id FROM messages ORDER BY room, seq");
      exec("DROP TABLE messages");
    }
    if (has(old_history)) {
      import_rows("SELECT room, seq, ts, payload, client_id FROM history ORDER BY room, seq");
      exec("DROP TABLE history");
    }
    if (has(old_journal)) {  // what a killed process of that layout left
      import_rows("SELECT room, seq, ts, payload, client_id FROM journal ORDER BY room, seq");
      exec("DROP TABLE journal");
    }
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void HistoryFile::import_rows(const char* select_sql) {
  std::unordered_map<std::string, std::uint64_t> folded;
  auto* st = prepare("SELECT room, max(last_seq) FROM chunks GROUP BY room");
  while (sqlite3_step(st) == SQLITE_ROW) folded[column_text(st, 0)] = static_cast<std::uint64_t>(sqlite3_column_int64(st, 1));
  sqlite3_finalize(st);
  std::string room;
  std::vector<Stored> pending;
  auto write = [&] {
    if (pending.empty()) return;
    if (!write_chunks(room, pending)) throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
    pending.clear();
  };
  st = prepare(select_sql);
  int rc = SQLITE_DONE;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    auto r = column_text(st, 0);
    if (r != room || pending.size() == kChunkMessages) {
      write();
      room = std::move(r);
    }
    const auto seq = static_cast<std::uint64_t>(sqlite3_column_int64(st, 1));
    auto& f = folded[room];
    if (seq <= f) continue;
    f = seq;
    auto payload = column_blob(st, 3);
    pending.push_back({seq, sqlite3_column_int64(st, 2), std::string(payload),
                       sqlite3_column_type(st, 4) == SQLITE_NULL ? std::string() : column_text(st, 4), 0});
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) throw std::runtime_error(path_ + ": " + sqlite3_errmsg(db_));
  write();
  // Old journals were not counted in room_seq yet.
  exec("INSERT INTO room_seq (room, seq) SELECT room, max(last_seq) FROM chunks WHERE true GROUP BY room"
       " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)");
}

HistoryFile::~HistoryFile() {
  for (auto* st : {insert_chunk_, upsert_seq_, trim_, read_after_, read_before_, insert_id_, chunks_upto_}) sqlite3_finalize(st);
  if (journal_fd_ >= 0) ::close(journal_fd_);
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

std::string HistoryFile::last_error() const {
  if (!journal_error_.empty()) return journal_error_;
  return failure_.empty() ? sqlite3_errmsg(db_) : failure_;
}

bool HistoryFile::begin() {
  failure_.clear();  // a reason kept from an earlier transaction is not this one's
  return sqlite3_exec(db_, kBegin, nullptr, nullptr, nullptr) == SQLITE_OK;
}

void HistoryFile::rollback() {
  // The step that failed named the cause (a full disk, a read-only file); a ROLLBACK would
  // replace it, and SQLite may have ended the transaction already (SQLITE_FULL does).
  failure_ = sqlite3_errmsg(db_);
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

std::unordered_map<std::string, std::uint64_t> HistoryFile::load_seqs() {
  std::unordered_map<std::string, std::uint64_t> out;
  auto* st = prepare("SELECT room, seq FROM room_seq");
  while (sqlite3_step(st) == SQLITE_ROW) out[column_text(st, 0)] = static_cast<std::uint64_t>(sqlite3_column_int64(st, 1));
  sqlite3_finalize(st);
  return out;
}

std::vector<HistoryFile::ClientId> HistoryFile::load_client_ids(std::int64_t since_ms) {
  std::vector<ClientId> out;
  auto* rooms = prepare("SELECT room FROM room_seq");
  auto* st = prepare("SELECT data FROM chunks WHERE room = ? AND last_ts >= ? ORDER BY first_seq");
  while (sqlite3_step(rooms) == SQLITE_ROW) {
    auto room = column_text(rooms, 0);
    Reset reset{st};
    bind_text(st, 1, room);
    sqlite3_bind_int64(st, 2, since_ms);
    while (sqlite3_step(st) == SQLITE_ROW) {
      Reader r{column_blob(st, 0)};
      for (MessageView m; next_message(r, m);)
        if (m.ts_ms >= since_ms && !m.client_id.empty()) out.push_back({room, std::string(m.client_id), m.seq, m.ts_ms});
    }
  }
  sqlite3_finalize(st);
  sqlite3_finalize(rooms);
  st = prepare("SELECT room, id, seq, ts FROM client_ids WHERE ts >= ?");
  sqlite3_bind_int64(st, 1, since_ms);
  while (sqlite3_step(st) == SQLITE_ROW)
    out.push_back({column_text(st, 0), column_text(st, 1), static_cast<std::uint64_t>(sqlite3_column_int64(st, 2)),
                   sqlite3_column_int64(st, 3)});
  sqlite3_finalize(st);
  std::sort(out.begin(), out.end(), [](const ClientId& x, const ClientId& y) {
    return std::tie(x.ts_ms, x.room_id, x.seq) < std::tie(y.ts_ms, y.room_id, y.seq);
  });
  return out;
}

std::string HistoryFile::journal_path(std::uint64_t n) const {
  auto base = path_;
  if (base.ends_with(".db")) base.resize(base.size() - 3);
  return base + ".journal." + std::to_string(n);
}

std::vector<std::pair<std::uint64_t, std::string>> HistoryFile::journal_files() const {
  std::vector<std::pair<std::uint64_t, std::string>> out;
  const auto prefix = std::filesystem::path(journal_path(0)).filename().string();
  const auto stem = prefix.substr(0, prefix.size() - 1);  // without the "0"
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path_).parent_path().empty()
                                                               ? std::filesystem::path(".")
                                                               : std::filesystem::path(path_).parent_path(), ec)) {
    const auto name = e.path().filename().string();
    if (!name.starts_with(stem)) continue;
    std::uint64_t n = 0;
    const auto* first = name.data() + stem.size();
    const auto* last = name.data() + name.size();
    if (auto [p, err] = std::from_chars(first, last, n); err == std::errc() && p == last && first != last)
      out.emplace_back(n, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool HistoryFile::append(std::span<const Row> rows, bool keep_rows, std::int64_t& batch) {
  batch = 0;
  if (keep_rows) {
    if (journal_fd_ < 0 || journal_size_ >= kJournalFileBytes) {
      if (journal_fd_ >= 0) ::close(journal_fd_);
      journal_size_ = 0;
      journal_fd_ = ::open(journal_path(++journal_n_).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (journal_fd_ < 0) {
        journal_error_ = std::strerror(errno);
        return false;
      }
      journal_.push_back({journal_n_, 0});
    }
    buf_.assign(4, '\0');
    for (const auto& r : rows) {
      put_u32(buf_, r.room_id.size());
      buf_.append(r.room_id);
      put_message(buf_, r.seq, r.ts_ms, r.client_id, r.payload);
    }
    std::string len;
    put_u32(len, buf_.size() - 4);
    buf_.replace(0, 4, len);
    if (!write_all(journal_fd_, buf_)) {
      journal_error_ = std::strerror(errno);
      // A torn record would end what a restart reads of this file: cut it off.
      if (::ftruncate(journal_fd_, static_cast<off_t>(journal_size_)) != 0 ||
          ::lseek(journal_fd_, static_cast<off_t>(journal_size_), SEEK_SET) < 0) {
        ::close(journal_fd_);
        journal_fd_ = -1;
      }
      return false;
    }
    journal_size_ += buf_.size();
    batch = next_batch_++;
    journal_.back().last_batch = batch;
    journal_error_.clear();
    return true;
  }
  // History off: only each room's newest seq is kept.
  if (!begin()) return false;
  bool ok = true;
  std::unordered_map<std::string_view, std::uint64_t> last;
  for (const auto& r : rows) {
    auto& l = last[r.room_id];
    l = std::max(l, r.seq);
  }
  for (auto it = rows.begin(); ok && id_window_ms_ > 0 && it != rows.end(); ++it)
    if (!it->client_id.empty()) ok = keep_id(it->room_id, it->client_id, it->seq, it->ts_ms);
  for (auto it = last.begin(); ok && it != last.end(); ++it) {
    Reset reset{upsert_seq_};
    bind_text(upsert_seq_, 1, it->first);
    bind_u64(upsert_seq_, 2, it->second);
    ok = sqlite3_step(upsert_seq_) == SQLITE_DONE;
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return true;
  rollback();
  return false;
}

void HistoryFile::drop_journal_files(std::int64_t below) {
  const auto before = journal_.size();
  std::erase_if(journal_, [&](const JournalFile& f) {
    if (f.last_batch >= below) return false;
    if (f.n == journal_n_ && journal_fd_ >= 0) {
      ::close(journal_fd_);
      journal_fd_ = -1;
    }
    // A file left on disk stays listed (and is tried again): forget_erasures trusts the list.
    return ::unlink(journal_path(f.n).c_str()) == 0 || errno == ENOENT;
  });
  if (journal_.size() != before) forget_erasures();
}

void HistoryFile::forget_erasures() {
  if (erased_upto_ == 0) return;
  // A row names the newest file that may hold its room's messages; none of them is left once
  // the oldest file on disk is newer.
  const std::uint64_t oldest = journal_.empty() ? std::numeric_limits<std::uint64_t>::max() : journal_.front().n;
  auto* st = prepare("DELETE FROM erased WHERE journal < ?");
  bind_u64(st, 1, oldest);
  if (sqlite3_step(st) == SQLITE_DONE && oldest > erased_upto_) erased_upto_ = 0;
  sqlite3_finalize(st);
}

// Writes `messages` (ascending, non-empty) as chunk rows of kChunkMessages at most, and moves
// room_seq up to the last. Inside the caller's transaction. Returns false when the file refused.
bool HistoryFile::write_chunks(std::string_view room, std::span<const Stored> messages) {
  for (std::size_t at = 0; at < messages.size(); at += kChunkMessages) {
    auto part = messages.subspan(at, std::min(kChunkMessages, messages.size() - at));
    buf_.clear();
    for (const auto& m : part) put_message(buf_, m.seq, m.ts_ms, m.client_id, m.payload);
    Reset reset{insert_chunk_};
    bind_text(insert_chunk_, 1, room);
    bind_u64(insert_chunk_, 2, part.front().seq);
    bind_u64(insert_chunk_, 3, part.back().seq);
    sqlite3_bind_int64(insert_chunk_, 4, part.back().ts_ms);
    sqlite3_bind_blob(insert_chunk_, 5, buf_.data(), static_cast<int>(buf_.size()), SQLITE_STATIC);
    if (sqlite3_step(insert_chunk_) != SQLITE_DONE) return false;
  }
  if (messages.empty()) return true;
  Reset reset{upsert_seq_};
  bind_text(upsert_seq_, 1, room);
  bind_u64(upsert_seq_, 2, messages.back().seq);
  return sqlite3_step(upsert_seq_) == SQLITE_DONE;
}

bool HistoryFile::fold(std::span<const Fold> folds, std::size_t keep_per_room, std::int64_t journal_below) {
  if (!begin()) return false;
  bool ok = true;
  for (const auto& f : folds) {
    if (f.messages.empty()) continue;
    ok = write_chunks(f.room, f.messages);
    if (!ok) break;
    // Whole chunks past the newest keep_per_room go: those starting at or below
    // last - keep - kChunkMessages + 1 end at or below last - keep.
    const auto last = f.messages.back().seq;
    if (keep_per_room > 0 && last >= keep_per_room + kChunkMessages) {
      const auto bound = last - keep_per_room - kChunkMessages + 1;
      ok = keep_ids_of_chunks(f.room, bound);
      if (!ok) break;
      Reset reset{trim_};
      bind_text(trim_, 1, f.room);
      bind_u64(trim_, 2, bound);
      ok = sqlite3_step(trim_) == SQLITE_DONE;
      if (!ok) break;
    }
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) {
    drop_journal_files(journal_below);
    return true;
  }
  rollback();
  return false;
}

namespace {

// "<file>.damaged", or "<file>.damaged.2" and on when an earlier one holds that name: journal
// numbers start again at 1 after a clean stop, so the same file name can be cut twice.
// Empty if every name up to a bound is taken.
std::string kept_aside_name(const std::string& file) {
  std::error_code ec;
  for (int i = 1; i <= 1000; ++i) {
    std::string name = file + ".damaged" + (i == 1 ? "" : "." + std::to_string(i));
    if (!std::filesystem::exists(name, ec) && !ec) return name;
  }
  return {};
}

}  // namespace

bool HistoryFile::recover(std::size_t keep_per_room) {
  auto folded = load_seqs();
  {
    auto* st = prepare("SELECT room, seq FROM erased");
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto& f = folded[column_text(st, 0)];
      f = std::max(f, static_cast<std::uint64_t>(sqlite3_column_int64(st, 1)));
    }
    sqlite3_finalize(st);
  }
  std::map<std::string, std::vector<Stored>> rooms;  // by room: the order chunks are written in
  // Returns false when a record is damaged.
  auto take = [&](std::string_view record) {
    Reader r{record};
    while (r.ok && !r.in.empty()) {
      auto room = r.bytes(static_cast<std::size_t>(r.u(4)));
      MessageView m;
      if (!next_message(r, m)) break;
      auto& f = folded[std::string(room)];
      if (m.seq <= f) continue;  // folded, or its room erased, before the process ended
      f = m.seq;
      rooms[std::string(room)].push_back({m.seq, m.ts_ms, std::string(m.payload), std::string(m.client_id), 0});
    }
    return r.ok;
  };
  // The journal files, oldest first. A record cut short is the write a kill interrupted: its
  // messages were never answered, and nothing follows it in that file. Anything else cut short
  // (a damaged length, a file truncated by hand) is said in the log.
  const auto files = journal_files();
  std::map<std::string, std::string> cut;  // older files whose end was not read -> the name they are kept under
  for (const auto& [n, file] : files) {
    std::ifstream in(file, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) {
      journal_error_ = "cannot read " + file;
      return false;
    }
    Reader r{data};
    while (r.in.size() >= 4) {
      const auto len = static_cast<std::size_t>(r.u(4));
      if (r.in.size() < len) {
        r.in = std::string_view(r.in.data() - 4, r.in.size() + 4);  // the length is part of the unread tail
        break;
      }
      if (!take(r.bytes(len))) {
        journal_error_ = file + " holds a damaged record";
        return false;
      }
    }
    if (!r.in.empty()) {
      // The newest file's tail is most likely the write a kill cut; an older file should end
      // whole, so it is damaged and kept aside.
      const bool newest = n == files.back().first;
      const std::string kept_as = newest ? "" : kept_aside_name(file);
      if (!newest) cut[file] = kept_as;
      log::event("history_journal_cut", {{"file", file},
                                         {"offset", std::to_string(data.size() - r.in.size())},
                                         {"bytes_dropped", std::to_string(r.in.size())},
                                         {"why", newest ? "its last write was cut short (a kill or crash while writing?)"
                                                        : "damaged: only the newest journal file may end cut short"},
                                         {"kept_as", kept_as}});
    }
    journal_n_ = std::max(journal_n_, n);
  }
  std::vector<Fold> folds;
  for (auto& [room, messages] : rooms) folds.push_back({room, messages});
  if (!fold(folds, keep_per_room, 0)) return false;
  // A file that cannot be deleted is listed like a written one, so its erasures stay until it goes.
  // A cut file is renamed, not deleted: what it held past the cut may still be worth reading.
  for (const auto& [n, file] : files) {
    auto c = cut.find(file);
    if (c == cut.end()) {
      if (::unlink(file.c_str()) != 0 && errno != ENOENT) journal_.push_back({n, 0});
    } else if (c->second.empty() || ::rename(file.c_str(), c->second.c_str()) != 0) {
      log::event("history_journal_not_kept", {{"file", file},
                                              {"why", c->second.empty() ? "no free .damaged name" : std::strerror(errno)}});
      journal_.push_back({n, 0});
    }
  }
  forget_erasures();
  return true;
}

std::int64_t HistoryFile::id_since_ms() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() - id_window_ms_;
}

bool HistoryFile::keep_id(std::string_view room, std::string_view client_id, std::uint64_t seq, std::int64_t ts_ms) {
  Reset reset{insert_id_};
  sqlite3_bind_int64(insert_id_, 1, ts_ms);
  bind_text(insert_id_, 2, room);
  bind_text(insert_id_, 3, client_id);
  bind_u64(insert_id_, 4, seq);
  return sqlite3_step(insert_id_) == SQLITE_DONE;
}

bool HistoryFile::keep_ids_of_chunks(std::string_view room, std::uint64_t first_seq_max) {
  if (id_window_ms_ <= 0) return true;
  const auto since = id_since_ms();
  std::vector<std::tuple<std::string, std::uint64_t, std::int64_t>> ids;
  {
    Reset reset{chunks_upto_};
    bind_text(chunks_upto_, 1, room);
    bind_u64(chunks_upto_, 2, first_seq_max);
    sqlite3_bind_int64(chunks_upto_, 3, since);
    int rc;
    while ((rc = sqlite3_step(chunks_upto_)) == SQLITE_ROW) {
      Reader r{column_blob(chunks_upto_, 0)};
      for (MessageView m; next_message(r, m);)
        if (m.ts_ms >= since && !m.client_id.empty()) ids.emplace_back(std::string(m.client_id), m.seq, m.ts_ms);
    }
    if (rc != SQLITE_DONE) return false;
  }
  for (const auto& [id, seq, ts] : ids)
    if (!keep_id(room, id, seq, ts)) return false;
  return true;
}

bool HistoryFile::erase_room(const std::string& room, std::uint64_t last_seq) {
  if (!begin()) return false;
  bool ok = true;
  // With no journal file on disk nothing can fold the room back: no erased row is needed.
  const std::uint64_t newest_file = journal_.empty() ? 0 : journal_.back().n;
  if (newest_file > 0) {
    auto* st = prepare("INSERT INTO erased (room, seq, journal)"
                       " VALUES (?1, max(?2, coalesce((SELECT seq FROM room_seq WHERE room = ?1), 0)), ?3)"
                       " ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq),"
                       " journal = max(journal, excluded.journal)");
    bind_text(st, 1, room);
    bind_u64(st, 2, last_seq);
    bind_u64(st, 3, newest_file);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
  }
  for (const char* sql : {"DELETE FROM room_seq WHERE room = ?", "DELETE FROM chunks WHERE room = ?"}) {
    if (!ok) break;
    auto* st = prepare(sql);
    bind_text(st, 1, room);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
  }
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) {
    erased_upto_ = std::max(erased_upto_, newest_file);
    return true;
  }
  rollback();
  return false;
}

std::size_t HistoryFile::prune(std::int64_t cutoff_ms, std::size_t keep_per_room, std::size_t rooms_per_transaction) {
  std::size_t deleted = 0;
  std::string after;
  for (bool done = false; !done;) deleted += prune_rooms(cutoff_ms, keep_per_room, rooms_per_transaction, after, done);
  return deleted;
}

std::size_t HistoryFile::prune_rooms(std::int64_t cutoff_ms, std::size_t keep_per_room, std::size_t max_rooms,
                                     std::string& after, bool& done) {
  done = true;
  if (!begin()) return 0;
  auto* rooms = prepare("SELECT room, seq FROM room_seq WHERE room > ? ORDER BY room LIMIT ?");
  auto* young = prepare("SELECT first_seq FROM chunks WHERE room = ? AND last_ts >= ? ORDER BY first_seq LIMIT 1");
  // Two ranges of the primary key, not one OR (which made SQLite read every chunk of the room:
  // on a node with a few hundred MB of history a prune then held the writer for most of a second).
  auto* drop_old = prepare("DELETE FROM chunks WHERE room = ?1 AND first_seq < ?2");
  auto* drop_over = prepare("DELETE FROM chunks WHERE room = ?1 AND first_seq <= ?2 AND last_seq <= ?2");
  std::size_t deleted = 0, n = 0;
  bool ok = true;
  bind_text(rooms, 1, after);
  sqlite3_bind_int64(rooms, 2, static_cast<sqlite3_int64>(max_rooms));
  if (after.empty() && id_window_ms_ > 0) {  // a walk's first slice: ids out of the window go
    auto* old_ids = prepare("DELETE FROM client_ids WHERE ts < ?");
    sqlite3_bind_int64(old_ids, 1, id_since_ms());
    ok = sqlite3_step(old_ids) == SQLITE_DONE;
    sqlite3_finalize(old_ids);
  }
  while (ok && sqlite3_step(rooms) == SQLITE_ROW) {
    ++n;
    const std::string room = column_text(rooms, 0);
    const auto last = static_cast<std::uint64_t>(sqlite3_column_int64(rooms, 1));
    // Chunks before the room's first young one go (all of them if none is young), and those
    // wholly beyond the size bound.
    std::uint64_t young_from = std::numeric_limits<std::uint64_t>::max();
    {
      Reset reset{young};
      bind_text(young, 1, room);
      sqlite3_bind_int64(young, 2, cutoff_ms);
      const int rc = sqlite3_step(young);
      if (rc == SQLITE_ROW) young_from = static_cast<std::uint64_t>(sqlite3_column_int64(young, 0));
      else ok = rc == SQLITE_DONE;
    }
    const std::uint64_t over = keep_per_room > 0 && last > keep_per_room ? last - keep_per_room : 0;
    for (auto [st, bound] : {std::pair{drop_old, young_from}, std::pair{drop_over, over}}) {
      if (!ok) break;
      // drop_old takes first_seq < bound, drop_over a subset of first_seq <= bound.
      if (bound > 0) ok = keep_ids_of_chunks(room, st == drop_old ? bound - 1 : bound);
      if (!ok) break;
      Reset reset{st};
      bind_text(st, 1, room);
      bind_u64(st, 2, bound);
      ok = sqlite3_step(st) == SQLITE_DONE;
      if (ok) deleted += static_cast<std::size_t>(sqlite3_changes(db_));
    }
    if (ok) after = room;
  }
  for (auto* st : {rooms, young, drop_old, drop_over}) sqlite3_finalize(st);
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) {
    done = n < max_rooms;
    return deleted;
  }
  rollback();
  return 0;
}

bool HistoryFile::read(const HistoryRequest& req, std::int64_t cutoff_ms, std::uint64_t floor_seq, History& out) {
  // One read transaction: first_seq and the messages come from the same snapshot.
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  bool ok = true;
  const std::uint64_t before = req.before_seq ? req.before_seq : std::numeric_limits<std::uint64_t>::max();
  // Walks the chunks from the one that may hold `lo` + 1 upwards, calling `take` with each
  // message in (lo, end) young enough until it returns false.
  auto ascending = [&](std::uint64_t lo, std::uint64_t end, auto take) {
    Reset reset{read_after_};
    bind_text(read_after_, 1, req.room_id);
    bind_u64(read_after_, 2, lo + 1);
    bind_u64(read_after_, 3, end);
    sqlite3_bind_int64(read_after_, 4, cutoff_ms);
    int rc = SQLITE_DONE;
    bool more = true;
    while (more && (rc = sqlite3_step(read_after_)) == SQLITE_ROW) {
      Reader r{column_blob(read_after_, 1)};
      for (MessageView m; more && next_message(r, m);)
        if (m.seq > lo && m.seq < end && m.ts_ms >= cutoff_ms) more = take(m);
      ok = ok && r.ok;
    }
    ok = ok && (!more || rc == SQLITE_DONE);
  };
  auto deliver = [&](const MessageView& m) {
    out.messages.push_back(Delivery{req.room_id, m.seq, epoch_, std::string(m.payload)});
  };
  ascending(floor_seq, std::numeric_limits<std::uint64_t>::max(), [&](const MessageView& m) {
    out.first_seq = m.seq;
    return false;
  });
  const std::uint64_t lo = std::max(req.after_seq, floor_seq);
  if (ok && req.limit > 0 && req.after_seq) {
    ascending(lo, before, [&](const MessageView& m) {
      deliver(m);
      return out.messages.size() < req.limit;
    });
  } else if (ok && req.limit > 0) {
    // The newest `limit` below `before`: chunks newest first, each chunk's matches in order.
    Reset reset{read_before_};
    bind_text(read_before_, 1, req.room_id);
    bind_u64(read_before_, 2, before);
    sqlite3_bind_int64(read_before_, 3, cutoff_ms);
    std::vector<MessageView> in_chunk;
    std::vector<std::vector<Delivery>> newest_first;
    std::size_t n = 0;
    int rc = SQLITE_DONE;
    while (n < req.limit && (rc = sqlite3_step(read_before_)) == SQLITE_ROW) {
      const auto first = static_cast<std::uint64_t>(sqlite3_column_int64(read_before_, 0));
      Reader r{column_blob(read_before_, 1)};
      in_chunk.clear();
      for (MessageView m; next_message(r, m);)
        if (m.seq > lo && m.seq < before && m.ts_ms >= cutoff_ms) in_chunk.push_back(m);
      ok = ok && r.ok;
      const std::size_t take = std::min(in_chunk.size(), req.limit - n);
      auto& part = newest_first.emplace_back();
      for (std::size_t i = in_chunk.size() - take; i < in_chunk.size(); ++i)
        part.push_back(Delivery{req.room_id, in_chunk[i].seq, epoch_, std::string(in_chunk[i].payload)});
      n += take;
      if (first <= lo + 1) break;  // nothing older is wanted
    }
    ok = ok && (rc == SQLITE_DONE || rc == SQLITE_ROW);
    for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it)
      for (auto& d : *it) out.messages.push_back(std::move(d));
  }
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  return ok;
}

}  // namespace chatd::bus
