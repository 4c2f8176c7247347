// The embedded history: every room's recent messages in an SQLite file (history.db in the data
// dir, beside the room store's chatd.db so the two never wait on each other's locks). Used by
// the local bus; one HistoryFile per connection, each used by one thread only.
//
// The file has one epoch, drawn when the file is created: losing the file loses every room's
// history at once, and a new file means new numbering.
//
// Rows are amortised over many messages, because a row insert costs more than delivering a
// message does (issue 9's budget is ~1.5 µs of history per message):
// - the journal: plain files beside the database (history.journal.<n>, a new one every 4 MiB),
//   one record per group commit, the whole batch encoded at once (append(): one write(2), no
//   SQLite; like the WAL with synchronous=NORMAL it survives a killed process, not a power loss);
// - `chunks`: per room, rows keyed (room, first_seq) holding up to kChunkMessages messages of
//   that room in seq order (fold()), written when the caller's in-memory tail of the room fills
//   or ages out. room_seq holds, per room, the seq up to which the room is folded.
// A journal file is deleted once every message in it is folded. recover() folds what a killed
// process left in the journal (the messages with seq above room_seq). An erased room leaves no
// room_seq row; a row in `erased` stands in for it only while a journal file may still hold
// the room's messages, so that recover() does not fold them back. Files of older layouts
// (a rowid table `messages`; the WITHOUT ROWID (room, seq) table `history` with its per-message
// `journal` table) are moved into chunks on open.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::bus {

class HistoryFile {
 public:
  // The most messages one chunk row holds: a room that talks costs one row insert per this
  // many messages, and a read of the newest N decodes at most N + 64 messages.
  static constexpr std::size_t kChunkMessages = 64;

  struct Row {
    std::string room_id;
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;  // when it was written: the age --history-ttl is measured from
    std::string payload;
    std::string client_id;   // empty: none
  };
  // One message of a room (the room is known from where it is kept).
  struct Stored {
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;
    std::string payload;
    std::string client_id;
    std::int64_t batch = 0;  // the journal row it was written in (memory only)
  };
  // A room's messages to fold, ascending seq, all above what the room has in chunks.
  struct Fold {
    std::string_view room;
    std::span<const Stored> messages;
  };
  struct ClientId {
    std::string room_id;
    std::string client_id;
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;
  };

  // Opens (creating if needed) `path`, moving an older layout into chunks. Throws
  // std::runtime_error when it cannot.
  explicit HistoryFile(const std::string& path);
  ~HistoryFile();
  HistoryFile(const HistoryFile&) = delete;
  HistoryFile& operator=(const HistoryFile&) = delete;

  const std::string& epoch() const { return epoch_; }
  const std::string& path() const { return path_; }

  // Folds every message in the journal files with a seq above its room's room_seq into chunks
  // (one transaction), bounds each room to its newest `keep_per_room` (0: no bound), then
  // deletes the files. Returns false when a file could not be read or the database refused.
  bool recover(std::size_t keep_per_room);

  // Client ids (x-client-id) are remembered for `window` (the dedupe window) however short
  // history is kept: those of messages that leave the file younger than that (by
  // --history-size, --history-ttl, or at once with history off) are kept in a table of their
  // own until they are `window` old. 0 (the default): not kept.
  void keep_client_ids_for(std::chrono::milliseconds window) { id_window_ms_ = window.count(); }

  // Returns every room's last assigned seq (after recover(): the journal is empty).
  std::unordered_map<std::string, std::uint64_t> load_seqs();
  // Returns the client ids written at or after `since_ms`, oldest first.
  std::vector<ClientId> load_client_ids(std::int64_t since_ms);

  // Writes `rows` as one journal record, or when !keep_rows only each room's new last seq (one
  // transaction). No fsync: it survives a crash of the process, not of the machine. `batch` gets
  // the record's number (ascending; 0 when !keep_rows). Returns false when the write failed
  // (nothing of it is kept).
  bool append(std::span<const Row> rows, bool keep_rows, std::int64_t& batch);

  // In one transaction: writes each fold as chunk rows (kChunkMessages at most each) and moves
  // its room's room_seq up to its last seq; drops whole chunks that lie past each folded room's
  // newest `keep_per_room` (0: no bound); then deletes the journal files whose records are all
  // numbered below `journal_below`. Returns false (and rolls back) when the file refused.
  bool fold(std::span<const Fold> folds, std::size_t keep_per_room, std::int64_t journal_below);

  // Deletes every chunk of `room` and its room_seq row (room ids are random UUIDs, never
  // reused, so nothing of the room needs to outlive it). While a journal file may hold its
  // messages (up to `last_seq`, or what room_seq had) an `erased` row keeps recover() from
  // folding them again; the row goes with the last such file. Returns false when the file refused.
  bool erase_room(const std::string& room, std::uint64_t last_seq);

  // Deletes, room by room, the chunks whose messages are all older than `cutoff_ms` or all
  // beyond the room's newest `keep_per_room` (0: no bound), committing every
  // `rooms_per_transaction` rooms; returns how many chunk rows. A chunk that is partly out stays
  // (readers skip its old part), so the bounds cost whole rows only.
  std::size_t prune(std::int64_t cutoff_ms, std::size_t keep_per_room, std::size_t rooms_per_transaction);
  // One transaction of prune(): the next `max_rooms` rooms after `after` (by name), which it
  // moves past them; `done` once no room is left. A writer prunes a slice at a time, so live
  // messages are never held up by a walk over every room.
  std::size_t prune_rooms(std::int64_t cutoff_ms, std::size_t keep_per_room, std::size_t max_rooms, std::string& after,
                          bool& done);

  // Reads what `req` asks for from the chunks (one snapshot), ignoring messages written before
  // `cutoff_ms` and those with seq <= `floor_seq` (a prune has not removed them yet, or they
  // share a chunk with kept ones). Fills messages (ascending) and first_seq; leaves epoch and
  // last_seq to the caller. Returns false when the file could not be read.
  bool read(const HistoryRequest& req, std::int64_t cutoff_ms, std::uint64_t floor_seq, History& out);

  // Returns how many pages the WAL held after this connection's last commit (it grows until a
  // checkpoint has copied it all and the next commit starts it over).
  int wal_pages() const { return wal_pages_.load(std::memory_order_relaxed); }
  // Copies what it can of the WAL into the file without waiting for anyone (PASSIVE); returns
  // true when all of it was copied. This connection never checkpoints by itself.
  bool checkpoint();

  // Returns a message of the last failure, for logs.
  std::string last_error() const;

 private:
  static int on_wal(void* self, sqlite3* db, const char* name, int pages);
  // Keeps the ids still inside the window of the chunks of `room` starting at or below
  // `first_seq_max`, which the caller is about to delete. Inside the caller's transaction.
  bool keep_ids_of_chunks(std::string_view room, std::uint64_t first_seq_max);
  bool keep_id(std::string_view room, std::string_view client_id, std::uint64_t seq, std::int64_t ts_ms);
  std::int64_t id_since_ms() const;
  void migrate();
  // Moves the rows `select_sql` returns (room, seq, ts, payload, client_id; by room, seq) into
  // chunks, skipping those at or below what the room has folded.
  void import_rows(const char* select_sql);
  bool write_chunks(std::string_view room, std::span<const Stored> messages);
  std::string journal_path(std::uint64_t n) const;
  // Returns the journal files there are, by number.
  std::vector<std::pair<std::uint64_t, std::string>> journal_files() const;
  void drop_journal_files(std::int64_t below);
  // Deletes the `erased` rows no journal file on disk can hold a message of any more.
  void forget_erasures();
  void exec(const char* sql);
  sqlite3_stmt* prepare(const char* sql);

  std::string path_;
  std::string epoch_;
  sqlite3* db_ = nullptr;
  std::atomic<int> wal_pages_{0};
  std::string buf_;  // the blob being encoded: reused, so a write allocates nothing per message
  // The journal (writer only): the file being appended to, and every file not yet deleted
  // with the number of its newest record.
  struct JournalFile {
    std::uint64_t n = 0;
    std::int64_t last_batch = 0;
  };
  int journal_fd_ = -1;
  std::uint64_t journal_n_ = 0;
  std::size_t journal_size_ = 0;
  std::vector<JournalFile> journal_;
  std::int64_t next_batch_ = 1;
  bool begin();     // BEGIN IMMEDIATE
  void rollback();  // ends the open transaction, keeping why it failed
  std::string journal_error_;
  std::string failure_;  // SQLite's word on the last transaction rolled back
  // The newest journal file an `erased` row names (0: none), so most folds skip forget_erasures.
  std::uint64_t erased_upto_ = 0;
  sqlite3_stmt* insert_chunk_ = nullptr;
  sqlite3_stmt* upsert_seq_ = nullptr;
  sqlite3_stmt* trim_ = nullptr;
  sqlite3_stmt* insert_id_ = nullptr;
  sqlite3_stmt* chunks_upto_ = nullptr;
  std::int64_t id_window_ms_ = 0;
  sqlite3_stmt* read_after_ = nullptr;
  sqlite3_stmt* read_before_ = nullptr;
};

}  // namespace chatd::bus
