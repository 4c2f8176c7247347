// The embedded history: every room's recent messages in an SQLite file (history.db in the data
// dir, beside the room store's chatd.db so the two never wait on each other's locks). Used by
// the local bus; one HistoryFile per connection, each used by one thread only.
//
// The file has one epoch, drawn when the file is created: losing the file loses every room's
// history at once, and a new file means new numbering.
//
// Messages are appended to `journal` (writing order) as they come, and moved into `history`, a
// WITHOUT ROWID table keyed (room, seq), by flush(): a burst over many rooms then costs a few
// sequential pages, not a page per room per commit. read() reads `history` only; the caller
// keeps what is in the journal in memory (LocalBus). A file from before these tables (one
// rowid table `messages`) is moved into `history` on open.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::bus {

class HistoryFile {
 public:
  struct Row {
    std::string room_id;
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;  // when it was written: the age --history-ttl is measured from
    std::string payload;
    std::string client_id;   // empty: none
  };
  struct ClientId {
    std::string room_id;
    std::string client_id;
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;
  };

  // Opens (creating if needed) `path`. Throws std::runtime_error when it cannot.
  explicit HistoryFile(const std::string& path);
  ~HistoryFile();
  HistoryFile(const HistoryFile&) = delete;
  HistoryFile& operator=(const HistoryFile&) = delete;

  const std::string& epoch() const { return epoch_; }
  const std::string& path() const { return path_; }

  // Returns every room's last assigned seq.
  std::unordered_map<std::string, std::uint64_t> load_seqs();
  // Returns the client ids written at or after `since_ms`, oldest first.
  std::vector<ClientId> load_client_ids(std::int64_t since_ms);

  // Writes `rows` to the journal, or when !keep_rows only each room's new last seq, in one
  // transaction (no fsync: WAL with synchronous=NORMAL survives a crash of the process, not of
  // the machine). Returns false (and rolls back) when the file refused the write.
  bool append(const std::vector<Row>& rows, bool keep_rows);

  // Moves the journal into `history` (and its seqs into room_seq) in one transaction, then drops each moved room's rows
  // beyond its newest `keep_per_room` (0: no bound). Returns false (and rolls back) when the
  // file refused.
  bool flush(std::size_t keep_per_room);

  // Deletes every row of `room`, journal included (its seq is kept, so it never goes back).
  // Returns false when the file refused.
  bool erase_room(const std::string& room);

  // Deletes, room by room, the rows written before `cutoff_ms` and those beyond each room's
  // newest `keep_per_room` (0: all of them), committing every `rooms_per_transaction` rooms;
  // returns how many. The journal is not pruned: it is young.
  std::size_t prune(std::int64_t cutoff_ms, std::size_t keep_per_room, std::size_t rooms_per_transaction);

  // Reads what `req` asks for (one snapshot), ignoring rows that a prune or trim has not
  // removed yet: those written before `cutoff_ms` and those with seq <= `floor_seq`. Fills
  // messages (ascending) and first_seq; leaves epoch and last_seq to the caller. Returns false
  // when the file could not be read.
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
  void migrate();
  void exec(const char* sql);
  sqlite3_stmt* prepare(const char* sql);

  std::string path_;
  std::string epoch_;
  sqlite3* db_ = nullptr;
  std::atomic<int> wal_pages_{0};
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* upsert_seq_ = nullptr;
  sqlite3_stmt* trim_ = nullptr;
  sqlite3_stmt* read_after_ = nullptr;
  sqlite3_stmt* read_before_ = nullptr;
  sqlite3_stmt* first_seq_ = nullptr;
};

}  // namespace chatd::bus
