// Durable log of the online item changes (UpsertItems / RemoveItems) of one model
// version, so a restart or a reload of the same bundle does not lose them. One file per
// model version, <state_dir>/<model_version>.items.journal; a change is appended and
// fsynced before it becomes visible.
//
// File format (version 2; integers little-endian):
//   file   := header record*
//   header := "TTIJ" [uint32 format version = 2]                              (8 bytes)
//   record := [uint32 masked crc][uint32 length][uint8 kind][payload: length bytes]
//   kind   := 'U' (payload = a serialized UpsertItemsRequest)
//           | 'R' (payload = a serialized RemoveItemsRequest)
//   crc    := zlib's CRC-32 of the length, kind and payload bytes, masked as LevelDB's
//             log does: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
//   length <= kMaxRecordBytes (64 MiB).
// Reading, at each record:
//   - the header or the length runs past the end of the file, and no valid record can be
//     found after its start, or everything from its start is zero bytes: a torn tail
//     (a crash mid-append). Dropped with a warning; its bytes are kept in
//     <journal>.torn-<offset> and the journal is truncated to the record's start.
//   - anything else that does not check out (checksum, length over the limit, unknown
//     kind, a payload that does not parse, a torn-looking record followed by a valid one):
//     DATA_LOSS naming the file and the byte offset; the file is left as it is.
// Version 1 (no header, no checksum: [kind][uint32 length][payload]...) is still read,
// then rewritten as version 2 with the old file kept as <journal>.v1.
//
// Appends: a failed write or fsync is rolled back (truncated to the last good offset and
// fsynced), so a rejected change leaves nothing behind; if the rollback fails too, the
// journal refuses every further append (FAILED_PRECONDITION naming it) until it is
// loaded again. The file is created (and compacted) by writing a temp file, fsyncing it,
// renaming it over and fsyncing the directory: a crash leaves the old or the new file.
//
// Replay folds the records into the final state first (id -> last upsert, or removed),
// so loading costs one pass over the file and one upsert; when the journal holds more
// than twice the live entries plus Options::compact_slack, it is compacted: rewritten
// as the live state (the surviving upserts, then one remove of the removed base items).
//
// One process writes a journal (servers do not share a state_dir). The journal belongs to
// the model version: a newly trained bundle starts without it (add the items to the item
// table and re-export to keep them across models).
#ifndef TWOTOWER_SERVER_ITEM_JOURNAL_H_
#define TWOTOWER_SERVER_ITEM_JOURNAL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "twotower/v1/admin.pb.h"

namespace twotower {

// ItemJournal::Options.
struct ItemJournalOptions {
  // Whether an id whose last change is a removal still matters, i.e. names an item of
  // the bundle. Others are dropped from ItemJournal::State::removed and from a compacted journal.
  // Null: every removal is kept.
  std::function<bool(const std::string& id)> is_base_item;
  // Compact when the entries (items upserted + ids removed, over all records) exceed
  // compact_factor x the live entries + compact_slack.
  int64_t compact_factor = 2;
  int64_t compact_slack = 1000;
  // Tests only: called before each file operation ("write", "fsync", "truncate",
  // "rename", "sync_dir"); a non-zero return fails the operation with that errno.
  std::function<int(absl::string_view operation)> fault_for_test;
};

class ItemJournal {
 public:
  static constexpr uint32_t kFormatVersion = 2;
  static constexpr size_t kHeaderBytes = 8;        // "TTIJ" + version
  static constexpr size_t kRecordHeaderBytes = 9;  // crc + length + kind
  static constexpr uint32_t kMaxRecordBytes = 64u << 20;
  static constexpr char kUpsert = 'U';
  static constexpr char kRemove = 'R';

  using Options = ItemJournalOptions;

  // The journal's content folded: what replaying every record in order leaves.
  struct State {
    // Items whose last change is an upsert, with that upsert's features, in the order
    // the in-order replay leaves them (by their last upsert).
    std::vector<v1::Entity> upserted;
    // Ids whose last change is a removal (and that Options::is_base_item accepts), in
    // the order first seen.
    std::vector<std::string> removed;
  };

  // The journal of `model_version` in `state_dir`; null when `state_dir` is empty (no
  // journal: changes live until the process ends). INVALID_ARGUMENT when model_version
  // is not a plain file name ([A-Za-z0-9._-], 1-128 characters, not "." or ".."),
  // FAILED_PRECONDITION when state_dir is not an existing directory. Reads nothing.
  static absl::StatusOr<std::unique_ptr<ItemJournal>> Open(const std::string& state_dir,
                                                           const std::string& model_version,
                                                           Options options = {});
  // OK when `model_version` can be part of a journal's file name (see Open).
  static absl::Status CheckModelVersion(const std::string& model_version);

  ItemJournal(const ItemJournal&) = delete;
  ItemJournal& operator=(const ItemJournal&) = delete;

  const std::string& path() const { return path_; }

  // Reads the journal (a missing file is an empty journal), drops a torn tail (see the
  // format), converts version 1, compacts it when due, and returns the folded state.
  // DATA_LOSS for corruption, FAILED_PRECONDITION when the path is not a regular file or
  // not a journal.
  absl::StatusOr<State> Load();

  // Appends one change, durably (fsynced) before returning OK. INVALID_ARGUMENT for a
  // request over kMaxRecordBytes; FAILED_PRECONDITION until a Load succeeded, and after
  // an append whose rollback failed; INTERNAL for an I/O error (rolled back). May compact
  // the journal afterwards (a failed compaction is logged; the change is journaled).
  absl::Status Append(const v1::UpsertItemsRequest& upsert);
  absl::Status Append(const v1::RemoveItemsRequest& remove);

  // Rewrites the journal as its folded state (atomically; see the header comment).
  absl::Status Compact();

  // Calls the handlers for every record, in order; reads only (a torn tail is ignored).
  absl::Status Replay(const std::function<absl::Status(const v1::UpsertItemsRequest&)>& on_upsert,
                      const std::function<absl::Status(const v1::RemoveItemsRequest&)>& on_remove) const;

  // One record in the file format above (for tools and tests that write journals).
  static std::string EncodeRecord(char kind, absl::string_view payload);
  // The file header.
  static std::string FileHeader();
  // Decodes a file that holds the header and exactly one record (ItemLog's record
  // files): DATA_LOSS when it is anything else.
  static absl::Status DecodeSingleRecordFile(const std::string& data, char* kind, std::string* payload);

 private:
  struct Contents;
  ItemJournal(std::string path, Options options);

  absl::Status AppendRecord(char kind, const std::string& payload, int64_t entries);
  // Reads and verifies the whole file (no changes to it).
  absl::StatusOr<Contents> Read() const;
  // Writes `state` to a temp file and renames it over the journal. `keep_old` names a
  // copy of the old file to keep first (empty: none).
  absl::Status Rewrite(const State& state, const std::string& keep_old, const std::string& old_data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CompactLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int Fault(absl::string_view operation) const;

  const std::string path_;
  const std::string dir_;
  const Options options_;
  mutable absl::Mutex mu_;
  // Entries in the file and live entries at the last load / compaction (see Options).
  int64_t entries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t live_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t compact_slack_ ABSL_GUARDED_BY(mu_) = 0;
  // Why appends are refused (not loaded, or a failed append could not be rolled back);
  // empty when they are not.
  std::string failure_ ABSL_GUARDED_BY(mu_) = "it has not been loaded";
  // The file must be rewritten (version 1) before anything is appended to it.
  bool rewrite_pending_ ABSL_GUARDED_BY(mu_) = false;
  // A rename into the directory whose fsync failed: retried before the next append.
  bool dir_sync_pending_ ABSL_GUARDED_BY(mu_) = false;
};

// Item changes folded into ItemJournal::State in one pass: what replaying them in order
// leaves (used by ItemJournal::Load and by ItemLog readers).
class ItemChangeFold {
 public:
  // Takes the entities out of `upsert`. DATA_LOSS for an empty or repeated id (the
  // in-order replay, ApplyUpsert, would refuse it too).
  absl::Status Upsert(v1::UpsertItemsRequest& upsert);
  void Remove(const v1::RemoveItemsRequest& remove);
  // The folded state; removals of ids `is_base_item` refuses are dropped (null: kept).
  ItemJournal::State Finish(const std::function<bool(const std::string&)>& is_base_item) &&;

 private:
  std::vector<v1::Entity> upserts_;  // every upsert in order; replaced ones cleared
  std::vector<bool> live_;
  absl::flat_hash_map<std::string, int64_t> last_;  // id -> slot of its last upsert; -1 removed
  std::vector<std::string> seen_;                   // ids in order of first appearance
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_ITEM_JOURNAL_H_
