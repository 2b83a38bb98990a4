// libFuzzer target: the feature state and encoded rows a bundle carries (untrusted input:
// a bundle file). Restores a FeatureEncoder from fuzzed TowerState bytes and encodes a
// fuzzed request with it; restores an EncodedTable from fuzzed parts.
#include <cstddef>
#include <cstdint>
#include <string>

#include "features/encoded_table.h"
#include "features/feature_encoder.h"
#include "twotower/v1/bundle.pb.h"
#include "twotower/v1/retrieval.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t split = data[0] % size;
  const std::string state_bytes(reinterpret_cast<const char*>(data + 1), split > 0 ? split - 1 : 0);
  const std::string rest(reinterpret_cast<const char*>(data + split), size - split);
  // The schema of a typical user tower; the state must match it or be refused.
  std::vector<twotower::v1::FeatureSpec> schema(3);
  schema[0].set_name("segment");
  schema[0].set_kind(twotower::v1::FeatureSpec::KIND_CATEGORICAL);
  schema[0].set_embedding_dim(4);
  schema[1].set_name("age");
  schema[1].set_kind(twotower::v1::FeatureSpec::KIND_BUCKETIZED);
  schema[1].set_embedding_dim(4);
  schema[1].set_quantile_buckets(4);
  schema[2].set_name("price");
  schema[2].set_kind(twotower::v1::FeatureSpec::KIND_NUMERIC);
  schema[2].set_derive(twotower::v1::FeatureSpec::DERIVE_YEAR);
  twotower::v1::TowerState state;
  if (state.ParseFromString(state_bytes)) {
    absl::StatusOr<twotower::FeatureEncoder> encoder = twotower::FeatureEncoder::FromState(schema, state);
    twotower::v1::RetrieveRequest request;
    if (encoder.ok() && request.ParseFromString(rest)) {
      absl::StatusOr<std::vector<twotower::RawValue>> values = encoder->FromRequest(request.user_features());
      if (values.ok()) {
        twotower::EncodedTable table = encoder->NewTable();
        encoder->Encode(request.user_id(), &*values, &table);
        for (int f = 0; f < table.num_fields(); ++f) {
          for (const int32_t row : table.Field(0, f)) {
            if (row < 0 || row >= encoder->FieldRows(f)) __builtin_trap();  // in range, always
          }
        }
      }
    }
  }
  twotower::v1::EncodedTable parts;
  if (parts.ParseFromString(rest)) {
    (void)twotower::EncodedTable::FromParts(
        parts.num_fields(), parts.num_numeric(), {parts.offsets().begin(), parts.offsets().end()},
        {parts.indices().begin(), parts.indices().end()}, {parts.numeric().begin(), parts.numeric().end()});
  }
  return 0;
}
