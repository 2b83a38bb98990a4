#include "server/item_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/server_metrics.h"
#include "util/file.h"

namespace twotower {

namespace {
constexpr char kUpsert = 'U';
constexpr char kRemove = 'R';
}  // namespace

ItemJournal::ItemJournal(std::string state_dir, std::string model_version) {
  if (!state_dir.empty()) path_ = absl::StrCat(state_dir, "/", model_version, ".items.journal");
}

absl::Status ItemJournal::AppendRecord(char kind, const std::string& payload) const {
  if (!enabled()) return absl::OkStatus();
  std::string record(1, kind);
  const uint32_t size = static_cast<uint32_t>(payload.size());
  for (int b = 0; b < 4; ++b) record.push_back(static_cast<char>((size >> (8 * b)) & 0xff));
  record += payload;
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", path_, ": ", std::strerror(errno)));
  size_t written = 0;
  while (written < record.size()) {
    const ssize_t n = ::write(fd, record.data() + written, record.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const absl::Status status = absl::InternalError(absl::StrCat("cannot append to ", path_, ": ", std::strerror(errno)));
      ::close(fd);
      return status;
    }
    written += static_cast<size_t>(n);
  }
  const int synced = ::fsync(fd);
  ::close(fd);
  if (synced != 0) return absl::InternalError(absl::StrCat("cannot fsync ", path_));
  return absl::OkStatus();
}

absl::Status ItemJournal::Append(const v1::UpsertItemsRequest& upsert) const {
  return AppendRecord(kUpsert, upsert.SerializeAsString());
}

absl::Status ItemJournal::Append(const v1::RemoveItemsRequest& remove) const {
  return AppendRecord(kRemove, remove.SerializeAsString());
}

absl::Status ItemJournal::Replay(
    const std::function<absl::Status(const v1::UpsertItemsRequest&)>& on_upsert,
    const std::function<absl::Status(const v1::RemoveItemsRequest&)>& on_remove) const {
  if (!enabled() || ::access(path_.c_str(), F_OK) != 0) return absl::OkStatus();
  absl::StatusOr<std::string> data = ReadFile(path_);
  if (!data.ok()) return data.status();
  size_t pos = 0;
  while (pos < data->size()) {
    if (data->size() - pos < 5) break;  // torn header
    const char kind = (*data)[pos];
    uint32_t size = 0;
    for (int b = 0; b < 4; ++b) size |= static_cast<uint32_t>(static_cast<uint8_t>((*data)[pos + 1 + b])) << (8 * b);
    if (data->size() - pos - 5 < size) break;  // torn payload
    const std::string payload = data->substr(pos + 5, size);
    absl::Status status;
    if (kind == kUpsert) {
      v1::UpsertItemsRequest upsert;
      if (!upsert.ParseFromString(payload)) return absl::DataLossError(absl::StrCat(path_, ": corrupt record at byte ", pos));
      status = on_upsert(upsert);
    } else if (kind == kRemove) {
      v1::RemoveItemsRequest remove;
      if (!remove.ParseFromString(payload)) return absl::DataLossError(absl::StrCat(path_, ": corrupt record at byte ", pos));
      status = on_remove(remove);
    } else {
      return absl::DataLossError(absl::StrCat(path_, ": unknown record kind at byte ", pos));
    }
    if (!status.ok()) return status;
    pos += 5 + size;
  }
  if (pos < data->size()) {
    // Cut the torn tail so later appends follow the last whole record.
    LogEvent("warn", "item journal ends in a torn record; dropped",
             {{"journal", path_}, {"bytes", absl::StrCat(data->size() - pos)}});
    if (::truncate(path_.c_str(), static_cast<off_t>(pos)) != 0) {
      return absl::InternalError(absl::StrCat("cannot truncate ", path_, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace twotower
