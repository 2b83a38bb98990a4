#include "absl/strings/string_view.h"
#include "bundle/bundle.h"

#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "util/file.h"
#include "util/sha256.h"
#include "util/text_proto.h"

namespace twotower {

namespace {

constexpr char kManifest[] = "MANIFEST";
constexpr char kUserTower[] = "user_tower.pb";
constexpr char kItemTower[] = "item_tower.pb";
constexpr char kUsers[] = "users.pb";
constexpr char kItems[] = "items.pb";
constexpr char kItemEmbeddings[] = "item_embeddings.pb";

// Tensors are stored as raw float32; every supported platform is little-endian.
static_assert(std::endian::native == std::endian::little);

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

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

void AddTensor(v1::TowerState* state, std::string name, std::vector<int64_t> shape,
               const std::vector<float>& data) {
  v1::Tensor* t = state->add_tensors();
  t->set_name(std::move(name));
  for (int64_t s : shape) t->add_shape(s);
  t->set_data(FloatBytes(data));
}

v1::TowerState TowerToState(const TowerModel& model) {
  v1::TowerState state;
  model.encoder.ToState(&state);
  const Tower& tower = model.tower;
  for (size_t f = 0; f < tower.embeddings().size(); ++f) {
    const EmbeddingTable& e = tower.embeddings()[f];
    AddTensor(&state, absl::StrCat("embedding/", f), {e.rows, e.dim}, e.weights);
  }
  for (size_t l = 0; l < tower.layers().size(); ++l) {
    const DenseLayer& d = tower.layers()[l];
    AddTensor(&state, absl::StrCat("dense/", l, "/weights"), {d.out, d.in}, d.weights);
    AddTensor(&state, absl::StrCat("dense/", l, "/bias"), {d.out}, d.bias);
  }
  return state;
}

absl::StatusOr<TowerModel> TowerFromState(const v1::TowerSpec& spec,
                                          const v1::FeatureTableSpec& table_spec,
                                          const v1::TowerState& state, absl::string_view name) {
  const std::vector<v1::FeatureSpec> schema(table_spec.features().begin(),
                                            table_spec.features().end());
  absl::StatusOr<FeatureEncoder> encoder = FeatureEncoder::FromState(schema, state);
  if (!encoder.ok()) return encoder.status();
  const TowerShape shape = ShapeFor(spec, *encoder);
  const std::vector<int> dims = shape.layer_dims();
  const size_t expected = shape.fields.size() + 2 * (dims.size() - 1);
  if (static_cast<size_t>(state.tensors_size()) != expected) {
    return absl::DataLossError(absl::StrCat(name, ": ", state.tensors_size(),
                                            " tensors, expected ", expected));
  }
  int t = 0;
  std::vector<EmbeddingTable> embeddings;
  for (const TowerShape::Field& field : shape.fields) {
    absl::StatusOr<std::vector<float>> w = FloatsFromBytes(
        state.tensors(t).data(), static_cast<size_t>(field.rows) * field.dim,
        absl::StrCat(name, " tensor ", state.tensors(t).name()));
    if (!w.ok()) return w.status();
    embeddings.push_back({field.rows, field.dim, *std::move(w)});
    ++t;
  }
  std::vector<DenseLayer> layers;
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    absl::StatusOr<std::vector<float>> w =
        FloatsFromBytes(state.tensors(t).data(), static_cast<size_t>(dims[l]) * dims[l + 1],
                        absl::StrCat(name, " tensor ", state.tensors(t).name()));
    if (!w.ok()) return w.status();
    absl::StatusOr<std::vector<float>> b =
        FloatsFromBytes(state.tensors(t + 1).data(), dims[l + 1],
                        absl::StrCat(name, " tensor ", state.tensors(t + 1).name()));
    if (!b.ok()) return b.status();
    layers.push_back({dims[l], dims[l + 1], *std::move(w), *std::move(b)});
    t += 2;
  }
  absl::StatusOr<Tower> tower = Tower::FromParameters(shape, std::move(embeddings), std::move(layers));
  if (!tower.ok()) return tower.status();
  return TowerModel{*std::move(encoder), *std::move(tower)};
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
  return EncodedEntities{{proto.ids().begin(), proto.ids().end()}, *std::move(rows)};
}

absl::Status ParseBinary(const std::string& bytes, absl::string_view name,
                         google::protobuf::Message* message) {
  if (!message->ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat(name, ": not a valid ", message->GetTypeName()));
  }
  return absl::OkStatus();
}

// Largest |a - b| over the first rows of the stored item vectors vs. a fresh forward pass.
float MaxDeviationFromItemTower(const Bundle& bundle, int rows) {
  EncodedTable sample = bundle.item.encoder.NewTable();
  for (int r = 0; r < rows; ++r) sample.AppendRowFrom(bundle.items.rows, r);
  const int d = bundle.embedding_dim();
  std::vector<float> out(static_cast<size_t>(rows) * d);
  TowerActivations acts;
  bundle.item.tower.Forward(sample, &acts, out.data());
  float worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const float diff = std::fabs(out[i] - bundle.item_vectors[i]);
    worst = std::isfinite(diff) ? std::max(worst, diff) : INFINITY;
  }
  return worst;
}

}  // namespace

std::string NewModelVersion() {
  std::random_device device;
  const uint32_t suffix = device();
  return absl::StrCat(absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()), "-",
                      absl::StrFormat("%08x", suffix));
}

absl::Status WriteBundle(const Bundle& bundle, const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(dir, " already exists; not overwriting"));
  }
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  if (::mkdir(tmp.c_str(), 0755) != 0) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  v1::BundleManifest manifest = bundle.manifest;
  manifest.set_format_version(kBundleFormatVersion);
  manifest.set_embedding_dim(bundle.embedding_dim());
  manifest.set_item_count(static_cast<int64_t>(bundle.items.ids.size()));
  manifest.set_user_vocab_size(bundle.user.encoder.ids().rows() - 1);
  manifest.clear_files();

  v1::ItemEmbeddings embeddings;
  embeddings.set_dim(bundle.embedding_dim());
  for (const std::string& id : bundle.items.ids) embeddings.add_item_ids(id);
  embeddings.set_vectors(FloatBytes(bundle.item_vectors));

  const std::pair<const char*, std::string> files[] = {
      {kUserTower, TowerToState(bundle.user).SerializeAsString()},
      {kItemTower, TowerToState(bundle.item).SerializeAsString()},
      {kUsers, EntitiesToProto(bundle.users).SerializeAsString()},
      {kItems, EntitiesToProto(bundle.items).SerializeAsString()},
      {kItemEmbeddings, embeddings.SerializeAsString()},
  };
  for (const auto& [name, contents] : files) {
    if (absl::Status s = WriteFileDurably(absl::StrCat(tmp, "/", name), contents); !s.ok()) {
      return s;
    }
    v1::BundleFile* file = manifest.add_files();
    file->set_name(name);
    file->set_bytes(static_cast<int64_t>(contents.size()));
    file->set_sha256(Sha256Hex(contents));
  }
  // The manifest goes last: a directory with a manifest is complete.
  if (absl::Status s = WriteFileDurably(absl::StrCat(tmp, "/", kManifest), ToTextProto(manifest));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = SyncDirectory(tmp); !s.ok()) return s;
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", dir, ": ", std::strerror(errno)));
  }
  return SyncDirectory(DirName(dir));
}

absl::StatusOr<Bundle> ReadBundle(const std::string& dir) {
  Bundle bundle;
  const std::string manifest_path = absl::StrCat(dir, "/", kManifest);
  if (absl::Status s = ReadTextProtoFile(manifest_path, &bundle.manifest); !s.ok()) return s;
  const v1::BundleManifest& manifest = bundle.manifest;
  if (manifest.format_version() != kBundleFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(manifest_path, ": format_version ", manifest.format_version(),
                     ", this build reads ", kBundleFormatVersion));
  }
  if (manifest.model_version().empty()) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": model_version missing"));
  }

  // Every file: present, listed, checksum correct.
  absl::flat_hash_map<std::string, std::string> contents;
  for (const v1::BundleFile& file : manifest.files()) {
    absl::StatusOr<std::string> data = ReadFile(absl::StrCat(dir, "/", file.name()));
    if (!data.ok()) return data.status();
    if (static_cast<int64_t>(data->size()) != file.bytes() || Sha256Hex(*data) != file.sha256()) {
      return absl::DataLossError(
          absl::StrCat(dir, "/", file.name(), ": checksum mismatch (corrupt or modified)"));
    }
    contents[file.name()] = *std::move(data);
  }
  for (const char* required : {kUserTower, kItemTower, kUsers, kItems, kItemEmbeddings}) {
    if (!contents.contains(required)) {
      return absl::DataLossError(absl::StrCat(manifest_path, ": does not list ", required));
    }
  }

  const v1::TrainerConfig& config = manifest.config();
  v1::TowerState user_state, item_state;
  v1::EncodedTable users_proto, items_proto;
  v1::ItemEmbeddings embeddings;
  if (absl::Status s = ParseBinary(contents[kUserTower], kUserTower, &user_state); !s.ok()) return s;
  if (absl::Status s = ParseBinary(contents[kItemTower], kItemTower, &item_state); !s.ok()) return s;
  if (absl::Status s = ParseBinary(contents[kUsers], kUsers, &users_proto); !s.ok()) return s;
  if (absl::Status s = ParseBinary(contents[kItems], kItems, &items_proto); !s.ok()) return s;
  if (absl::Status s = ParseBinary(contents[kItemEmbeddings], kItemEmbeddings, &embeddings);
      !s.ok()) {
    return s;
  }

  absl::StatusOr<TowerModel> user =
      TowerFromState(config.user_tower(), config.data().users(), user_state, kUserTower);
  if (!user.ok()) return user.status();
  absl::StatusOr<TowerModel> item =
      TowerFromState(config.item_tower(), config.data().items(), item_state, kItemTower);
  if (!item.ok()) return item.status();
  bundle.user = *std::move(user);
  bundle.item = *std::move(item);
  if (bundle.user.tower.output_dim() != bundle.item.tower.output_dim()) {
    return absl::DataLossError("user and item towers have different output widths");
  }
  absl::StatusOr<EncodedEntities> users = EntitiesFromProto(users_proto, bundle.user.encoder, kUsers);
  if (!users.ok()) return users.status();
  absl::StatusOr<EncodedEntities> items = EntitiesFromProto(items_proto, bundle.item.encoder, kItems);
  if (!items.ok()) return items.status();
  bundle.users = *std::move(users);
  bundle.items = *std::move(items);

  const int d = bundle.embedding_dim();
  if (embeddings.dim() != d || manifest.embedding_dim() != d) {
    return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": dim ", embeddings.dim(),
                                            " but the towers output ", d));
  }
  if (embeddings.item_ids_size() != static_cast<int>(bundle.items.ids.size()) ||
      manifest.item_count() != embeddings.item_ids_size()) {
    return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": item count mismatch"));
  }
  for (int i = 0; i < embeddings.item_ids_size(); ++i) {
    if (embeddings.item_ids(i) != bundle.items.ids[i]) {
      return absl::DataLossError(absl::StrCat(kItemEmbeddings, ": item ids differ from ", kItems));
    }
  }
  absl::StatusOr<std::vector<float>> vectors = FloatsFromBytes(
      embeddings.vectors(), static_cast<size_t>(embeddings.item_ids_size()) * d, kItemEmbeddings);
  if (!vectors.ok()) return vectors.status();
  bundle.item_vectors = *std::move(vectors);

  // Sanity forward pass: the stored item vectors must be what this item tower computes
  // (so an index is never paired with another model's tower), and finite.
  const int sample = std::min<int>(16, static_cast<int>(bundle.items.ids.size()));
  const float deviation = MaxDeviationFromItemTower(bundle, sample);
  if (!(deviation < 1e-3f)) {
    return absl::DataLossError(absl::StrCat(
        "sanity forward pass: stored item vectors differ from the item tower by ", deviation));
  }
  return bundle;
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
