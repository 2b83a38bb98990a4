// Feature encoding: vocabularies with an OOV row, numeric standardisation, state round
// trip, and request feature validation.
#include "features/feature_encoder.h"
#include "gtest/gtest.h"

namespace twotower {
namespace {

std::vector<v1::FeatureSpec> Schema() {
  std::vector<v1::FeatureSpec> schema(3);
  schema[0].set_name("genre");
  schema[0].set_kind(v1::FeatureSpec::MULTI_HOT);
  schema[0].set_embedding_dim(4);
  schema[0].set_min_count(1);
  schema[1].set_name("age");
  schema[1].set_kind(v1::FeatureSpec::NUMERIC);
  schema[2].set_name("country");
  schema[2].set_kind(v1::FeatureSpec::CATEGORICAL);
  schema[2].set_embedding_dim(2);
  schema[2].set_min_count(2);  // "fr" appears once -> OOV
  return schema;
}

RawValue Tokens(std::vector<std::string> tokens) { return RawValue{std::move(tokens), 0, false}; }
RawValue Number(double x) { return RawValue{{}, x, true}; }

FeatureTable Table() {
  FeatureTable t;
  t.ids = {"a", "b", "c"};
  t.values = {{Tokens({"x", "y"}), Number(20), Tokens({"de"})},
              {Tokens({"y"}), Number(40), Tokens({"de"})},
              {Tokens({}), RawValue{}, Tokens({"fr"})}};
  return t;
}

TEST(FeatureEncoderTest, FitsVocabulariesAndStatistics) {
  absl::StatusOr<FeatureEncoder> enc = FeatureEncoder::Fit(Schema(), Table(), {{"a", 3}, {"b", 1}}, 2);
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->num_fields(), 3);  // id, genre, country
  EXPECT_EQ(enc->num_numeric(), 1);
  EXPECT_EQ(enc->FieldRows(0), 2);  // OOV + "a" ("b" below id_min_count)
  EXPECT_EQ(enc->FieldRows(1), 3);  // OOV + x + y
  EXPECT_EQ(enc->FieldRows(2), 2);  // OOV + de

  EncodedTable rows = enc->NewTable();
  const FeatureTable t = Table();
  for (size_t r = 0; r < 3; ++r) enc->Encode(t.ids[r], &t.values[r], &rows);
  enc->Encode("never-seen", nullptr, &rows);
  EXPECT_EQ(rows.Id(0), 1);
  EXPECT_EQ(rows.Id(1), Vocabulary::kOov);
  EXPECT_EQ(rows.Field(0, 1).size(), 2u);
  EXPECT_EQ(rows.Field(2, 1)[0], Vocabulary::kOov);  // empty multi-hot -> OOV row
  EXPECT_EQ(rows.Field(2, 2)[0], Vocabulary::kOov);  // rare token -> OOV row
  EXPECT_FLOAT_EQ(rows.Numeric(0)[0], -1.0f);  // (20 - 30) / 10
  EXPECT_FLOAT_EQ(rows.Numeric(1)[0], 1.0f);
  EXPECT_FLOAT_EQ(rows.Numeric(2)[0], 0.0f);   // missing -> mean
  EXPECT_EQ(rows.Id(3), Vocabulary::kOov);
}

TEST(FeatureEncoderTest, StateRoundTripEncodesIdentically) {
  absl::StatusOr<FeatureEncoder> enc = FeatureEncoder::Fit(Schema(), Table(), {{"a", 1}}, 1);
  ASSERT_TRUE(enc.ok());
  v1::TowerState state;
  enc->ToState(&state);
  absl::StatusOr<FeatureEncoder> restored = FeatureEncoder::FromState(Schema(), state);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EncodedTable a = enc->NewTable(), b = restored->NewTable();
  const FeatureTable t = Table();
  for (size_t r = 0; r < 3; ++r) {
    enc->Encode(t.ids[r], &t.values[r], &a);
    restored->Encode(t.ids[r], &t.values[r], &b);
  }
  EXPECT_EQ(a.indices(), b.indices());
  EXPECT_EQ(a.numeric(), b.numeric());
  std::vector<v1::FeatureSpec> renamed = Schema();
  renamed[1].set_name("years");
  EXPECT_FALSE(FeatureEncoder::FromState(renamed, state).ok());
}

TEST(FeatureEncoderTest, RequestFeaturesAreTypeChecked) {
  absl::StatusOr<FeatureEncoder> enc = FeatureEncoder::Fit(Schema(), Table(), {}, 1);
  ASSERT_TRUE(enc.ok());
  google::protobuf::Map<std::string, v1::FeatureValue> features;
  features["genre"].mutable_multi_hot()->add_values("x");
  features["age"].set_numeric(30);
  features["country"].set_categorical("de");
  absl::StatusOr<std::vector<RawValue>> raw = enc->FromRequest(features);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ((*raw)[0].tokens, std::vector<std::string>{"x"});
  EXPECT_TRUE((*raw)[1].has_number);

  features["age"].set_categorical("thirty");
  EXPECT_NE(enc->FromRequest(features).status().message().find("\"age\" expects a numeric"),
            std::string::npos);
  features["age"].set_numeric(30);
  features["height"].set_numeric(1.8);
  EXPECT_NE(enc->FromRequest(features).status().message().find("unknown feature \"height\""),
            std::string::npos);
  features.erase("height");
  features["country"].mutable_multi_hot()->add_values("de");
  EXPECT_FALSE(enc->FromRequest(features).ok());  // multi-hot for a categorical feature
}

TEST(EncodedTableTest, AppendRowFromWithoutDropsOneToken) {
  EncodedTable all(3, 1);
  all.AppendRow({{4}, {1, 2, 3}, {7}}, std::vector<float>{0.5f});
  all.AppendRow({{5}, {2}, {8}}, std::vector<float>{1.5f});
  EncodedTable out(3, 1);
  out.AppendRowFromWithout(all, 0, 1, 2);
  out.AppendRowFromWithout(all, 1, 1, 2);  // the only token: the field becomes OOV
  out.AppendRowFromWithout(all, 1, 1, 9);  // not there: unchanged
  ASSERT_EQ(out.size(), 3);
  EXPECT_EQ(std::vector<int32_t>(out.Field(0, 1).begin(), out.Field(0, 1).end()), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(std::vector<int32_t>(out.Field(1, 1).begin(), out.Field(1, 1).end()), (std::vector<int32_t>{0}));
  EXPECT_EQ(std::vector<int32_t>(out.Field(2, 1).begin(), out.Field(2, 1).end()), (std::vector<int32_t>{2}));
  EXPECT_EQ(out.Id(0), 4);
  EXPECT_EQ(out.Field(0, 2)[0], 7);
  EXPECT_FLOAT_EQ(out.Numeric(1)[0], 1.5f);
}

}  // namespace
}  // namespace twotower
