#include "bundle/bundle.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <system_error>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "util/file.h"
#include "util/mapped_file.h"
#include "util/sha256.h"
#include "util/status_macros.h"
#include "util/text_proto.h"

namespace twotower {

namespace {

constexpr char kManifest[] = "MANIFEST";
constexpr char kUserTower[] = "user_tower.pb";
constexpr char kItemTower[] = "item_tower.pb";
constexpr char kUsers[] = "users.pb";
constexpr char kItems[] = "items.pb";
constexpr char kItemEmbeddings[] = "item_embeddings.pb";
// The files of this format besides the MANIFEST: exactly these, each once.
// (Format 2 adds kBundleTablesFile; index.faiss is optional.)
constexpr const char* kDataFiles[] = {kUserTower, kItemTower, kUsers, kItems, kItemEmbeddings};

// Items whose forward pass the sanity check recomputes.
constexpr int kSanitySample = 16;

// An id for a message: escaped, at most ~100 bytes.
std::string Quoted(absl::string_view id) {
  constexpr size_t kMax = 100;
  std::string out = absl::StrCat("\"", absl::CHexEscape(id.substr(0, kMax)), "\"");
  if (id.size() > kMax) out += "...";
  return out;
}

// Tensors are stored as raw float32; every supported platform is little-endian.
static_assert(std::endian::native == std::endian::little);

std::string FloatBytes(std::span<const float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Where the next embedding table goes in embedding_tables.f32, after one ending at `end`.
int64_t NextTableOffset(int64_t end) {
  return (end + kBundleTableAlignment - 1) / kBundleTableAlignment * kBundleTableAlignment;
}

// The towers' embedding tables in their file order: the user tower's, then the item's.
std::vector<const EmbeddingTable*> BundleTables(const Bundle& bundle) {
  std::vector<const EmbeddingTable*> tables;
  for (const Tower* tower : {&bundle.user.tower, &bundle.item.tower}) {
    for (const EmbeddingTable& e : tower->embeddings()) tables.push_back(&e);
  }
  return tables;
}

// The contents of embedding_tables.f32: each table at NextTableOffset, zeros between.
std::string TablesFileBytes(const Bundle& bundle) {
  std::string bytes;
  for (const EmbeddingTable* e : BundleTables(bundle)) {
    bytes.resize(static_cast<size_t>(NextTableOffset(static_cast<int64_t>(bytes.size()))), '\0');
    const std::span<const float> values = e->values();
    bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
  return bytes;
}

// The bundle's embedding_tables.f32 as ReadBundle maps it, and where the tables
// read so far end (the next one starts at NextTableOffset of it).
struct MappedTables {
  std::string path;  // for messages
  std::shared_ptr<const MappedFile> file;
  int64_t end = 0;
};

absl::StatusOr<std::vector<float>> FloatsFromBytes(const std::string& bytes, size_t expected,
                                                   absl::string_view what) {
  if (bytes.size() != expected * sizeof(float)) {
    return absl::DataLossError(absl::StrCat(what, ": ", bytes.size(), " bytes, expected ",
                                            expected * sizeof(float)));
  }
  std::vector<float> v(expected);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

v1::Tensor* AddTensor(v1::TowerState* state, std::string name, std::vector<int64_t> shape) {
  v1::Tensor* t = state->add_tensors();
  t->set_name(std::move(name));
  for (int64_t s : shape) t->add_shape(s);
  return t;
}
void AddTensor(v1::TowerState* state, std::string name, std::vector<int64_t> shape,
               const std::vector<float>& data) {
  AddTensor(state, std::move(name), std::move(shape))->set_data(FloatBytes(data));
}

// The tower's state; its embedding tables only as records of where they are in
// embedding_tables.f32, from the first table after `*tables_end` (advanced past them).
v1::TowerState TowerToState(const TowerModel& model, int64_t* tables_end) {
  v1::TowerState state;
  model.encoder.ToState(&state);
  const Tower& tower = model.tower;
  for (size_t f = 0; f < tower.embeddings().size(); ++f) {
    const EmbeddingTable& e = tower.embeddings()[f];
    const int64_t offset = NextTableOffset(*tables_end);
    AddTensor(&state, absl::StrCat("embedding/", f), {e.rows, e.dim})->set_offset(offset);
    *tables_end = offset + static_cast<int64_t>(e.values().size() * sizeof(float));
  }
  for (size_t l = 0; l < tower.layers().size(); ++l) {
    const DenseLayer& d = tower.layers()[l];
    AddTensor(&state, absl::StrCat("dense/", l, "/weights"), {d.out, d.in}, d.weights);
    AddTensor(&state, absl::StrCat("dense/", l, "/bias"), {d.out}, d.bias);
  }
  return state;
}

// `tables`: where the embedding tables are (each tensor records its offset, which must
// be the next table's).
absl::StatusOr<TowerModel> TowerFromState(const v1::TowerSpec& spec, const v1::FeatureTableSpec& table_spec,
                                          const v1::TowerState& state, absl::string_view name, MappedTables* tables) {
  const std::vector<v1::FeatureSpec> schema(table_spec.features().begin(),
                                            table_spec.features().end());
  ASSIGN_OR_RETURN(FeatureEncoder encoder, FeatureEncoder::FromState(schema, state));
  const TowerShape shape = ShapeFor(spec, encoder);
  // The widths come from the manifest's config: check them before any arithmetic on them.
  int64_t input_width = shape.num_numeric;
  for (const TowerShape::Field& field : shape.fields) {
    if (field.rows < 1 || field.dim < 1) {
      return absl::DataLossError(absl::StrCat(name, ": an embedding field has no rows or width"));
    }
    input_width += field.dim;
  }
  bool widths_ok = shape.output_dim >= 1 && input_width <= kMaxBundleFileBytes / 4;
  for (int h : shape.hidden_dims) widths_ok &= h >= 1;
  if (!widths_ok) {
    return absl::DataLossError(absl::StrCat(name, ": the config's layer widths are not possible"));
  }
  const std::vector<int> dims = shape.layer_dims();
  const size_t expected = shape.fields.size() + 2 * (dims.size() - 1);
  if (static_cast<size_t>(state.tensors_size()) != expected) {
    return absl::DataLossError(absl::StrCat(name, ": ", state.tensors_size(),
                                            " tensors, expected ", expected));
  }
  int t = 0;
  std::vector<EmbeddingTable> embeddings;
  for (const TowerShape::Field& field : shape.fields) {
    const v1::Tensor& tensor = state.tensors(t);
    // rows and dim are >= 1 and below 2^31 (checked above): no overflow.
    const uint64_t floats = static_cast<uint64_t>(field.rows) * static_cast<uint64_t>(field.dim);
    const int64_t offset = NextTableOffset(tables->end);
    if (!tensor.data().empty() || tensor.offset() != offset || static_cast<uint64_t>(offset) > tables->file->size() ||
        floats > (tables->file->size() - static_cast<uint64_t>(offset)) / sizeof(float)) {
      return absl::DataLossError(absl::StrCat(name, " tensor ", tensor.name(), ": not the table of ", floats,
                                              " floats at byte ", offset, " of ", tables->path, " (",
                                              tables->file->size(), " bytes) that the format puts there"));
    }
    EmbeddingTable table{field.rows, field.dim, {}};
    table.mapped = {reinterpret_cast<const float*>(tables->file->data() + offset), static_cast<size_t>(floats)};
    table.mapping = tables->file;
    embeddings.push_back(std::move(table));
    tables->end = offset + static_cast<int64_t>(floats * sizeof(float));
    ++t;
  }
  std::vector<DenseLayer> layers;
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    ASSIGN_OR_RETURN(std::vector<float> w,
                     FloatsFromBytes(state.tensors(t).data(), static_cast<size_t>(dims[l]) * dims[l + 1],
                                     absl::StrCat(name, " tensor ", state.tensors(t).name())));
    ASSIGN_OR_RETURN(std::vector<float> b,
                     FloatsFromBytes(state.tensors(t + 1).data(), dims[l + 1],
                                     absl::StrCat(name, " tensor ", state.tensors(t + 1).name())));
    layers.push_back({dims[l], dims[l + 1], std::move(w), std::move(b)});
    t += 2;
  }
  ASSIGN_OR_RETURN(Tower tower, Tower::FromParameters(shape, std::move(embeddings), std::move(layers)));
  return TowerModel{std::move(encoder), std::move(tower)};
}

v1::EncodedTable EntitiesToProto(const EncodedEntities& entities) {
  v1::EncodedTable proto;
  for (const std::string& id : entities.ids) proto.add_ids(id);
  proto.set_num_fields(entities.rows.num_fields());
  proto.set_num_numeric(entities.rows.num_numeric());
  proto.mutable_offsets()->Add(entities.rows.offsets().begin(), entities.rows.offsets().end());
  proto.mutable_indices()->Add(entities.rows.indices().begin(), entities.rows.indices().end());
  proto.mutable_numeric()->Add(entities.rows.numeric().begin(), entities.rows.numeric().end());
  return proto;
}

absl::StatusOr<EncodedEntities> EntitiesFromProto(const v1::EncodedTable& proto,
                                                  const FeatureEncoder& encoder,
                                                  absl::string_view name) {
  if (proto.num_fields() != encoder.num_fields() ||
      proto.num_numeric() != encoder.num_numeric()) {
    return absl::DataLossError(absl::StrCat(name, ": layout does not match the schema"));
  }
  absl::StatusOr<EncodedTable> rows = EncodedTable::FromParts(
      proto.num_fields(), proto.num_numeric(), {proto.offsets().begin(), proto.offsets().end()},
      {proto.indices().begin(), proto.indices().end()},
      {proto.numeric().begin(), proto.numeric().end()});
  if (!rows.ok()) return absl::DataLossError(absl::StrCat(name, ": ", rows.status().message()));
  if (rows->size() != proto.ids_size()) {
    return absl::DataLossError(absl::StrCat(name, ": ", proto.ids_size(), " ids for ",
                                            rows->size(), " rows"));
  }
  for (int r = 0; r < rows->size(); ++r) {
    for (int f = 0; f < rows->num_fields(); ++f) {
      for (int32_t index : rows->Field(r, f)) {
        if (index < 0 || index >= encoder.FieldRows(f)) {
          return absl::DataLossError(absl::StrCat(name, ": row ", r, " field ", f,
                                                  " index out of vocabulary"));
        }
      }
    }
  }
  // Ids are keys (the server maps them to rows): each one once, none empty.
  absl::flat_hash_set<absl::string_view> seen;
  seen.reserve(proto.ids_size());
  for (int r = 0; r < proto.ids_size(); ++r) {
    const std::string& id = proto.ids(r);
    if (id.empty()) return absl::DataLossError(absl::StrCat(name, ": row ", r, ": empty id"));
    if (!seen.insert(id).second) {
      return absl::DataLossError(absl::StrCat(name, ": row ", r, ": duplicate id ", Quoted(id)));
    }
  }
  return EncodedEntities{{proto.ids().begin(), proto.ids().end()}, *std::move(rows)};
}

// A binary bundle file; refused past protobuf's 2 GiB message limit.
absl::StatusOr<std::string> Serialize(const google::protobuf::Message& message,
                                      absl::string_view name) {
  const size_t size = message.ByteSizeLong();
  if (size > static_cast<size_t>(kMaxBundleFileBytes)) {
    return absl::FailedPreconditionError(
        absl::StrCat(name, ": ", size, " bytes, over the ", kMaxBundleFileBytes,
                     " bytes a protobuf message (one bundle file) can hold"));
  }
  std::string out;
  if (!message.SerializeToString(&out)) {
    return absl::InternalError(absl::StrCat(name, ": cannot serialize"));
  }
  return out;
}

// The bytes of file `name`, taken out of `contents` (freed when the caller is done).
std::string Take(absl::flat_hash_map<std::string, std::string>* contents, const char* name) {
  std::string bytes = std::move((*contents)[name]);
  contents->erase(name);
  return bytes;
}

// Frees a parsed message (Clear would keep its strings' and repeated fields' memory).
template <typename Message>
void Free(Message* message) {
  Message().Swap(message);
}

absl::Status ParseBinary(const std::string& bytes, absl::string_view name,
                         google::protobuf::Message* message) {
  if (!message->ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat(name, ": not a valid ", message->GetTypeName()));
  }
  return absl::OkStatus();
}

// Largest |a - b| over `rows` of the stored item vectors vs. a fresh forward pass.
float MaxDeviationFromItemTower(const Bundle& bundle, const std::vector<int>& rows) {
  EncodedTable sample = bundle.item.encoder.NewTable();
  for (int r : rows) sample.AppendRowFrom(bundle.items.rows, r);
  const int d = bundle.embedding_dim();
  std::vector<float> out(rows.size() * d);
  TowerActivations acts;
  bundle.item.tower.Forward(sample, &acts, out.data());
  float worst = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* stored = bundle.item_vectors.data() + static_cast<size_t>(rows[i]) * d;
    for (int k = 0; k < d; ++k) {
      const float diff = std::fabs(out[i * d + k] - stored[k]);
      worst = std::isfinite(diff) ? std::max(worst, diff) : INFINITY;
    }
  }
  return worst;
}

// `count` rows spread evenly over [0, n), the first and the last included.
std::vector<int> SpreadRows(int n, int count) {
  std::vector<int> rows;
  if (n <= count) {
    for (int r = 0; r < n; ++r) rows.push_back(r);
    return rows;
  }
  for (int i = 0; i < count; ++i) {
    rows.push_back(static_cast<int>(static_cast<int64_t>(i) * (n - 1) / (count - 1)));
  }
  return rows;
}

// Every stored item vector is finite and unit-length (what the index and the scores
// assume): one pass over the vectors, no forward pass.
absl::Status CheckItemVectors(const Bundle& bundle) {
  const size_t d = static_cast<size_t>(bundle.embedding_dim());
  for (size_t r = 0; r < bundle.items.ids.size(); ++r) {
    const float* v = bundle.item_vectors.data() + r * d;
    double squares = 0;
    for (size_t k = 0; k < d; ++k) squares += static_cast<double>(v[k]) * v[k];
    // float squares cannot overflow a double: a non-finite sum means a non-finite value.
    if (!std::isfinite(squares)) {
      return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": item ", Quoted(bundle.items.ids[r]),
                                              " (row ", r, "): the vector has a non-finite value"));
    }
    const double norm = std::sqrt(squares);
    if (!(std::fabs(norm - 1.0) <= kItemVectorNormTolerance)) {
      return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": item ", Quoted(bundle.items.ids[r]),
                                              " (row ", r, "): L2 norm ", norm,
                                              ", expected 1 (vectors are L2-normalised)"));
    }
  }
  return absl::OkStatus();
}

// Opens a bundle file read through its descriptor rather than into memory (index.faiss,
// embedding_tables.f32; listed as `file`) and checks its size and SHA-256 in a streaming
// pass; the file stays open for its reader (the FAISS reader, the mapping).
absl::StatusOr<std::shared_ptr<const BundleIndexFile>> CheckStreamedFile(const ScopedFd& dir_fd, const std::string& dir,
                                                                         const v1::BundleFile& file,
                                                                         const std::string& where) {
  if (file.bytes() < 0 || file.bytes() > kMaxBundleIndexBytes) {
    return absl::DataLossError(absl::StrCat(where, ": bytes ", file.bytes(), " out of range (0..",
                                            kMaxBundleIndexBytes, ")"));
  }
  const std::string path = absl::StrCat(dir, "/", file.name());
  ReadFileOptions options;
  options.regular_only = true;
  options.no_follow = true;
  options.max_bytes = static_cast<uint64_t>(file.bytes());
  auto index = std::make_shared<BundleIndexFile>();
  index->path = path;
  absl::StatusOr<ScopedFd> fd = OpenFileAt(dir_fd, dir, file.name(), options, &index->bytes);
  if (fd.status().code() == absl::StatusCode::kOutOfRange) {
    return absl::DataLossError(absl::StrCat(path, ": larger than the ", file.bytes(),
                                            " bytes the MANIFEST lists (corrupt or modified)"));
  }
  if (!fd.ok()) return fd.status();
  if (index->bytes != static_cast<uint64_t>(file.bytes())) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch (corrupt or modified): ", index->bytes,
                                            " bytes, the MANIFEST lists ", file.bytes()));
  }
  ASSIGN_OR_RETURN(std::string checksum, Sha256HexOfFile(fd->get(), index->bytes, path));
  if (checksum != file.sha256()) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch (corrupt or modified)"));
  }
  index->fd = *std::move(fd);
  return std::shared_ptr<const BundleIndexFile>(std::move(index));
}

// The format_version a MANIFEST declares (its top-level `format_version: N` line; 0 when
// it has none), read without parsing the rest: the MANIFEST of another format need not
// parse with this build's messages (a renamed enum value in its config), and its reader
// should hear about the version, not about a parse error.
int64_t DeclaredFormatVersion(absl::string_view manifest_text) {
  for (absl::string_view line : absl::StrSplit(manifest_text, '\n')) {
    if (!absl::ConsumePrefix(&line, "format_version:")) continue;
    int64_t version = 0;
    return absl::SimpleAtoi(line, &version) ? version : 0;
  }
  return 0;
}

absl::Status OtherFormatVersion(absl::string_view manifest_path, int64_t version) {
  return absl::FailedPreconditionError(absl::StrCat(
      manifest_path, ": format_version ", version, ", this build reads ", kBundleFormatVersion,
      ": train the model again with this build (twotower_train) to serve it"));
}

}  // namespace

absl::Status ValidateModelVersion(absl::string_view version) {
  const bool plain_chars = std::all_of(version.begin(), version.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
  if (version.empty() || version.size() > 128 || !plain_chars || version == "." ||
      version == "..") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model_version ", Quoted(version),
        ": must be 1..128 characters of [A-Za-z0-9._-], not \".\" or \"..\""));
  }
  return absl::OkStatus();
}

std::string NewModelVersion() {
  std::random_device device;
  const uint32_t suffix = device();
  return absl::StrCat(absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()), "-",
                      absl::StrFormat("%08x", suffix));
}

namespace {

// The manifest's fields and the data files of `bundle` written (each fsynced) into `tmp`,
// each listed in *manifest with its size and checksum.
absl::Status WriteDataFiles(const Bundle& bundle, const std::string& tmp, v1::BundleManifest* manifest) {
  manifest->set_format_version(kBundleFormatVersion);
  manifest->set_embedding_dim(bundle.embedding_dim());
  manifest->set_item_count(static_cast<int64_t>(bundle.items.ids.size()));
  manifest->set_user_vocab_size(bundle.user.encoder.ids().rows() - 1);
  manifest->clear_files();
  manifest->clear_index();  // only what the index writer adds

  v1::ItemEmbeddings embeddings;
  embeddings.set_dim(bundle.embedding_dim());
  for (const std::string& id : bundle.items.ids) embeddings.add_item_ids(id);
  embeddings.set_vectors(FloatBytes(bundle.item_vectors));

  // Serialised one at a time: the copies of big towers are not all held at once. The
  // towers in this order: their embedding tables follow each other in kBundleTablesFile.
  int64_t tables_end = 0;
  const std::pair<const char*, std::function<absl::StatusOr<std::string>()>> files[] = {
      {kUserTower, [&] { return Serialize(TowerToState(bundle.user, &tables_end), kUserTower); }},
      {kItemTower, [&] { return Serialize(TowerToState(bundle.item, &tables_end), kItemTower); }},
      {kUsers,
       [&] {
         v1::EncodedTable users = EntitiesToProto(bundle.users);
         bundle.seen_items.ToProto(users.mutable_seen());
         return Serialize(users, kUsers);
       }},
      {kItems, [&] { return Serialize(EntitiesToProto(bundle.items), kItems); }},
      {kItemEmbeddings, [&] { return Serialize(embeddings, kItemEmbeddings); }},
      {kBundleTablesFile, [&] { return TablesFileBytes(bundle); }},
  };
  for (const auto& [name, serialize] : files) {
    ASSIGN_OR_RETURN(const std::string contents, serialize());
    RETURN_IF_ERROR(WriteFileDurably(absl::StrCat(tmp, "/", name), contents));
    v1::BundleFile* file = manifest->add_files();
    file->set_name(name);
    file->set_bytes(static_cast<int64_t>(contents.size()));
    file->set_sha256(Sha256Hex(contents));
  }
  return absl::OkStatus();
}

// The index file written into `tmp` by `index`, listed in *manifest with its record.
absl::Status WriteIndexFile(const BundleIndexWriter& index, const std::string& tmp, v1::BundleManifest* manifest) {
  const std::string path = absl::StrCat(tmp, "/", kBundleIndexFile);
  RETURN_IF_ERROR(index.write(path));
  ReadFileOptions options;
  options.regular_only = true;
  options.no_follow = true;
  options.max_bytes = static_cast<uint64_t>(kMaxBundleIndexBytes);
  ASSIGN_OR_RETURN(const ScopedFd tmp_fd, OpenDirectory(tmp));
  uint64_t bytes = 0;
  ASSIGN_OR_RETURN(const ScopedFd fd, OpenFileAt(tmp_fd, tmp, kBundleIndexFile, options, &bytes));
  ASSIGN_OR_RETURN(const std::string checksum, Sha256HexOfFile(fd.get(), bytes, path));
  v1::BundleFile* file = manifest->add_files();
  file->set_name(kBundleIndexFile);
  file->set_bytes(static_cast<int64_t>(bytes));
  file->set_sha256(checksum);
  *manifest->mutable_index() = index.record;
  return absl::OkStatus();
}

// The complete bundle in `tmp`: data files, index, then the manifest (a directory with a
// manifest is complete), synced; then read back as a server would, so a bundle the server
// would refuse (e.g. a string protobuf cannot parse back, a non-finite vector) is never
// published as `dir`.
absl::Status WriteComplete(const Bundle& bundle, const std::string& tmp, const std::string& dir,
                           const BundleIndexWriter* index) {
  v1::BundleManifest manifest = bundle.manifest;
  RETURN_IF_ERROR(WriteDataFiles(bundle, tmp, &manifest));
  if (index != nullptr) RETURN_IF_ERROR(WriteIndexFile(*index, tmp, &manifest));
  RETURN_IF_ERROR(WriteFileDurably(absl::StrCat(tmp, "/", kManifest), ToTextProto(manifest)));
  RETURN_IF_ERROR(SyncDirectory(tmp));
  absl::StatusOr<Bundle> back = ReadBundle(tmp);
  absl::Status read_back = back.status();
  if (back.ok() && index != nullptr && index->check) read_back = index->check(*back);
  if (!read_back.ok()) {
    return absl::Status(
        read_back.code(),
        absl::StrCat("not publishing ", dir, ": the bundle written does not read back: ", read_back.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteBundle(const Bundle& bundle, const std::string& dir, const BundleIndexWriter* index) {
  RETURN_IF_ERROR(ValidateModelVersion(bundle.model_version()));
  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(dir, " already exists; not overwriting"));
  }
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  if (::mkdir(tmp.c_str(), 0755) != 0) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  absl::Status status = WriteComplete(bundle, tmp, dir, index);
  if (status.ok() && ::rename(tmp.c_str(), dir.c_str()) != 0) {
    status = absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", dir, ": ", std::strerror(errno)));
  }
  if (!status.ok()) {  // nothing half-written stays behind
    std::error_code ignored;
    std::filesystem::remove_all(tmp, ignored);
    return status;
  }
  return SyncDirectory(DirName(dir));
}

namespace {

// The MANIFEST of the bundle in `dir` (read through dir_fd): parsed only when its
// format_version line is this format's; its model version checked.
absl::Status ReadManifest(const ScopedFd& dir_fd, const std::string& dir, v1::BundleManifest* manifest) {
  const std::string manifest_path = absl::StrCat(dir, "/", kManifest);
  ReadFileOptions options;
  options.regular_only = true;
  options.no_follow = true;
  options.max_bytes = kMaxManifestBytes;
  absl::StatusOr<std::string> manifest_text = ReadFileAt(dir_fd, dir, kManifest, options);
  if (manifest_text.status().code() == absl::StatusCode::kOutOfRange) {
    return absl::DataLossError(manifest_text.status().message());
  }
  if (!manifest_text.ok()) return manifest_text.status();
  if (const int64_t declared = DeclaredFormatVersion(*manifest_text);
      declared != 0 && declared != kBundleFormatVersion) {
    return OtherFormatVersion(manifest_path, declared);
  }
  RETURN_IF_ERROR(ParseTextProto(*manifest_text, manifest_path, manifest));
  if (manifest->format_version() != kBundleFormatVersion) {
    return OtherFormatVersion(manifest_path, manifest->format_version());
  }
  if (absl::Status s = ValidateModelVersion(manifest->model_version()); !s.ok()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": ", s.message()));
  }
  return absl::OkStatus();
}

// The files a MANIFEST lists, checked: the small ones read, the tables file mapped, the
// index file opened.
struct ListedFiles {
  absl::flat_hash_map<std::string, std::string> contents;  // kDataFiles by name
  std::optional<MappedTables> tables;
  std::shared_ptr<const BundleIndexFile> index_file;
};

// Every file: one of the format's, listed once, a regular file of the declared size,
// checksum correct; every required file listed, the index file with its record.
absl::StatusOr<ListedFiles> ReadListedFiles(const ScopedFd& dir_fd, const std::string& dir,
                                            const v1::BundleManifest& manifest) {
  const std::string manifest_path = absl::StrCat(dir, "/", kManifest);
  ReadFileOptions options;
  options.regular_only = true;
  options.no_follow = true;
  ListedFiles files;
  for (int i = 0; i < manifest.files_size(); ++i) {
    const v1::BundleFile& file = manifest.files(i);
    const std::string where = absl::StrCat(manifest_path, ": files[", i, "] ", Quoted(file.name()));
    if (file.name() == kBundleTablesFile) {
      if (files.tables.has_value()) return absl::DataLossError(absl::StrCat(where, ": listed twice"));
      // Checksummed with read(), then mapped: the mapping's pages stay out of RSS until
      // a lookup touches them.
      ASSIGN_OR_RETURN(std::shared_ptr<const BundleIndexFile> checked, CheckStreamedFile(dir_fd, dir, file, where));
      ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> mapped,
                       MappedFile::Map(checked->fd.get(), checked->bytes, checked->path));
      files.tables = MappedTables{checked->path, std::move(mapped), 0};
      continue;
    }
    if (file.name() == kBundleIndexFile) {
      if (files.index_file != nullptr) return absl::DataLossError(absl::StrCat(where, ": listed twice"));
      ASSIGN_OR_RETURN(files.index_file, CheckStreamedFile(dir_fd, dir, file, where));
      continue;
    }
    if (std::find_if(std::begin(kDataFiles), std::end(kDataFiles), [&](const char* name) {
          return file.name() == name;
        }) == std::end(kDataFiles)) {
      return absl::DataLossError(absl::StrCat(where, ": not a file of this format (", absl::StrJoin(kDataFiles, ", "),
                                              ", ", kBundleTablesFile, ", optionally ", kBundleIndexFile, ")"));
    }
    if (files.contents.contains(file.name())) return absl::DataLossError(absl::StrCat(where, ": listed twice"));
    if (file.bytes() < 0 || file.bytes() > kMaxBundleFileBytes) {
      return absl::DataLossError(
          absl::StrCat(where, ": bytes ", file.bytes(), " out of range (0..", kMaxBundleFileBytes, ")"));
    }
    options.max_bytes = static_cast<uint64_t>(file.bytes());
    absl::StatusOr<std::string> data = ReadFileAt(dir_fd, dir, file.name(), options);
    if (data.status().code() == absl::StatusCode::kOutOfRange) {
      return absl::DataLossError(absl::StrCat(dir, "/", file.name(), ": larger than the ", file.bytes(),
                                              " bytes the MANIFEST lists (corrupt or modified)"));
    }
    if (!data.ok()) return data.status();
    if (static_cast<int64_t>(data->size()) != file.bytes() || Sha256Hex(*data) != file.sha256()) {
      return absl::DataLossError(absl::StrCat(dir, "/", file.name(), ": checksum mismatch (corrupt or modified)"));
    }
    files.contents[file.name()] = *std::move(data);
  }
  for (const char* required : kDataFiles) {
    if (!files.contents.contains(required)) {
      return absl::DataLossError(absl::StrCat(manifest_path, ": does not list ", required));
    }
  }
  if (!files.tables.has_value()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": does not list ", kBundleTablesFile));
  }
  // An index file and its record come together.
  if (manifest.has_index() != (files.index_file != nullptr)) {
    return absl::DataLossError(absl::StrCat(
        manifest_path, manifest.has_index() ? absl::StrCat(": has an index record but does not list ", kBundleIndexFile)
                                            : absl::StrCat(": lists ", kBundleIndexFile, " without an index record")));
  }
  if (manifest.has_index() && manifest.index().factory().empty()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": index.factory is empty"));
  }
  return files;
}

// The towers, entities, seen sets and item vectors of *bundle from the checked files.
// Parse-then-free: each file's bytes go as soon as they are parsed (Take), each parsed
// message as soon as it is converted (Free), so the load never holds a model three times
// over (bytes, messages, Bundle).
absl::Status DecodeModel(ListedFiles& files, Bundle* bundle) {
  const v1::BundleManifest& manifest = bundle->manifest;
  const v1::TrainerConfig& config = manifest.config();
  MappedTables& tables = *files.tables;
  v1::TowerState user_state, item_state;
  v1::EncodedTable users_proto, items_proto;
  v1::ItemEmbeddings embeddings;
  RETURN_IF_ERROR(ParseBinary(Take(&files.contents, kUserTower), kUserTower, &user_state));
  RETURN_IF_ERROR(ParseBinary(Take(&files.contents, kItemTower), kItemTower, &item_state));
  RETURN_IF_ERROR(ParseBinary(Take(&files.contents, kUsers), kUsers, &users_proto));
  RETURN_IF_ERROR(ParseBinary(Take(&files.contents, kItems), kItems, &items_proto));
  RETURN_IF_ERROR(ParseBinary(Take(&files.contents, kItemEmbeddings), kItemEmbeddings, &embeddings));

  ASSIGN_OR_RETURN(bundle->user,
                   TowerFromState(config.user_tower(), config.data().users(), user_state, kUserTower, &tables));
  ASSIGN_OR_RETURN(bundle->item,
                   TowerFromState(config.item_tower(), config.data().items(), item_state, kItemTower, &tables));
  Free(&user_state);
  Free(&item_state);
  if (static_cast<uint64_t>(tables.end) != tables.file->size()) {
    return absl::DataLossError(
        absl::StrCat(tables.path, ": ", tables.file->size(), " bytes, the towers' tables end at ", tables.end));
  }
  if (bundle->user.tower.output_dim() != bundle->item.tower.output_dim()) {
    return absl::DataLossError("user and item towers have different output widths");
  }
  ASSIGN_OR_RETURN(EncodedEntities users, EntitiesFromProto(users_proto, bundle->user.encoder, kUsers));
  ASSIGN_OR_RETURN(EncodedEntities items, EntitiesFromProto(items_proto, bundle->item.encoder, kItems));
  if (items_proto.has_seen()) {
    return absl::DataLossError(absl::StrCat(kItems, ": has seen sets, which belong to ", kUsers));
  }
  ASSIGN_OR_RETURN(bundle->seen_items,
                   SeenItems::FromProto(users_proto.mutable_seen(), static_cast<int64_t>(users.ids.size()),
                                        static_cast<int64_t>(items.ids.size()), kUsers));
  bundle->users = std::move(users);
  bundle->items = std::move(items);
  Free(&users_proto);
  Free(&items_proto);

  const int d = bundle->embedding_dim();
  if (embeddings.dim() != d || manifest.embedding_dim() != d) {
    return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": dim ", embeddings.dim(), " but the towers output ", d));
  }
  if (embeddings.item_ids_size() != static_cast<int>(bundle->items.ids.size()) ||
      manifest.item_count() != embeddings.item_ids_size()) {
    return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": item count mismatch"));
  }
  for (int i = 0; i < embeddings.item_ids_size(); ++i) {
    if (embeddings.item_ids(i) != bundle->items.ids[i]) {
      return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": item ids differ from ", kItems));
    }
  }
  ASSIGN_OR_RETURN(
      bundle->item_vectors,
      FloatsFromBytes(embeddings.vectors(), static_cast<size_t>(embeddings.item_ids_size()) * d, kItemEmbeddings));
  Free(&embeddings);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Bundle> ReadBundle(const std::string& dir) {
  Bundle bundle;
  // Every file is read through this one open directory (a symlink to it is fine), by a
  // plain name, without following a symlink, and only if it is a regular file.
  ASSIGN_OR_RETURN(ScopedFd dir_fd, OpenDirectory(dir));
  RETURN_IF_ERROR(ReadManifest(dir_fd, dir, &bundle.manifest));
  ASSIGN_OR_RETURN(ListedFiles files, ReadListedFiles(dir_fd, dir, bundle.manifest));
  bundle.index_file = files.index_file;
  RETURN_IF_ERROR(DecodeModel(files, &bundle));

  // Every stored vector is finite and unit-length: the index serves all of them, and one
  // NaN or 1e30 would top (or scramble) every answer.
  RETURN_IF_ERROR(CheckItemVectors(bundle));
  // Sanity forward pass on a sample spread over the catalogue: the stored item vectors must
  // be what this item tower computes (so an index is never paired with another model's
  // tower).
  const float deviation =
      MaxDeviationFromItemTower(bundle, SpreadRows(static_cast<int>(bundle.items.ids.size()), kSanitySample));
  if (!(deviation < 1e-3f)) {
    return absl::DataLossError(
        absl::StrCat("sanity forward pass: stored item vectors differ from the item tower by ", deviation));
  }
  return bundle;
}

absl::StatusOr<std::vector<float>> ReadItemVectors(const std::string& dir, const v1::BundleManifest& manifest) {
  if (dir.empty()) return absl::FailedPreconditionError("no bundle directory to re-read the item vectors from");
  const auto listed = std::find_if(manifest.files().begin(), manifest.files().end(),
                                   [](const v1::BundleFile& file) { return file.name() == kItemEmbeddings; });
  if (listed == manifest.files().end() || listed->bytes() < 0 || listed->bytes() > kMaxBundleFileBytes) {
    return absl::FailedPreconditionError(absl::StrCat("the MANIFEST loaded does not list ", kItemEmbeddings));
  }
  ASSIGN_OR_RETURN(ScopedFd dir_fd, OpenDirectory(dir));
  ReadFileOptions options;
  options.regular_only = true;
  options.no_follow = true;
  options.max_bytes = static_cast<uint64_t>(listed->bytes());
  absl::StatusOr<std::string> data = ReadFileAt(dir_fd, dir, kItemEmbeddings, options);
  if (!data.ok() && data.status().code() != absl::StatusCode::kOutOfRange) return data.status();
  if (!data.ok() || static_cast<int64_t>(data->size()) != listed->bytes() || Sha256Hex(*data) != listed->sha256()) {
    return absl::DataLossError(absl::StrCat(dir, "/", kItemEmbeddings, ": not the file that was loaded (checksum)"));
  }
  v1::ItemEmbeddings embeddings;
  RETURN_IF_ERROR(ParseBinary(*data, kItemEmbeddings, &embeddings));
  std::string().swap(*data);
  if (embeddings.dim() < 1 || embeddings.dim() != manifest.embedding_dim() ||
      embeddings.item_ids_size() != manifest.item_count()) {
    return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": dim or item count differ from the MANIFEST"));
  }
  return FloatsFromBytes(embeddings.vectors(), static_cast<size_t>(embeddings.item_ids_size()) * embeddings.dim(),
                         kItemEmbeddings);
}

absl::Status UpdateSymlink(const std::string& target, const std::string& link) {
  const std::string tmp = absl::StrCat(link, ".tmp-", ::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0 || ::rename(tmp.c_str(), link.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot point ", link, " at ", target, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace twotower
