// Feature encoding: vocabularies with an OOV row, numeric standardisation, state round
// trip, and request feature validation.
#include "features/feature_encoder.h"
#include "features/transforms.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

std::vector<v1::FeatureSpec> Schema() {
  std::vector<v1::FeatureSpec> schema(3);
  schema[0].set_name("genre");
  schema[0].set_kind(v1::FeatureSpec::KIND_MULTI_HOT);
  schema[0].set_embedding_dim(4);
  schema[0].set_min_count(1);
  schema[1].set_name("age");
  schema[1].set_kind(v1::FeatureSpec::KIND_NUMERIC);
  schema[2].set_name("country");
  schema[2].set_kind(v1::FeatureSpec::KIND_CATEGORICAL);
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
  ASSERT_THAT(enc, IsOk());
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
  ASSERT_THAT(enc, IsOk());
  v1::TowerState state;
  enc->ToState(&state);
  absl::StatusOr<FeatureEncoder> restored = FeatureEncoder::FromState(Schema(), state);
  ASSERT_THAT(restored, IsOk());
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
  ASSERT_THAT(enc, IsOk());
  google::protobuf::Map<std::string, v1::FeatureValue> features;
  features["genre"].mutable_multi_hot()->add_values("x");
  features["age"].set_numeric(30);
  features["country"].set_categorical("de");
  absl::StatusOr<std::vector<RawValue>> raw = enc->FromRequest(features);
  ASSERT_THAT(raw, IsOk());
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

TEST(TransformsTest, DeriveHashParseClipBucket) {
  v1::FeatureSpec spec;
  spec.set_derive(v1::FeatureSpec::DERIVE_PREFIX);
  EXPECT_EQ(DeriveValue(spec, "55105"), "5");
  spec.set_prefix_length(3);
  EXPECT_EQ(DeriveValue(spec, "55105"), "551");
  EXPECT_EQ(DeriveValue(spec, ""), "");
  // A prefix never cuts a UTF-8 character (the token is a vocabulary entry, a protobuf
  // string): fewer bytes, or the whole first character.
  EXPECT_EQ(DeriveValue(spec, "S\xC3\xA3o Paulo"), "S\xC3\xA3");  // 3 bytes: "Sa~"
  EXPECT_EQ(DeriveValue(spec, "Z\xC3\xBCrich"), "Z\xC3\xBC");
  EXPECT_EQ(DeriveValue(spec, "ab\xC3\xA9"), "ab");               // not "ab\xC3"
  spec.set_prefix_length(1);
  EXPECT_EQ(DeriveValue(spec, "\xC3\x89vry"), "\xC3\x89");         // the first character whole
  spec.set_derive(v1::FeatureSpec::DERIVE_YEAR);
  EXPECT_EQ(DeriveValue(spec, "01-Jan-1995"), "1995");
  EXPECT_EQ(DeriveValue(spec, "Toy Story (1995)"), "1995");
  EXPECT_EQ(DeriveValue(spec, "2001: A Space Odyssey (1968)"), "1968");
  EXPECT_EQ(DeriveValue(spec, "no year 12345"), "");
  // FNV-1a 64 reference values.
  EXPECT_EQ(StableHash(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(StableHash("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(ParseNumber(" 2.5 "), 2.5);
  EXPECT_FALSE(ParseNumber("nan").has_value());
  EXPECT_FALSE(ParseNumber("inf").has_value());
  EXPECT_FALSE(ParseNumber("twelve").has_value());
  EXPECT_FALSE(ParseNumber("").has_value());
  spec.set_clip_min(0);
  spec.set_clip_max(10);
  EXPECT_EQ(Clip(spec, -3), 0);
  EXPECT_EQ(Clip(spec, 30), 10);
  const std::vector<double> ages = {18, 25, 35, 45, 50, 56};
  EXPECT_EQ(BucketOf(ages, 7), 1);
  EXPECT_EQ(BucketOf(ages, 18), 2);
  EXPECT_EQ(BucketOf(ages, 24.9), 2);
  EXPECT_EQ(BucketOf(ages, 99), 7);
  EXPECT_EQ(QuantileBoundaries({1, 2, 3, 4, 5, 6, 7, 8}, 4), (std::vector<double>{3, 5, 7}));
  EXPECT_EQ(QuantileBoundaries({1, 1, 1, 1}, 4), (std::vector<double>{1}));
  EXPECT_TRUE(QuantileBoundaries({}, 4).empty());
  // Very long values are just values.
  const std::string long_value(200000, 'z');
  spec.set_derive(v1::FeatureSpec::DERIVE_PREFIX);
  spec.set_prefix_length(5);
  EXPECT_EQ(DeriveValue(spec, long_value), "zzzzz");
  spec.set_derive(v1::FeatureSpec::DERIVE_YEAR);
  EXPECT_EQ(DeriveValue(spec, long_value + " (1999)"), "1999");
  EXPECT_NE(StableHash(long_value), StableHash(long_value + "z"));
  EXPECT_FALSE(ParseNumber(long_value).has_value());
}

std::vector<v1::FeatureSpec> TransformSchema() {
  std::vector<v1::FeatureSpec> schema(5);
  schema[0].set_name("age");  // fixed buckets
  schema[0].set_kind(v1::FeatureSpec::KIND_BUCKETIZED);
  schema[0].set_embedding_dim(4);
  for (double b : {18, 25, 35}) schema[0].add_boundaries(b);
  schema[1].set_name("zip");  // hashed prefix
  schema[1].set_kind(v1::FeatureSpec::KIND_CATEGORICAL);
  schema[1].set_embedding_dim(4);
  schema[1].set_hash_buckets(10);
  schema[1].set_derive(v1::FeatureSpec::DERIVE_PREFIX);
  schema[2].set_name("year");  // derived numeric with a default
  schema[2].set_kind(v1::FeatureSpec::KIND_NUMERIC);
  schema[2].set_derive(v1::FeatureSpec::DERIVE_YEAR);
  schema[2].set_transform(v1::FeatureSpec::TRANSFORM_IDENTITY);
  schema[2].set_default_value(1990);
  schema[3].set_name("tag");  // capped vocabulary, most frequent first
  schema[3].set_kind(v1::FeatureSpec::KIND_MULTI_HOT);
  schema[3].set_embedding_dim(4);
  schema[3].set_max_vocabulary_size(2);
  schema[3].set_min_count(1);
  schema[4].set_name("score");  // quantile buckets
  schema[4].set_kind(v1::FeatureSpec::KIND_BUCKETIZED);
  schema[4].set_embedding_dim(4);
  schema[4].set_quantile_buckets(2);
  return schema;
}

FeatureTable TransformTable() {
  FeatureTable t;
  t.ids = {"a", "b", "c"};
  t.values = {{Number(20), Tokens({"55105"}), Tokens({"01-Jan-1995"}), Tokens({"x", "y"}), Number(1)},
              {Number(40), Tokens({"10001"}), Tokens({"Toy Story (1977)"}), Tokens({"x", "z"}), Number(5)},
              {RawValue{}, Tokens({}), Tokens({}), Tokens({"x", "y", "w"}), Number(9)}};
  return t;
}

TEST(FeatureEncoderTest, DeclaredTransforms) {
  absl::StatusOr<FeatureEncoder> enc = FeatureEncoder::Fit(TransformSchema(), TransformTable(), {}, 1);
  ASSERT_THAT(enc, IsOk());
  EXPECT_EQ(enc->FieldRows(1), 5);   // age: OOV + 4 buckets
  EXPECT_EQ(enc->FieldRows(2), 11);  // zip: OOV + 10 hash buckets
  EXPECT_EQ(enc->FieldRows(3), 3);   // tag: OOV + the 2 most frequent (x: 3, y: 2)
  const StringTable& tokens = enc->FieldVocabulary(3).tokens();
  EXPECT_EQ(std::vector<std::string>(tokens.begin(), tokens.end()), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(enc->FieldRows(4), 3);   // score: OOV + 2 quantile buckets
  EncodedTable rows = enc->NewTable();
  const FeatureTable t = TransformTable();
  for (size_t r = 0; r < 3; ++r) enc->Encode(t.ids[r], &t.values[r], &rows);
  EXPECT_EQ(rows.Field(0, 1)[0], 2);  // 20 in [18, 25)
  EXPECT_EQ(rows.Field(1, 1)[0], 4);  // 40 >= 35
  EXPECT_EQ(rows.Field(2, 1)[0], 0);  // missing -> OOV
  EXPECT_EQ(rows.Field(0, 2)[0], 1 + static_cast<int32_t>(StableHash("5") % 10));
  EXPECT_EQ(rows.Field(0, 2)[0], enc->TokenRow(2, "59999"));  // same prefix, same row
  EXPECT_FLOAT_EQ(rows.Numeric(0)[0], 1995);
  EXPECT_FLOAT_EQ(rows.Numeric(1)[0], 1977);
  EXPECT_FLOAT_EQ(rows.Numeric(2)[0], 1990);  // missing -> the declared default
  EXPECT_EQ(rows.Field(2, 3).size(), 3u);
  EXPECT_EQ(rows.Field(2, 3)[2], 0);  // "w" beyond the cap -> OOV
  EXPECT_LT(rows.Field(0, 4)[0], rows.Field(2, 4)[0]);  // 1 and 9 in different quantiles

  // Requests: the same raw values through FromRequest encode identically.
  google::protobuf::Map<std::string, v1::FeatureValue> request;
  request["age"].set_numeric(20);
  request["zip"].set_categorical("55105");
  request["year"].set_categorical("01-Jan-1995");  // a derived number may come as its string
  request["tag"].mutable_multi_hot()->add_values("x");
  request["tag"].mutable_multi_hot()->add_values("y");
  request["score"].set_numeric(1);
  absl::StatusOr<std::vector<RawValue>> raw = enc->FromRequest(request);
  ASSERT_THAT(raw, IsOk());
  EncodedTable served = enc->NewTable();
  enc->Encode("a", &*raw, &served);
  EXPECT_EQ(std::vector<int32_t>(served.indices().begin(), served.indices().end()),
            std::vector<int32_t>(rows.indices().begin(), rows.indices().begin() + served.indices().size()));
  EXPECT_EQ(served.Numeric(0)[0], rows.Numeric(0)[0]);
  request["age"].set_categorical("twenty");  // not derived: must be a number
  EXPECT_FALSE(enc->FromRequest(request).ok());

  // Fitted boundaries survive the bundle state.
  v1::TowerState state;
  enc->ToState(&state);
  absl::StatusOr<FeatureEncoder> restored = FeatureEncoder::FromState(TransformSchema(), state);
  ASSERT_THAT(restored, IsOk());
  EncodedTable again = restored->NewTable();
  for (size_t r = 0; r < 3; ++r) restored->Encode(t.ids[r], &t.values[r], &again);
  EXPECT_EQ(again.indices(), rows.indices());
  EXPECT_EQ(again.numeric(), rows.numeric());
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

TEST(EncodedTableTest, AppendRowFromWithoutOovTokenRemovesNothing) {
  // Row 0 is shared by every unknown token: leaving "the positive" out as 0 would strip
  // every other unknown item of the history too.
  EncodedTable all(2, 0);
  all.AppendRow({{4}, {0, 3, 0}}, {});
  EncodedTable out(2, 0);
  out.AppendRowFromWithout(all, 0, 1, 0);
  EXPECT_EQ(std::vector<int32_t>(out.Field(0, 1).begin(), out.Field(0, 1).end()), (std::vector<int32_t>{0, 3, 0}));
}

TEST(EncodedTableTest, AppendRowFromReplacingSwapsOneFieldAndSkipsOneToken) {
  EncodedTable all(3, 1);
  all.AppendRow({{4}, {1, 2, 3}, {7}}, std::vector<float>{0.5f});
  EncodedTable out(3, 1);
  const std::vector<int32_t> history = {5, 6, 9};
  out.AppendRowFromReplacing(all, 0, 1, history, 6);                        // 6 left out
  out.AppendRowFromReplacing(all, 0, 1, history, 0);                        // 0: nothing left out
  out.AppendRowFromReplacing(all, 0, 1, std::span<const int32_t>(), 6);     // empty: OOV
  out.AppendRowFromReplacing(all, 0, 1, std::vector<int32_t>{6}, 6);        // all skipped: OOV
  ASSERT_EQ(out.size(), 4);
  const auto field = [&](int row) {
    return std::vector<int32_t>(out.Field(row, 1).begin(), out.Field(row, 1).end());
  };
  EXPECT_EQ(field(0), (std::vector<int32_t>{5, 9}));
  EXPECT_EQ(field(1), (std::vector<int32_t>{5, 6, 9}));
  EXPECT_EQ(field(2), (std::vector<int32_t>{0}));
  EXPECT_EQ(field(3), (std::vector<int32_t>{0}));
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(out.Id(r), 4);
    EXPECT_EQ(out.Field(r, 2)[0], 7);
    EXPECT_FLOAT_EQ(out.Numeric(r)[0], 0.5f);
  }
}

TEST(EncodedTableTest, AppendRowFromWithoutWholeFieldEmptiesIt) {
  EncodedTable all(3, 0);
  all.AppendRow({{4}, {1, 2, 3}, {7}}, {});
  EncodedTable out(3, 0);
  out.AppendRowFromWithout(all, 0, 1, EncodedTable::kWholeField);
  ASSERT_EQ(out.size(), 1);
  EXPECT_EQ(std::vector<int32_t>(out.Field(0, 1).begin(), out.Field(0, 1).end()), (std::vector<int32_t>{0}));
  EXPECT_EQ(out.Id(0), 4);
  EXPECT_EQ(out.Field(0, 2)[0], 7);
}

}  // namespace
}  // namespace twotower
