// The in-process bus: one node, no engine, history in <data-dir>/history.db.
//
// publish() numbers the message under a mutex and queues it; it never touches the disk. The
// writer thread takes whatever has queued, appends it to the file's journal as one row in one
// transaction (no fsync per message: WAL with synchronous=NORMAL), and only then delivers and
// answers those messages, in order. So what a client saw or got a RECEIPT for is in the file
// even if the process is killed, a room's seq never goes back after a restart, and a burst
// shares one commit and one row. The written messages stay in memory per room (`recent_`, for
// readers too) until the writer folds them into the room's chunk rows: a room's tail once it
// holds a chunk's worth (kChunkMessages), or once its oldest is fold_age (3 s) old, or, past
// --history-memory-messages, the oldest tails a slice at a time. A journal row goes when all of
// its messages are folded.
// The reader thread answers history() on its own connection, so a long read never delays live
// messages.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "log/log.h"
#include "log/thread_name.h"
#include "bus/history_file.h"
#include "bus/message_bus.h"

namespace chatd::bus {
namespace {

using Clock = std::chrono::system_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

// How often the writer drops rows older than --history-ttl or past --history-size, and how many
// rooms per transaction: one such slice per turn of the writer (kFoldSliceGap apart), so a walk
// over many rooms never holds live messages for long. What a room costs depends on how much of
// it goes: once 1,000 rooms at 2 msg/s each had reached --history-size, a fixed slice of 256
// rooms deleted a minute's rows in one go (p99 39-119 ms against 3 ms before the rooms were
// full; bench/history.mjs --only age). So the slice adapts: it halves while a slice
// takes longer than kPruneSliceBudget and doubles back while it takes under a quarter of it,
// starting each walk small (the rows due pile up between walks, so its first slices cost most).
constexpr std::chrono::seconds kPruneEvery{60};
constexpr std::size_t kPruneRoomsFirst = 16;
constexpr std::size_t kPruneRoomsMax = 256;
constexpr std::chrono::microseconds kPruneSliceBudget{2000};
// How often the writer looks for tails to fold. A room's tail is folded even if it is not a
// chunk's worth once its oldest is cfg.local_history.fold_age (3 s) old: a quiet room's
// messages then cost a row each, and the journal (which keeps every row that still holds an
// unfolded message) stays about that long. At 1 s, 1,000 rooms x 10 at their maximum (about 20
// msg/s a room) folded rows of ~20 messages, and history took a quarter of the core.
constexpr std::chrono::milliseconds kFoldEvery{100};
// A fold writes at most this many rooms' tails (about 30 us each), then lets the writer commit
// and the worker run for kFoldSliceGap before the next slice. Folding a thousand busy rooms in
// one go held the core from the event loop for 6-16 ms, which was the p99 of every room.
constexpr std::size_t kFoldSliceRooms = 16;
constexpr std::chrono::milliseconds kFoldSliceGap{1};
// The group commit's window and the batch that ends it early. A commit is one journal write
// (about 8 us); what a shorter window costs is the writer's and the loop's wake-ups, one per
// commit. Measured on one core, 1000 rooms x 10: against 2 ms, 250 us took p50 from 1.3 to
// 0.33 ms at 1,000 msg/s and from 2.3 to 0.76 ms at 8,000/s for 10-25 % more CPU at those
// rates, and the same at the maximum, where batches fill before the window ends.
constexpr std::chrono::microseconds kCommitEvery{250};
constexpr std::size_t kCommitRows = 1024;
// A writer woken by a message after a quiet moment waits until no message has arrived for this
// long (at most kCommitEvery): a burst a loop turn hands over one SEND at a time then commits as
// one group and reaches subscribers in one write each, not as its first message and the rest.
constexpr std::chrono::microseconds kProducerQuiet{100};
// The WAL is checkpointed by another thread once it holds cfg.local_history.checkpoint_pages
// (16 MiB of 4 KiB pages), so the writer never waits for a checkpoint's fsyncs. A checkpoint that
// runs beside the writer cannot finish while messages keep coming, so at 4x that the
// writer copies the little that is left itself, and the WAL starts over. And at least every
// 10 s (checkpoint_every) while anything was written: a checkpoint is what fsyncs the WAL
// (synchronous=NORMAL), so this bounds what a power loss or OS crash can take.

class LocalBus final : public MessageBus {
 public:
  explicit LocalBus(const BusConfig& cfg) : cfg_(cfg) {
    std::error_code ec;
    std::filesystem::create_directories(cfg.data_dir, ec);
    if (ec) throw std::runtime_error("cannot create data dir '" + cfg.data_dir + "': " + ec.message());
    auto path = (std::filesystem::path(cfg.data_dir) / "history.db").string();
    writer_file_ = std::make_unique<HistoryFile>(path);
    reader_file_ = std::make_unique<HistoryFile>(path);
    epoch_ = writer_file_->epoch();
    writer_file_->keep_client_ids_for(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.dedupe_window));
    // What a killed process left in the journal.
    if (!writer_file_->recover(cfg.history_size))
      throw std::runtime_error(path + ": cannot fold the journal: " + writer_file_->last_error());
    seqs_ = writer_file_->load_seqs();
    // Ids seen within the window before a restart still de-duplicate after it.
    for (auto& c : writer_file_->load_client_ids(now_ms() - window_ms()))
      remember_locked(key_of(c.room_id, c.client_id), c.seq, c.ts_ms, true);
    checkpoint_file_ = std::make_unique<HistoryFile>(path);
    writer_ = log::named_thread("hist-writer", [this] { run_writer(); });
    reader_ = log::named_thread("hist-reader", [this] { run_reader(); });
    checkpointer_ = log::named_thread("hist-checkpoint", [this] { run_checkpointer(); });
  }
  ~LocalBus() override { stop(); }

  void start(DeliverFn on_deliver) override {
    std::lock_guard lock(mu_);
    deliver_ = std::move(on_deliver);
  }

  void publish(std::string room_id, std::string payload, PublishOptions opts, PublishedFn done) override {
    std::unique_lock lock(mu_);
    if (stopping_) {
      lock.unlock();
      return done(Error::stopped, 0, {});
    }
    // Folds keep failing (a damaged or read-only history.db): what is not folded stays in memory
    // and in the journal, so past the memory bound new messages are refused rather than held
    // without bound.
    if (fold_failing_.load(std::memory_order_relaxed) &&
        recent_rows_.load(std::memory_order_relaxed) >= cfg_.history_memory_messages) {
      lock.unlock();
      return done(Error::engine_down, 0, {});
    }
    auto ts = now_ms();
    std::string key;
    if (!opts.client_id.empty()) {
      expire_ids_locked(ts);
      key = key_of(room_id, opts.client_id);
      if (auto it = ids_.find(key); it != ids_.end()) {
        // A retry: the first one's answer, now or once its write settles.
        auto& e = it->second;
        if (!e.settled) return e.waiters.push_back(std::move(done));
        auto seq = e.seq;
        lock.unlock();
        return done({}, seq, epoch_);
      }
    }
    auto seq = ++seqs_[room_id];
    if (!key.empty()) remember_locked(key, seq, ts, false);
    queue_.push_back({std::move(room_id), seq, ts, std::move(payload), std::move(opts.client_id)});
    queue_done_.push_back(std::move(done));
    if (queue_.size() == 1) wake_writer_.notify_one();
  }

  void history(HistoryRequest req, HistoryFn done) override {
    {
      std::lock_guard lock(read_mu_);
      if (!stopping_reads_) {
        reads_.push_back({std::move(req), std::move(done)});
        wake_reader_.notify_one();
        return;
      }
    }
    done(Error::stopped, {});
  }

  void on_control(ControlFn fn) override { control_ = std::move(fn); }

  // One node: the only receiver is this one, at once, on the caller's thread.
  void publish_control(ControlMessage m, DoneFn done) override {
    if (!valid_control_type(m.type) || m.body.size() > kMaxControlBody) return done(Error::rejected);
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (stopping) return done(Error::stopped);
    m.origin = cfg_.node_id;
    if (control_) control_(std::move(m));
    done({});
  }

  // The writer thread deletes the rows, after what was queued before.
  void delete_history(const std::string& room_id, DoneFn done) override {
    std::unique_lock lock(mu_);
    if (stopping_) {
      lock.unlock();
      return done(Error::stopped);
    }
    erasures_.emplace_back(room_id, std::move(done));
    wake_writer_.notify_one();
  }

  void subscribe(const std::string&, DoneFn ready) override { ready({}); }
  void unsubscribe(const std::string&) override {}

  bool up() const override {
    return !write_failing_.load(std::memory_order_relaxed) && !fold_failing_.load(std::memory_order_relaxed);
  }
  std::string describe() const override {
    return "local (in-process), history " + writer_file_->path() + " epoch " + epoch_ +
           (up() ? "" : " (writes failing)");
  }

  // Writes and answers what was accepted, then stops both threads.
  void stop() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake_writer_.notify_one();
    if (writer_.joinable()) writer_.join();
    {
      std::lock_guard lock(read_mu_);
      stopping_reads_ = true;
    }
    wake_reader_.notify_one();
    if (reader_.joinable()) reader_.join();
    {
      std::lock_guard lock(checkpoint_mu_);
      stopping_checkpoints_ = true;
    }
    wake_checkpointer_.notify_one();
    if (checkpointer_.joinable()) checkpointer_.join();
  }

 private:
  // A client id seen in a room: its seq, and whether its write has settled (else the retries
  // that came meanwhile wait in `waiters`).
  struct Seen {
    std::uint64_t seq = 0;
    std::int64_t ts_ms = 0;
    bool settled = false;
    std::vector<PublishedFn> waiters;
  };
  struct Read {
    HistoryRequest req;
    HistoryFn done;
  };

  std::int64_t window_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.dedupe_window).count();
  }
  std::int64_t ttl_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.history_ttl).count();
  }
  static std::string key_of(const std::string& room, const std::string& client_id) { return room + '\n' + client_id; }

  void remember_locked(const std::string& key, std::uint64_t seq, std::int64_t ts, bool settled) {
    auto [it, fresh] = ids_.try_emplace(key);
    it->second.seq = seq;
    it->second.ts_ms = ts;
    it->second.settled = settled;
    if (fresh) id_order_.push_back({ts, key});
    expire_ids_locked(ts);
  }

  // Forgets ids older than the window, and the oldest past dedupe_max_ids; never one whose
  // write is still in flight (its retries wait on it).
  void expire_ids_locked(std::int64_t now) {
    while (!id_order_.empty()) {
      auto& [ts, key] = id_order_.front();
      auto it = ids_.find(key);
      if (it != ids_.end() && it->second.ts_ms == ts) {
        bool old = ts < now - window_ms() || ids_.size() > cfg_.dedupe_max_ids;
        if (!old || !it->second.settled) break;
        ids_.erase(it);
      }
      id_order_.pop_front();
    }
  }

  void run_writer() {
    run_batches();
    fold(true);  // a clean stop leaves the journal empty
  }

  void run_batches() {
    auto next_prune = std::chrono::steady_clock::now();
    auto next_fold = next_prune + kFoldEvery;
    auto last_commit = next_prune - kCommitEvery;
    std::vector<HistoryFile::Row> batch;
    std::vector<PublishedFn> batch_done;
    std::vector<std::pair<std::string, DoneFn>> erasures;
    for (;;) {
      DeliverFn deliver;
      {
        std::unique_lock lock(mu_);
        wake_writer_.wait_until(lock, recent_rows_ ? std::min(next_fold, next_prune) : next_prune,
                                [&] { return !queue_.empty() || !erasures_.empty() || stopping_; });
        if (queue_.empty() && erasures_.empty() && stopping_) break;
        // Group commit: at most one commit per kCommitEvery while messages keep coming, so a
        // burst shares its pages; after a quiet moment, once the producer goes quiet (kProducerQuiet).
        if (!stopping_ && erasures_.empty()) {
          const auto woke = std::chrono::steady_clock::now();
          if (woke < last_commit + kCommitEvery) {
            wake_writer_.wait_until(lock, last_commit + kCommitEvery,
                                    [&] { return stopping_ || queue_.size() >= kCommitRows; });
          } else {
            for (std::size_t seen = 0; !stopping_ && queue_.size() != seen && queue_.size() < kCommitRows &&
                                       std::chrono::steady_clock::now() < woke + kCommitEvery;) {
              seen = queue_.size();
              wake_writer_.wait_for(lock, kProducerQuiet, [&] { return stopping_; });
            }
          }
        }
        last_commit = std::chrono::steady_clock::now();
        batch.swap(queue_);
        batch_done.swap(queue_done_);
        erasures.swap(erasures_);
        deliver = deliver_;
      }
      // After the batch is answered, so its messages do not wait for a fold or a prune.
      auto housekeeping = [&] {
        // Past the memory bound every turn folds a slice of the oldest tails, however young.
        const bool full = recent_rows_ >= cfg_.history_memory_messages;
        if (full || std::chrono::steady_clock::now() >= next_fold) {
          const bool more = fold(false, full);
          next_fold = std::chrono::steady_clock::now() + (more ? std::chrono::milliseconds(kFoldSliceGap) : kFoldEvery);
        }
        if (std::chrono::steady_clock::now() >= next_prune) {
          const bool done = prune();
          next_prune = std::chrono::steady_clock::now() + (done ? kPruneEvery : std::chrono::milliseconds(kFoldSliceGap));
        }
      };
      // Rooms deleted after the batch's messages were queued: erased once those are written.
      auto erase_rooms = [&] {
        for (auto& [room, done] : erasures) {
          std::uint64_t last = 0;  // what the journal holds of it is never folded
          {
            std::lock_guard lock(recent_mu_);
            if (auto it = recent_.find(room); it != recent_.end()) {
              if (!it->second.empty()) {
                last = it->second.back().seq;
                unfolded_.erase({it->second.front().batch, room});
              }
              recent_rows_ -= it->second.size();
              recent_.erase(it);
            }
          }
          const bool gone = writer_file_->erase_room(room, last);
          if (gone) {
            // Its seq goes too: room ids are never reused, and the map must not grow with churn.
            std::lock_guard lock(mu_);
            seqs_.erase(room);
          }
          done(gone ? std::error_code{} : make_error_code(Error::engine_down));
        }
        erasures.clear();
      };
      if (batch.empty()) {
        erase_rooms();
        housekeeping();
        continue;
      }
      std::int64_t id = 0;
      const bool ok = writer_file_->append(batch, cfg_.history_size > 0, id);
      note_write(ok);
      after_commit();
      // Readers find the batch in memory before anyone is told of it.
      if (ok && cfg_.history_size > 0) {
        std::lock_guard lock(recent_mu_);
        for (auto& r : batch) {
          auto& tail = recent_[r.room_id];
          if (tail.empty()) unfolded_.emplace(id, r.room_id);
          tail.push_back({r.seq, r.ts_ms, r.payload, r.client_id, id});
          if (tail.size() % HistoryFile::kChunkMessages == 0) full_.push_back(r.room_id);
        }
        recent_rows_ += batch.size();
        last_batch_ = id;
      }
      settle(batch, ok);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& r = batch[i];
        if (ok && deliver) deliver(Delivery{std::move(r.room_id), r.seq, epoch_, std::move(r.payload)});
        // A message the file refused is neither delivered nor kept: the sender hears why.
        batch_done[i](ok ? std::error_code{} : make_error_code(Error::engine_down), ok ? r.seq : 0,
                      ok ? std::string_view(epoch_) : std::string_view());
      }
      batch.clear();
      batch_done.clear();
      erase_rooms();
      housekeeping();
    }
  }

  // Marks the batch's client ids settled and answers the retries that waited on them; a
  // failed write forgets them, so a retry publishes anew.
  void settle(const std::vector<HistoryFile::Row>& batch, bool ok) {
    std::vector<std::pair<PublishedFn, std::uint64_t>> answers;
    {
      std::lock_guard lock(mu_);
      for (auto& r : batch) {
        if (r.client_id.empty()) continue;
        auto it = ids_.find(key_of(r.room_id, r.client_id));
        if (it == ids_.end() || it->second.seq != r.seq) continue;
        for (auto& w : it->second.waiters) answers.emplace_back(std::move(w), r.seq);
        if (ok) {
          it->second.settled = true;
          it->second.waiters.clear();
        } else {
          ids_.erase(it);
        }
      }
    }
    for (auto& [fn, seq] : answers)
      fn(ok ? std::error_code{} : make_error_code(Error::engine_down), ok ? seq : 0,
         ok ? std::string_view(epoch_) : std::string_view());
  }

  // After each commit: asks for a checkpoint, or makes one when the other thread cannot finish.
  void after_commit() {
    const int pages = writer_file_->wal_pages();
    if (pages >= cfg_.local_history.writer_checkpoint_pages) {
      writer_file_->checkpoint();
      return;
    }
    std::lock_guard lock(checkpoint_mu_);
    written_since_checkpoint_ = true;
    if (pages >= cfg_.local_history.checkpoint_pages) {
      checkpoint_wanted_ = true;
      wake_checkpointer_.notify_one();
    }
  }

  void run_checkpointer() {
    for (;;) {
      {
        std::unique_lock lock(checkpoint_mu_);
        wake_checkpointer_.wait_for(lock, cfg_.local_history.checkpoint_every, [&] { return checkpoint_wanted_ || stopping_checkpoints_; });
        if (stopping_checkpoints_) break;
        if (!checkpoint_wanted_ && !written_since_checkpoint_) continue;
        checkpoint_wanted_ = false;
        written_since_checkpoint_ = false;
      }
      checkpoint_file_->checkpoint();
    }
  }

  void note_write(bool ok) {
    if (ok != !write_failing_.exchange(!ok))
      ok ? log::event("engine_up", {{"engine", "history"}})
         : log::event("engine_down", {{"engine", "history"}, {"why", writer_file_->last_error()}});
  }

  // Folds the tails whose oldest is fold_age old (or, `pressed`, the oldest tails however young;
  // all of each) or that hold a chunk's worth (whole chunks of them), at most kFoldSliceRooms of
  // them, or with `all` every tail, into chunk rows, and drops the journal rows nothing unfolded
  // is left in; then forgets the folded messages in memory (a reader that copied them before
  // finds them in the file too, and keeps one of each).
  // Returns whether tails that were due are left for the next slice. Finding them costs what is
  // due, not a walk over every room ever seen (unfolded_, full_). Writer thread only: it alone
  // changes recent_, so it reads it without the lock.
  bool fold(bool all, bool pressed = false) {
    const auto now = now_ms();
    const auto age_ms = cfg_.local_history.fold_age.count();
    const std::size_t chunk = HistoryFile::kChunkMessages;
    folds_.clear();
    folded_.clear();
    bool more = false;
    auto folding = [&](const std::vector<HistoryFile::Stored>* tail) {
      return std::find_if(folded_.begin(), folded_.end(), [&](const Folded& f) { return f.tail == tail; });
    };
    // Adds a room's tail (whole, or its whole chunks) to this slice; false once the slice is full.
    // With `all`, unfolded_ names each room once and nothing else is asked.
    auto take = [&](const std::string& room, bool whole) {
      auto it = recent_.find(room);
      if (it == recent_.end() || it->second.empty()) return true;
      auto& tail = it->second;
      const std::size_t n = whole || all ? tail.size() : tail.size() / chunk * chunk;
      if (n == 0 || (!all && folding(&tail) != folded_.end())) return true;
      if (!all && folds_.size() == kFoldSliceRooms) {
        more = true;
        return false;
      }
      folds_.push_back({it->first, std::span<const HistoryFile::Stored>(tail.data(), n)});
      folded_.push_back({&it->first, &tail, n});
      return true;
    };
    // Oldest first: unfolded_ is in journal order, so the first room not yet due ends the walk.
    for (const auto& [batch, room] : unfolded_) {
      if (!all && !pressed) {
        auto it = recent_.find(room);
        if (it != recent_.end() && !it->second.empty() && now - it->second.front().ts_ms < age_ms) break;
      }
      if (!take(room, true)) break;
    }
    std::size_t seen = 0;
    for (; !all && !more && seen < full_.size(); ++seen)
      if (!take(full_[seen], false)) break;
    if (all) full_.clear();
    else full_.erase(full_.begin(), full_.begin() + static_cast<std::ptrdiff_t>(seen));
    // The oldest journal row still needed after this fold: the oldest message left in memory,
    // in a tail folded in part or in the oldest tail not folded at all.
    std::int64_t below = last_batch_ + 1;
    if (!all) {
      for (const auto& f : folded_)
        if (f.n < f.tail->size()) below = std::min(below, (*f.tail)[f.n].batch);
      for (const auto& [batch, room] : unfolded_) {
        if (batch >= below) break;
        auto it = recent_.find(room);
        if (it != recent_.end() && folding(&it->second) != folded_.end()) continue;
        below = batch;
        break;
      }
    }
    if (folds_.empty() && below <= journal_below_) return more;
    const bool ok = writer_file_->fold(folds_, cfg_.history_size, below);
    // Its own flag: appends that keep succeeding must not say "up" over folds that fail.
    if (ok != !fold_failing_.exchange(!ok))
      ok ? log::event("engine_up", {{"engine", "history"}, {"what", "fold"}})
         : log::event("engine_down", {{"engine", "history"}, {"what", "fold"}, {"why", writer_file_->last_error()}});
    after_commit();
    if (!ok) return false;  // kept in memory and in the journal; the next fold tries again
    journal_below_ = below;
    std::lock_guard lock(recent_mu_);
    for (auto& f : folded_) {
      unfolded_.erase({f.tail->front().batch, *f.room});
      f.tail->erase(f.tail->begin(), f.tail->begin() + static_cast<std::ptrdiff_t>(f.n));
      recent_rows_ -= f.n;
      if (!f.tail->empty()) unfolded_.emplace(f.tail->front().batch, *f.room);
    }
    // A room with nothing left in memory leaves recent_: rooms gone quiet cost nothing here.
    for (auto& f : folded_)
      if (f.tail->empty()) recent_.erase(recent_.find(*f.room));
    return more;
  }

  // One slice of the walk over every room (prune_rooms_ of them); returns whether it is complete.
  bool prune() {
    bool done = true;
    const auto start = std::chrono::steady_clock::now();
    writer_file_->prune_rooms(now_ms() - ttl_ms(), cfg_.history_size, prune_rooms_, prune_after_, done);
    const auto took = std::chrono::steady_clock::now() - start;
    if (took > kPruneSliceBudget)
      prune_rooms_ = std::max<std::size_t>(1, prune_rooms_ / 2);
    else if (took < kPruneSliceBudget / 4)
      prune_rooms_ = std::min(kPruneRoomsMax, prune_rooms_ * 2);
    if (done) {
      prune_after_.clear();
      prune_rooms_ = kPruneRoomsFirst;
    }
    return done;
  }

  // Adds what `recent` holds for `req` to `h` (read from the table): one copy of each seq,
  // ascending, at most req.limit of them from the end the request asks for.
  // `first` is the oldest seq memory holds for it (0: none).
  static void merge_recent(const HistoryRequest& req, std::uint64_t first, std::vector<Delivery> recent, History& h) {
    if (first && (!h.first_seq || first < h.first_seq)) h.first_seq = first;
    if (recent.empty() || req.limit == 0) return;
    auto& m = h.messages;
    m.insert(m.end(), std::make_move_iterator(recent.begin()), std::make_move_iterator(recent.end()));
    std::stable_sort(m.begin(), m.end(), [](const Delivery& a, const Delivery& b) { return a.seq < b.seq; });
    m.erase(std::unique(m.begin(), m.end(), [](const Delivery& a, const Delivery& b) { return a.seq == b.seq; }), m.end());
    if (m.size() <= req.limit) return;
    if (req.after_seq) m.erase(m.begin() + static_cast<std::ptrdiff_t>(req.limit), m.end());
    else m.erase(m.begin(), m.end() - static_cast<std::ptrdiff_t>(req.limit));
  }

  // Returns the messages of `room` not yet folded that `req` may see, ascending; `first` gets
  // the oldest retained one's seq (0: none).
  std::vector<Delivery> recent_of(const HistoryRequest& req, std::uint64_t floor, std::int64_t cutoff_ms,
                                  std::uint64_t& first) {
    std::vector<Delivery> out;
    first = 0;
    std::lock_guard lock(recent_mu_);
    auto it = recent_.find(req.room_id);
    if (it == recent_.end()) return out;
    const std::uint64_t lo = std::max(floor, req.after_seq);
    for (auto& r : it->second) {
      if (!first && r.seq > floor && r.ts_ms >= cutoff_ms) first = r.seq;
      if (req.limit == 0) break;
      if (r.seq <= lo || (req.before_seq && r.seq >= req.before_seq) || r.ts_ms < cutoff_ms) continue;
      out.push_back(Delivery{req.room_id, r.seq, epoch_, r.payload});
    }
    return out;
  }

  void run_reader() {
    for (;;) {
      Read r;
      {
        std::unique_lock lock(read_mu_);
        wake_reader_.wait(lock, [&] { return !reads_.empty() || stopping_reads_; });
        if (reads_.empty()) break;
        r = std::move(reads_.front());
        reads_.pop_front();
      }
      History h;
      {
        std::lock_guard lock(mu_);
        auto it = seqs_.find(r.req.room_id);
        h.last_seq = it == seqs_.end() ? 0 : it->second;
      }
      // Messages the size bound leaves out but no prune has deleted yet are not history.
      const std::uint64_t floor = h.last_seq > cfg_.history_size ? h.last_seq - cfg_.history_size : 0;
      const auto cutoff = now_ms() - ttl_ms();
      // Memory first, then the file: a fold between the two leaves a message in both (merged
      // to one), never in neither.
      std::uint64_t first = 0;
      auto recent = recent_of(r.req, floor, cutoff, first);
      bool ok = reader_file_->read(r.req, cutoff, floor, h);
      if (ok) merge_recent(r.req, first, std::move(recent), h);
      // A publish after the seq was read can already be in memory: last_seq covers what is sent.
      for (const auto& m : h.messages) h.last_seq = std::max(h.last_seq, m.seq);
      h.epoch = epoch_;
      if (!ok) r.done(Error::engine_down, {});
      else r.done({}, std::move(h));
    }
  }

  BusConfig cfg_;
  std::unique_ptr<HistoryFile> writer_file_;  // writer thread only (and the constructor)
  std::unique_ptr<HistoryFile> reader_file_;  // reader thread only
  std::string epoch_;
  std::atomic<bool> write_failing_{false};
  std::atomic<bool> fold_failing_{false};  // the last fold failed (see publish)
  ControlFn control_;  // set before start

  std::mutex mu_;
  std::condition_variable wake_writer_;
  DeliverFn deliver_;
  bool stopping_ = false;
  std::unordered_map<std::string, std::uint64_t> seqs_;  // every room's last assigned seq
  std::vector<HistoryFile::Row> queue_;                  // numbered, not yet written
  std::vector<PublishedFn> queue_done_;                  // their answers, in the same order
  std::vector<std::pair<std::string, DoneFn>> erasures_; // rooms whose history goes, not yet gone
  std::unordered_map<std::string, Seen> ids_;            // "room\nclient id" -> its publish
  std::deque<std::pair<std::int64_t, std::string>> id_order_;  // ids_ in arrival order

  // The journal's messages not yet folded into chunks, per room in seq order: changed by the
  // writer thread (under recent_mu_), read by the reader thread.
  std::mutex recent_mu_;
  std::unordered_map<std::string, std::vector<HistoryFile::Stored>> recent_;
  std::atomic<std::size_t> recent_rows_{0};
  // Writer thread only: the newest journal row, the journal rows already dropped (below this),
  // and fold()'s scratch.
  std::int64_t last_batch_ = 0;
  std::int64_t journal_below_ = 0;
  std::string prune_after_;  // the last room the current prune walk has done
  std::size_t prune_rooms_ = kPruneRoomsFirst;  // rooms per prune slice (prune() adapts it)
  std::vector<HistoryFile::Fold> folds_;
  struct Folded {
    const std::string* room;  // recent_'s key
    std::vector<HistoryFile::Stored>* tail;
    std::size_t n;
  };
  std::vector<Folded> folded_;
  // The rooms with messages in memory, by the journal row of their oldest one (so oldest first),
  // and those whose tail reached a chunk's worth since (may repeat, or be folded already).
  std::set<std::pair<std::int64_t, std::string>> unfolded_;
  std::vector<std::string> full_;

  std::unique_ptr<HistoryFile> checkpoint_file_;  // checkpointer thread only
  std::mutex checkpoint_mu_;
  std::condition_variable wake_checkpointer_;
  bool checkpoint_wanted_ = false;
  bool written_since_checkpoint_ = false;
  bool stopping_checkpoints_ = false;
  std::thread checkpointer_;

  std::mutex read_mu_;
  std::condition_variable wake_reader_;
  bool stopping_reads_ = false;
  std::deque<Read> reads_;

  std::thread writer_;
  std::thread reader_;
};

}  // namespace

std::unique_ptr<MessageBus> make_local_bus(const BusConfig& cfg, boost::asio::io_context&) {
  return std::make_unique<LocalBus>(cfg);
}

}  // namespace chatd::bus
