// The log of online item changes (UpsertItems / RemoveItems) that the replicas of one
// deployment share, so a change acknowledged by any replica is served by all of them,
// including replicas started later. It lives on a volume every replica mounts (e.g. a
// Kubernetes ReadWriteMany volume), one directory per model version:
//
//   <log_dir>/<model_version>/<seq>.rec      seq = 1, 2, 3, ... (20 decimal digits)
//
// A record file holds exactly one change in the item journal's format (ItemJournal's
// file header, then one checksummed record; see server/item_journal.h). Records are
// numbered without gaps: a writer creates record n only after it has applied records
// 1..n-1, and creates it atomically and exclusively (written and fsynced under a temp
// name, then hard-linked to its final name, which fails if another replica took n
// first; the directory is fsynced before Write returns). So there is one order of
// changes for everyone, no writer waits for a lock another process could die holding,
// and a reader never sees a half-written record. Readers poll: ReadFrom(n) returns the
// records n, n+1, ... that exist.
//
// A change that is acknowledged has its record durable (kill -9 of any process, at any
// point, loses no acknowledged change). A writer that dies after the link but before it
// answers leaves a change that is applied although its caller saw an error: the caller
// retries, and the upsert or removal, applied twice, has the same effect.
//
// The log is never compacted: it grows with the changes of one model version, and a new
// model version starts an empty one (fold the items into the item table for the next
// training). Directories of versions no longer served can be deleted.
#ifndef TWOTOWER_SERVER_ITEM_LOG_H_
#define TWOTOWER_SERVER_ITEM_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "twotower/v1/admin.pb.h"

namespace twotower {

class ItemLog {
 public:
  using Change = std::variant<v1::UpsertItemsRequest, v1::RemoveItemsRequest>;

  // The log of `model_version` under `log_dir` (its directory is created if missing).
  // INVALID_ARGUMENT for a model_version that cannot name a directory (see
  // ItemJournal::CheckModelVersion); FAILED_PRECONDITION when log_dir is not an existing
  // directory or the version's directory cannot be created.
  static absl::StatusOr<std::unique_ptr<ItemLog>> Open(const std::string& log_dir,
                                                       const std::string& model_version);

  ItemLog(const ItemLog&) = delete;
  ItemLog& operator=(const ItemLog&) = delete;

  const std::string& dir() const { return dir_; }

  // Records `next`, next + 1, ... up to the first that does not exist (at most `limit` of
  // them). DATA_LOSS naming the file for a record that does not check out (checksum,
  // format, a payload that does not parse), FAILED_PRECONDITION for a record name that
  // is not a regular file.
  absl::StatusOr<std::vector<Change>> ReadFrom(int64_t next, int64_t limit = INT64_MAX) const;

  // Writes `change` as record `seq`, durably. ALREADY_EXISTS when record `seq` exists
  // (another writer took it: read it, apply it, try seq + 1); INVALID_ARGUMENT for a
  // change over ItemJournal::kMaxRecordBytes; INTERNAL for an I/O error (nothing left
  // under the record's name).
  absl::Status Write(int64_t seq, const Change& change) const;

  // The name of record `seq` in dir().
  static std::string RecordName(int64_t seq);

 private:
  explicit ItemLog(std::string dir) : dir_(std::move(dir)) {}
  const std::string dir_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_ITEM_LOG_H_
