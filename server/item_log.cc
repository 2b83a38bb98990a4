#include "server/item_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/item_journal.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

absl::Status ErrnoStatus(int error, absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(error)));
}

}  // namespace

std::string ItemLog::RecordName(int64_t seq) { return absl::StrFormat("%020d.rec", seq); }

absl::StatusOr<std::unique_ptr<ItemLog>> ItemLog::Open(const std::string& log_dir,
                                                       const std::string& model_version) {
  RETURN_IF_ERROR(ItemJournal::CheckModelVersion(model_version));
  struct stat st;
  if (::stat(log_dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("item_log_dir ", log_dir, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("item_log_dir ", log_dir, " is not a directory"));
  }
  const std::string dir = absl::StrCat(log_dir, "/", model_version);
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create item log ", dir, ": ", std::strerror(errno)));
    }
  } else if (absl::Status s = SyncDirectory(log_dir); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }
  // Another replica may have created it meanwhile; it must be a directory either way.
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("item log ", dir, " is not a directory"));
  }
  return std::unique_ptr<ItemLog>(new ItemLog(dir));
}

absl::StatusOr<std::vector<ItemLog::Change>> ItemLog::ReadFrom(int64_t next, int64_t limit) const {
  std::vector<Change> changes;
  // Large enough for the biggest record, small enough that a planted huge file is refused.
  const ReadFileOptions options = {.max_bytes = ItemJournal::kHeaderBytes + ItemJournal::kRecordHeaderBytes +
                                                ItemJournal::kMaxRecordBytes,
                                   .regular_only = true,
                                   .no_follow = true};
  for (int64_t seq = next; static_cast<int64_t>(changes.size()) < limit; ++seq) {
    const std::string path = absl::StrCat(dir_, "/", RecordName(seq));
    absl::StatusOr<std::string> data = ReadFile(path, options);
    if (!data.ok()) {
      if (absl::IsNotFound(data.status())) break;  // not written (yet)
      return data.status();
    }
    char kind = 0;
    std::string payload;
    if (absl::Status s = ItemJournal::DecodeSingleRecordFile(*data, &kind, &payload); !s.ok()) {
      return absl::DataLossError(absl::StrCat("item log record ", path, ": ", s.message()));
    }
    if (kind == ItemJournal::kUpsert) {
      v1::UpsertItemsRequest upsert;
      if (!upsert.ParseFromString(payload)) {
        return absl::DataLossError(absl::StrCat("item log record ", path, ": the upsert does not parse"));
      }
      changes.emplace_back(std::move(upsert));
    } else {
      v1::RemoveItemsRequest remove;
      if (!remove.ParseFromString(payload)) {
        return absl::DataLossError(absl::StrCat("item log record ", path, ": the removal does not parse"));
      }
      changes.emplace_back(std::move(remove));
    }
  }
  return changes;
}

absl::Status ItemLog::Write(int64_t seq, const Change& change) const {
  if (seq < 1) return absl::InvalidArgumentError(absl::StrCat("item log sequence numbers start at 1, got ", seq));
  std::string payload;
  char kind = ItemJournal::kUpsert;
  if (const auto* upsert = std::get_if<v1::UpsertItemsRequest>(&change)) {
    payload = upsert->SerializeAsString();
  } else {
    kind = ItemJournal::kRemove;
    payload = std::get<v1::RemoveItemsRequest>(change).SerializeAsString();
  }
  if (payload.size() > ItemJournal::kMaxRecordBytes) {
    return absl::InvalidArgumentError(absl::StrCat("an item change of ", payload.size(),
                                                   " bytes is over the log's record limit of ",
                                                   ItemJournal::kMaxRecordBytes));
  }
  const std::string final_path = absl::StrCat(dir_, "/", RecordName(seq));
  // The temp name is unique to this process and call: replicas write in the same directory.
  thread_local std::mt19937_64 random{std::random_device{}()};
  const std::string temp_path = absl::StrCat(dir_, "/.tmp-", ::getpid(), "-", absl::Hex(random()));
  if (absl::Status s = WriteFileDurably(temp_path, ItemJournal::FileHeader() + ItemJournal::EncodeRecord(kind, payload));
      !s.ok()) {
    ::unlink(temp_path.c_str());
    return absl::InternalError(s.message());
  }
  // link() is exclusive: exactly one writer gets each sequence number.
  const int linked = ::link(temp_path.c_str(), final_path.c_str());
  const int link_error = errno;
  ::unlink(temp_path.c_str());
  if (linked != 0) {
    if (link_error == EEXIST) {
      return absl::AlreadyExistsError(absl::StrCat("item log record ", final_path, " was written by another replica"));
    }
    return ErrnoStatus(link_error, "create", final_path);
  }
  if (absl::Status s = SyncDirectory(dir_); !s.ok()) {
    // The record is visible to the other replicas and may be applied by them: it cannot
    // be taken back, so it is not reported as refused either. The caller learns that its
    // durability is unknown.
    return absl::InternalError(absl::StrCat("item log record ", final_path,
                                            " written but its directory could not be synced: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace twotower
