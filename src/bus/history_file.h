// The embedded history: every room's recent messages in an SQLite file (history.db in the data
// dir, beside the room store's chatd.db so the two never wait on each other's locks). Used by
// the local bus; one HistoryFile per connection, each used by one thread only.
//
// The file has one epoch, drawn when the file is created: losing the file loses every room's
// history at once, and a new file means new numbering.
#pragma once

#include <sqlite3.h>

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

  // Writes `rows` and each room's new last seq in one transaction (no fsync: WAL with
  // synchronous=NORMAL survives a crash of the process, not of the machine), then drops each
  // touched room's rows beyond the newest `keep_per_room`. Returns false (and rolls back) when
  // the file refused the write.
  bool append(const std::vector<Row>& rows, std::size_t keep_per_room);

  // Deletes every row of `room` (its seq is kept, so it never goes back). Returns false when
  // the file refused.
  bool erase_room(const std::string& room);

  // Deletes rows written before `cutoff_ms`, at most `max_rows` of them; returns how many.
  std::size_t prune_before(std::int64_t cutoff_ms, std::size_t max_rows);

  // Reads what `req` asks for (one snapshot), ignoring rows written before `cutoff_ms` that a
  // prune has not removed yet: messages ascending, first_seq; leaves epoch and last_seq to the
  // caller. Returns false when the file could not be read.
  bool read(const HistoryRequest& req, std::int64_t cutoff_ms, History& out);

  // Returns a message of the last failure, for logs.
  std::string last_error() const;

 private:
  void exec(const char* sql);
  sqlite3_stmt* prepare(const char* sql);

  std::string path_;
  std::string epoch_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* upsert_seq_ = nullptr;
  sqlite3_stmt* trim_ = nullptr;
  sqlite3_stmt* read_after_ = nullptr;
  sqlite3_stmt* read_before_ = nullptr;
  sqlite3_stmt* first_seq_ = nullptr;
};

}  // namespace chatd::bus
