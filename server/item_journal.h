// Durable log of the online item changes (UpsertItems / RemoveItems) of one model
// version, so a restart or a reload of the same bundle does not lose them. One file per
// model version, <state_dir>/<model_version>.items.journal: records of
// [1 byte kind][4 bytes little-endian length][serialized request], appended and fsynced
// before the change becomes visible. A torn last record (a crash mid-append) is dropped
// on replay with a warning; anything else unreadable is an error.
//
// The journal belongs to the model version: a newly trained bundle starts without it
// (add the items to the item table and re-export to keep them across models).
#ifndef TWOTOWER_SERVER_ITEM_JOURNAL_H_
#define TWOTOWER_SERVER_ITEM_JOURNAL_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "twotower/v1/admin.pb.h"

namespace twotower {

class ItemJournal {
 public:
  // `state_dir` empty = no journal (changes live until the process ends).
  ItemJournal(std::string state_dir, std::string model_version);

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  absl::Status Append(const v1::UpsertItemsRequest& upsert) const;
  absl::Status Append(const v1::RemoveItemsRequest& remove) const;

  // Calls the handlers for every record, in order. A missing file is an empty journal.
  absl::Status Replay(const std::function<absl::Status(const v1::UpsertItemsRequest&)>& on_upsert,
                      const std::function<absl::Status(const v1::RemoveItemsRequest&)>& on_remove) const;

 private:
  absl::Status AppendRecord(char kind, const std::string& payload) const;
  std::string path_;
};

}  // namespace twotower

#endif  // TWOTOWER_SERVER_ITEM_JOURNAL_H_
