#include "server/item_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/server_metrics.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace twotower {

namespace {

constexpr char kMagic[4] = {'T', 'T', 'I', 'J'};
constexpr uint32_t kMaskDelta = 0xa282ead8u;
// Payload size a compaction aims at per record (one entity may exceed it).
constexpr size_t kCompactedRecordBytes = 4u << 20;

uint32_t DecodeU32(const std::string& data, size_t pos) {
  uint32_t value = 0;
  for (int b = 0; b < 4; ++b) value |= static_cast<uint32_t>(static_cast<uint8_t>(data[pos + b])) << (8 * b);
  return value;
}

void EncodeU32(uint32_t value, std::string* out) {
  for (int b = 0; b < 4; ++b) out->push_back(static_cast<char>((value >> (8 * b)) & 0xff));
}

// The masked CRC-32 of a record's length, kind and payload (`bytes`).
uint32_t MaskedCrc(const char* bytes, size_t n) {
  const uint32_t crc = static_cast<uint32_t>(
      ::crc32(::crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes), static_cast<uInt>(n)));
  return ((crc >> 15) | (crc << 17)) + kMaskDelta;
}

bool IsKind(char kind) { return kind == ItemJournal::kUpsert || kind == ItemJournal::kRemove; }

// Whether a whole, checksummed record starts at `pos`.
bool ValidRecordAt(const std::string& data, size_t pos) {
  if (data.size() - pos < ItemJournal::kRecordHeaderBytes) return false;
  const uint32_t length = DecodeU32(data, pos + 4);
  if (!IsKind(data[pos + 8]) || length > ItemJournal::kMaxRecordBytes ||
      length > data.size() - pos - ItemJournal::kRecordHeaderBytes) {
    return false;
  }
  return DecodeU32(data, pos) == MaskedCrc(data.data() + pos + 4, 5 + size_t{length});
}

bool AllZero(const std::string& data, size_t pos) {
  for (size_t i = pos; i < data.size(); ++i) {
    if (data[i] != 0) return false;
  }
  return true;
}

absl::Status ErrnoStatus(int error, absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(error)));
}

int64_t EntriesOf(const v1::UpsertItemsRequest& upsert) { return std::max(1, upsert.items_size()); }
int64_t EntriesOf(const v1::RemoveItemsRequest& remove) { return std::max(1, remove.item_ids_size()); }

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd) {
    Close();
    fd_ = fd;
  }
  // Closes now; the errno of a failed close, else 0.
  int Close() {
    const int fd = std::exchange(fd_, -1);
    return fd >= 0 && ::close(fd) != 0 ? errno : 0;
  }

 private:
  int fd_;
};

}  // namespace

// The file read and verified.
struct ItemJournal::Contents {
  std::string data;
  int version = 0;  // 0: empty file (or none)
  State state;
  int64_t records = 0;
  int64_t entries = 0;
  // Where a torn tail starts; data.size() when there is none.
  size_t valid_end = 0;
};

absl::Status ItemChangeFold::Upsert(v1::UpsertItemsRequest& upsert) {
  absl::flat_hash_set<absl::string_view> fresh;
  for (int i = 0; i < upsert.items_size(); ++i) {
    const std::string& id = upsert.items(i).id();
    if (id.empty()) return absl::DataLossError(absl::StrCat("items[", i, "]: id is empty"));
    if (!fresh.insert(id).second) return absl::DataLossError(absl::StrCat("item \"", id, "\" given twice"));
  }
  for (int i = 0; i < upsert.items_size(); ++i) {
    v1::Entity& entity = *upsert.mutable_items(i);
    const int64_t slot = static_cast<int64_t>(upserts_.size());
    auto [it, inserted] = last_.try_emplace(entity.id(), slot);
    if (inserted) {
      seen_.push_back(entity.id());
    } else if (it->second >= 0) {
      upserts_[it->second].Clear();  // replaced: no longer live
      live_[it->second] = false;
    }
    it->second = slot;
    upserts_.push_back(std::move(entity));
    live_.push_back(true);
  }
  return absl::OkStatus();
}

void ItemChangeFold::Remove(const v1::RemoveItemsRequest& remove) {
  for (const std::string& id : remove.item_ids()) {
    auto [it, inserted] = last_.try_emplace(id, -1);
    if (inserted) {
      seen_.push_back(id);
    } else if (it->second >= 0) {
      upserts_[it->second].Clear();
      live_[it->second] = false;
    }
    it->second = -1;
  }
}

ItemJournal::State ItemChangeFold::Finish(const std::function<bool(const std::string&)>& is_base_item) && {
  ItemJournal::State state;
  for (size_t s = 0; s < upserts_.size(); ++s) {
    if (live_[s]) state.upserted.push_back(std::move(upserts_[s]));
  }
  for (std::string& id : seen_) {
    if (last_.at(id) < 0 && (!is_base_item || is_base_item(id))) state.removed.push_back(std::move(id));
  }
  return state;
}

absl::Status ItemJournal::DecodeSingleRecordFile(const std::string& data, char* kind, std::string* payload) {
  if (data.size() < kHeaderBytes || data.compare(0, sizeof(kMagic), kMagic, sizeof(kMagic)) != 0 ||
      DecodeU32(data, sizeof(kMagic)) != kFormatVersion) {
    return absl::DataLossError("not an item record file (bad header)");
  }
  if (!ValidRecordAt(data, kHeaderBytes)) return absl::DataLossError("the record does not check out");
  const uint32_t length = DecodeU32(data, kHeaderBytes + 4);
  if (kHeaderBytes + kRecordHeaderBytes + length != data.size()) {
    return absl::DataLossError("bytes after the record");
  }
  *kind = data[kHeaderBytes + 8];
  payload->assign(data, kHeaderBytes + kRecordHeaderBytes, length);
  return absl::OkStatus();
}

std::string ItemJournal::FileHeader() {
  std::string header(kMagic, sizeof(kMagic));
  EncodeU32(kFormatVersion, &header);
  return header;
}

std::string ItemJournal::EncodeRecord(char kind, absl::string_view payload) {
  std::string record(4, '\0');
  EncodeU32(static_cast<uint32_t>(payload.size()), &record);
  record.push_back(kind);
  record.append(payload.data(), payload.size());
  const uint32_t crc = MaskedCrc(record.data() + 4, record.size() - 4);
  for (int b = 0; b < 4; ++b) record[b] = static_cast<char>((crc >> (8 * b)) & 0xff);
  return record;
}

absl::Status ItemJournal::CheckModelVersion(const std::string& model_version) {
  const auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_version \"", absl::CHexEscape(model_version.substr(0, 160)),
                     "\" cannot name an item journal file: ", why));
  };
  if (model_version.empty() || model_version.size() > 128) return refuse("it must be 1-128 characters");
  if (model_version == "." || model_version == "..") return refuse("it is a directory name");
  for (const char c : model_version) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '-';
    if (!plain) return refuse("only letters, digits, '.', '_' and '-' are allowed");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ItemJournal>> ItemJournal::Open(const std::string& state_dir,
                                                                const std::string& model_version,
                                                                Options options) {
  if (state_dir.empty()) return nullptr;
  RETURN_IF_ERROR(CheckModelVersion(model_version));
  struct stat st;
  if (::stat(state_dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir ", state_dir, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("state_dir ", state_dir, " is not a directory"));
  }
  return std::unique_ptr<ItemJournal>(new ItemJournal(
      absl::StrCat(state_dir, "/", model_version, ".items.journal"), std::move(options)));
}

ItemJournal::ItemJournal(std::string path, Options options)
    : path_(std::move(path)), dir_(DirName(path_)), options_(std::move(options)) {
  compact_slack_ = options_.compact_slack;
}

int ItemJournal::Fault(absl::string_view operation) const {
  return options_.fault_for_test ? options_.fault_for_test(operation) : 0;
}

namespace {

// The whole journal at `path` into *data (also what it grew by while being read); false
// when there is no file.
absl::StatusOr<bool> ReadJournalFile(const std::string& path, std::string* data) {
  // O_NONBLOCK: opening a FIFO planted at the path must not hang.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    if (errno == ENOENT) return false;
    return ErrnoStatus(errno, "open", path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("item journal ", path, " is not a regular file"));
  }
  data->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (true) {
    if (got == data->size()) data->resize(data->size() + 4096);  // grew since fstat
    const ssize_t n = ::read(fd.get(), data->data() + got, data->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read", path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  data->resize(got);
  return true;
}

}  // namespace

absl::StatusOr<ItemJournal::Contents> ItemJournal::Read() const {
  Contents contents;
  ASSIGN_OR_RETURN(const bool exists, ReadJournalFile(path_, &contents.data));
  if (!exists) return contents;
  const std::string& data = contents.data;

  const auto corrupt = [&](size_t pos, absl::string_view what) {
    return absl::DataLossError(absl::StrCat("item journal ", path_, ": corrupt record at byte ", pos, ": ", what,
                                            " (the file is left as it is)"));
  };
  ItemChangeFold fold;
  const auto apply = [&](char kind, size_t pos, size_t payload_at, size_t length) -> absl::Status {
    const absl::string_view payload(data.data() + payload_at, length);
    absl::Status folded;
    if (kind == kUpsert) {
      v1::UpsertItemsRequest upsert;
      if (!upsert.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return corrupt(pos, "the upsert does not parse");
      }
      contents.entries += EntriesOf(upsert);
      folded = fold.Upsert(upsert);
    } else {
      v1::RemoveItemsRequest remove;
      if (!remove.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return corrupt(pos, "the removal does not parse");
      }
      contents.entries += EntriesOf(remove);
      fold.Remove(remove);
    }
    if (!folded.ok()) return corrupt(pos, folded.message());
    ++contents.records;
    return absl::OkStatus();
  };

  size_t pos = 0;
  if (data.empty()) {
    contents.version = 0;
  } else if (data.size() >= sizeof(kMagic) && std::memcmp(data.data(), kMagic, sizeof(kMagic)) == 0) {
    if (data.size() < kHeaderBytes) return corrupt(0, "the file header is cut short");
    const uint32_t version = DecodeU32(data, sizeof(kMagic));
    if (version != kFormatVersion) {
      return absl::FailedPreconditionError(absl::StrCat("item journal ", path_, " has format version ", version,
                                                        "; this build reads 1 and ", kFormatVersion));
    }
    contents.version = 2;
    pos = kHeaderBytes;
  } else if (IsKind(data[0])) {
    contents.version = 1;
  } else if (!AllZero(data, 0)) {
    return corrupt(0, "not an item journal (no \"TTIJ\" header)");
  }

  while (pos < data.size()) {
    if (AllZero(data, pos)) break;  // zero-filled: the file grew, its data never came
    if (contents.version == 1) {
      if (data.size() - pos < 5) break;  // torn header
      const char kind = data[pos];
      const uint32_t length = DecodeU32(data, pos + 1);
      if (!IsKind(kind)) return corrupt(pos, "unknown record kind");
      if (length > kMaxRecordBytes) return corrupt(pos, absl::StrCat("length ", length, " over the limit"));
      if (length > data.size() - pos - 5) break;  // torn payload
      RETURN_IF_ERROR(apply(kind, pos, pos + 5, length));
      pos += 5 + size_t{length};
      continue;
    }
    if (data.size() - pos < kRecordHeaderBytes) break;  // torn header
    const uint32_t length = DecodeU32(data, pos + 4);
    const char kind = data[pos + 8];
    if (length > kMaxRecordBytes) {
      return corrupt(pos, absl::StrCat("length ", length, " over the limit of ", kMaxRecordBytes));
    }
    if (length > data.size() - pos - kRecordHeaderBytes) {
      // Runs past the end: torn, unless a valid record follows (then the length is bad).
      for (size_t next = pos + 1; next < data.size(); ++next) {
        if (ValidRecordAt(data, next)) {
          return corrupt(pos, absl::StrCat("its length ", length, " runs past the end of the file, but a valid ",
                                           "record follows at byte ", next));
        }
      }
      break;
    }
    if (DecodeU32(data, pos) != MaskedCrc(data.data() + pos + 4, 5 + size_t{length})) {
      return corrupt(pos, "checksum mismatch");
    }
    if (!IsKind(kind)) return corrupt(pos, "unknown record kind");
    RETURN_IF_ERROR(apply(kind, pos, pos + kRecordHeaderBytes, length));
    pos += kRecordHeaderBytes + size_t{length};
  }
  contents.valid_end = pos;
  contents.state = std::move(fold).Finish(options_.is_base_item);
  return contents;
}

namespace {

// Writes `data` to the first free name of `base`, `base`.1, `base`.2, ... and fsyncs it
// and the directory. Returns the name used.
absl::StatusOr<std::string> KeepCopy(const std::string& base, absl::string_view data) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::string name = attempt == 0 ? base : absl::StrCat(base, ".", attempt);
    Fd fd(::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (fd.get() < 0) {
      if (errno == EEXIST) continue;
      return ErrnoStatus(errno, "create", name);
    }
    if (const int error = WriteAll(fd.get(), data); error != 0) {
      ::unlink(name.c_str());
      return ErrnoStatus(error, "write", name);
    }
    if (::fsync(fd.get()) != 0 || fd.Close() != 0) {
      const int error = errno;
      ::unlink(name.c_str());
      return ErrnoStatus(error, "fsync", name);
    }
    RETURN_IF_ERROR(SyncDirectory(DirName(name)));
    return name;
  }
  return absl::AlreadyExistsError(absl::StrCat("no free name for a copy of ", base));
}

}  // namespace

absl::Status ItemJournal::Rewrite(const State& state, const std::string& keep_old, const std::string& old_data) {
  // The new content: the live upserts in records of about kCompactedRecordBytes, then the
  // removals likewise.
  std::string content = FileHeader();
  int64_t records = 0;
  v1::UpsertItemsRequest upsert;
  size_t upsert_bytes = 0;
  const auto flush_upsert = [&] {
    if (upsert.items_size() == 0) return;
    content += EncodeRecord(kUpsert, upsert.SerializeAsString());
    ++records;
    upsert.Clear();
    upsert_bytes = 0;
  };
  for (const v1::Entity& entity : state.upserted) {
    const size_t bytes = entity.ByteSizeLong() + 8;
    if (upsert_bytes > 0 && upsert_bytes + bytes > kCompactedRecordBytes) flush_upsert();
    *upsert.add_items() = entity;
    upsert_bytes += bytes;
  }
  flush_upsert();
  v1::RemoveItemsRequest remove;
  size_t remove_bytes = 0;
  for (const std::string& id : state.removed) {
    remove.add_item_ids(id);
    remove_bytes += id.size() + 8;
    if (remove_bytes > kCompactedRecordBytes) {
      content += EncodeRecord(kRemove, remove.SerializeAsString());
      ++records;
      remove.Clear();
      remove_bytes = 0;
    }
  }
  if (remove.item_ids_size() > 0) {
    content += EncodeRecord(kRemove, remove.SerializeAsString());
    ++records;
  }

  const std::string temp = absl::StrCat(path_, ".tmp");
  const auto fail = [&](int error, absl::string_view what, const std::string& path) {
    ::unlink(temp.c_str());
    return ErrnoStatus(error, what, path);
  };
  {
    Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (fd.get() < 0) return fail(errno, "create", temp);
    if (const int error = WriteAll(fd.get(), content, -1, [this] { return Fault("write"); }); error != 0) {
      return fail(error, "write", temp);
    }
    if (const int fault = Fault("fsync"); fault != 0 || ::fsync(fd.get()) != 0) {
      return fail(fault != 0 ? fault : errno, "fsync", temp);
    }
    if (const int error = fd.Close(); error != 0) return fail(error, "close", temp);
  }
  if (!keep_old.empty()) {
    absl::StatusOr<std::string> kept = KeepCopy(keep_old, old_data);
    if (!kept.ok()) {
      ::unlink(temp.c_str());
      return kept.status();
    }
    LogEvent("info", "item journal: old format kept", {{"journal", path_}, {"copy", *kept}});
  }
  if (const int fault = Fault("rename"); fault != 0 || ::rename(temp.c_str(), path_.c_str()) != 0) {
    return fail(fault != 0 ? fault : errno, "rename over", path_);
  }
  // From here the new file is the journal; its directory entry must be durable before
  // anything is appended to it.
  entries_ = static_cast<int64_t>(state.upserted.size() + state.removed.size());
  live_ = entries_;
  rewrite_pending_ = false;
  dir_sync_pending_ = true;
  if (const int fault = Fault("sync_dir"); fault != 0) return ErrnoStatus(fault, "fsync directory", dir_);
  RETURN_IF_ERROR(SyncDirectory(dir_));
  dir_sync_pending_ = false;
  LogEvent("info", "item journal written",
           {{"journal", path_},
            {"records", absl::StrCat(records)},
            {"items", absl::StrCat(state.upserted.size())},
            {"removed", absl::StrCat(state.removed.size())},
            {"bytes", absl::StrCat(content.size())}});
  return absl::OkStatus();
}

absl::StatusOr<ItemJournal::State> ItemJournal::Load() {
  absl::MutexLock lock(&mu_);
  // Until it loads, nothing may be appended (it could follow garbage).
  failure_ = "it has not been loaded (successfully)";
  ASSIGN_OR_RETURN(Contents contents, Read());
  if (contents.valid_end < contents.data.size()) {
    // A torn tail: keep its bytes, then cut it so appends follow the last whole record.
    const size_t at = contents.valid_end;
    const absl::string_view tail = absl::string_view(contents.data).substr(at);
    absl::StatusOr<std::string> kept = KeepCopy(absl::StrCat(path_, ".torn-", at), tail);
    LogEvent("warn", "item journal ends in a torn record (a crash mid-append); dropped",
             {{"journal", path_},
              {"offset", absl::StrCat(at)},
              {"bytes", absl::StrCat(tail.size())},
              {"copy", kept.ok() ? *kept : absl::StrCat("none: ", kept.status().message())}});
    Fd fd(::open(path_.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0) return ErrnoStatus(errno, "open", path_);
    int rc;
    do {
      rc = ::ftruncate(fd.get(), static_cast<off_t>(at));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 || ::fsync(fd.get()) != 0) return ErrnoStatus(errno, "cut the torn tail of", path_);
    contents.data.resize(at);
  }
  failure_.clear();
  entries_ = contents.entries;
  live_ = static_cast<int64_t>(contents.state.upserted.size() + contents.state.removed.size());
  compact_slack_ = options_.compact_slack;
  if (contents.version == 1) {
    rewrite_pending_ = true;
    if (absl::Status s = Rewrite(contents.state, absl::StrCat(path_, ".v1"), contents.data); !s.ok()) {
      LogEvent("warn", "item journal: cannot rewrite the old format yet (retried before the next append)",
               {{"journal", path_}, {"error", std::string(s.message())}});
    }
  } else if (entries_ > options_.compact_factor * live_ + compact_slack_) {
    if (absl::Status s = Rewrite(contents.state, "", ""); !s.ok()) {
      LogEvent("warn", "item journal compaction failed", {{"journal", path_}, {"error", std::string(s.message())}});
    }
  }
  return std::move(contents.state);
}

absl::Status ItemJournal::Compact() {
  absl::MutexLock lock(&mu_);
  return CompactLocked();
}

absl::Status ItemJournal::CompactLocked() {
  ASSIGN_OR_RETURN(Contents contents, Read());
  if (contents.valid_end < contents.data.size()) {
    return absl::FailedPreconditionError(absl::StrCat("item journal ", path_, " ends in a torn record at byte ",
                                                      contents.valid_end, "; load it to drop it"));
  }
  return Rewrite(contents.state, contents.version == 1 ? absl::StrCat(path_, ".v1") : "", contents.data);
}

absl::Status ItemJournal::Append(const v1::UpsertItemsRequest& upsert) {
  return AppendRecord(kUpsert, upsert.SerializeAsString(), EntriesOf(upsert));
}

absl::Status ItemJournal::Append(const v1::RemoveItemsRequest& remove) {
  return AppendRecord(kRemove, remove.SerializeAsString(), EntriesOf(remove));
}

absl::Status ItemJournal::AppendRecord(char kind, const std::string& payload, int64_t entries) {
  if (payload.size() > kMaxRecordBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the change is ", payload.size(),
                                                   " bytes; the item journal takes at most ", kMaxRecordBytes,
                                                   " per call (split it)"));
  }
  absl::MutexLock lock(&mu_);
  if (!failure_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("item journal ", path_, " refuses appends: ", failure_, "; load it again (restart the server or reload the model)"));
  }
  if (dir_sync_pending_) {
    const int fault = Fault("sync_dir");
    absl::Status s = fault != 0 ? ErrnoStatus(fault, "fsync directory", dir_) : SyncDirectory(dir_);
    if (!s.ok()) return s;
    dir_sync_pending_ = false;
  }
  if (rewrite_pending_) {
    RETURN_IF_ERROR(CompactLocked());
  }
  // Opens the journal, creating it (with its header, atomically) when missing or empty.
  Fd fd(-1);
  struct stat st;
  for (int attempt = 0;; ++attempt) {
    fd.Reset(::open(path_.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0 && errno != ENOENT) return ErrnoStatus(errno, "open", path_);
    if (fd.get() >= 0) {
      if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path_);
      if (!S_ISREG(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat("item journal ", path_, " is not a regular file"));
      }
      if (st.st_size > 0) break;
    }
    if (attempt > 0) return absl::InternalError(absl::StrCat("cannot create item journal ", path_));
    fd.Close();
    RETURN_IF_ERROR(Rewrite(State{}, "", ""));
  }
  // Never append after something that is not a version-2 header.
  const std::string expected = FileHeader();
  std::string header(kHeaderBytes, '\0');
  if (st.st_size < static_cast<off_t>(kHeaderBytes) ||
      ::pread(fd.get(), header.data(), kHeaderBytes, 0) != static_cast<ssize_t>(kHeaderBytes) || header != expected) {
    return absl::FailedPreconditionError(
        absl::StrCat("item journal ", path_, " does not start with a version-", kFormatVersion,
                     " header; not appending to it (load it again)"));
  }

  const off_t end = st.st_size;  // the last good offset
  const std::string record = EncodeRecord(kind, payload);
  const auto roll_back = [&](int error, absl::string_view what) {
    int rc;
    int fault = Fault("truncate");
    do {
      rc = fault != 0 ? (errno = fault, -1) : ::ftruncate(fd.get(), end);
    } while (rc != 0 && errno == EINTR && fault == 0);
    if (rc == 0) {
      fault = Fault("fsync");
      rc = fault != 0 ? (errno = fault, -1) : ::fsync(fd.get());
    }
    const std::string cause = absl::StrCat("cannot ", what, " ", path_, ": ", std::strerror(error));
    if (rc == 0) return absl::InternalError(absl::StrCat(cause, " (rolled back; the change is not applied)"));
    failure_ = absl::StrCat(cause, ", and rolling back to byte ", end, " failed too: ", std::strerror(errno));
    LogEvent("error", "item journal append could not be rolled back; refusing further appends",
             {{"journal", path_}, {"error", failure_}});
    return absl::InternalError(absl::StrCat("item journal ", path_, ": ", failure_,
                                            "; it refuses further appends until it is loaded again"));
  };
  if (const int error = WriteAll(fd.get(), record, end, [this] { return Fault("write"); }); error != 0) {
    return roll_back(error, "append to");
  }
  if (const int fault = Fault("fsync"); fault != 0 || ::fsync(fd.get()) != 0) {
    return roll_back(fault != 0 ? fault : errno, "fsync");
  }
  fd.Close();  // fsynced: a failed close loses nothing
  entries_ += entries;
  if (entries_ > options_.compact_factor * live_ + compact_slack_) {
    const absl::Time start = absl::Now();
    if (absl::Status s = CompactLocked(); !s.ok()) {
      compact_slack_ = 2 * compact_slack_ + 1;  // not again at every append
      LogEvent("warn", "item journal compaction failed (the journal is intact)",
               {{"journal", path_}, {"error", std::string(s.message())}});
    } else {
      compact_slack_ = options_.compact_slack;
      LogEvent("info", "item journal compacted",
               {{"journal", path_}, {"seconds", absl::StrCat(absl::ToDoubleSeconds(absl::Now() - start))}});
    }
  }
  return absl::OkStatus();
}

absl::Status ItemJournal::Replay(
    const std::function<absl::Status(const v1::UpsertItemsRequest&)>& on_upsert,
    const std::function<absl::Status(const v1::RemoveItemsRequest&)>& on_remove) const {
  ASSIGN_OR_RETURN(Contents contents, Read());
  const std::string& data = contents.data;
  // Read() verified every record before valid_end; walk them again in order.
  const bool v1 = contents.version == 1;
  size_t pos = contents.version == 2 ? kHeaderBytes : 0;
  const size_t header = v1 ? 5 : kRecordHeaderBytes;
  while (pos < contents.valid_end) {
    const char kind = v1 ? data[pos] : data[pos + 8];
    const uint32_t length = DecodeU32(data, v1 ? pos + 1 : pos + 4);
    const char* payload = data.data() + pos + header;
    absl::Status status;
    if (kind == kUpsert) {
      v1::UpsertItemsRequest upsert;
      upsert.ParseFromArray(payload, static_cast<int>(length));
      status = on_upsert(upsert);
    } else {
      v1::RemoveItemsRequest remove;
      remove.ParseFromArray(payload, static_cast<int>(length));
      status = on_remove(remove);
    }
    if (!status.ok()) return status;
    pos += header + size_t{length};
  }
  return absl::OkStatus();
}

}  // namespace twotower
