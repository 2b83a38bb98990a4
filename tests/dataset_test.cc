// Table reading (CSV/TSV, header or not, quoting), feature tables, interactions, and the
// synthetic generator.
#include "absl/strings/str_cat.h"
#include "dataset/feature_table.h"
#include "dataset/interactions.h"
#include "dataset/synthetic.h"
#include "dataset/table_reader.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "util/file.h"
#include "util/text_proto.h"

using ::twotower::testing::IsOk;

namespace twotower {
namespace {

using testing::ScopedTempDir;
using testing::WriteText;

TEST(TableReaderTest, CsvWithQuotesHeaderCrlfAndBom) {
  absl::StatusOr<Table> t = ParseTable(
      "\xEF\xBB\xBFid,title,tags\r\n1,\"Hello, world\",a|b\r\n\r\n2,\"say \"\"hi\"\"\",\r\n",
      Delimiter::kComma, true, "t.csv");
  ASSERT_THAT(t, IsOk());
  ASSERT_EQ(t->header, (std::vector<std::string>{"id", "title", "tags"}));
  ASSERT_EQ(t->rows.size(), 2u);
  EXPECT_EQ(t->rows[0][1], "Hello, world");
  EXPECT_EQ(t->rows[1][1], "say \"hi\"");
  EXPECT_EQ(t->rows[1][2], "");
  EXPECT_EQ(t->Where(1), "t.csv:4");
}

TEST(TableReaderTest, QuotedFieldMayHoldANewline) {
  absl::StatusOr<Table> t = ParseTable("a,\"x\ny\"\nb,z\n", Delimiter::kComma, false, "t.csv");
  ASSERT_THAT(t, IsOk());
  ASSERT_EQ(t->rows.size(), 2u);
  EXPECT_EQ(t->rows[0][1], "x\ny");
  EXPECT_EQ(t->line_numbers[1], 3);
}

TEST(TableReaderTest, TsvWithoutHeader) {
  absl::StatusOr<Table> t = ParseTable("1\t\"q\"\t3\n4\t5\t6", Delimiter::kTab, false, "t.tsv");
  ASSERT_THAT(t, IsOk());
  EXPECT_TRUE(t->header.empty());
  ASSERT_EQ(t->rows.size(), 2u);
  EXPECT_EQ(t->rows[0][1], "\"q\"");  // TSV takes quotes literally
  EXPECT_EQ(t->rows[1][2], "6");
}

TEST(TableReaderTest, RaggedRowIsAnErrorNamingTheLine) {
  absl::StatusOr<Table> t = ParseTable("a,b\n1,2\n3\n", Delimiter::kComma, true, "t.csv");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("t.csv:3: expected 2 fields, got 1"), std::string::npos)
      << t.status();
}

TEST(TableReaderTest, UnterminatedQuoteIsAnError) {
  EXPECT_FALSE(ParseTable("a,\"b\n", Delimiter::kComma, false, "t.csv").ok());
}

TEST(TableReaderTest, ResolvesColumnsByNameOrIndexWithClearErrors) {
  absl::StatusOr<Table> t = ParseTable("user,item\n1,2\n", Delimiter::kComma, true, "t.csv");
  ASSERT_THAT(t, IsOk());
  v1::ColumnRef ref;
  ref.set_name("item");
  EXPECT_EQ(*t->ResolveColumn(ref), 1);
  ref.set_name("rating");
  absl::StatusOr<int> missing = t->ResolveColumn(ref);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("columns: user, item"), std::string::npos);
  ref.set_index(2);
  EXPECT_FALSE(t->ResolveColumn(ref).ok());
  absl::StatusOr<Table> no_header = ParseTable("1,2\n", Delimiter::kComma, false, "t.csv");
  ref.set_name("user");
  EXPECT_FALSE(no_header->ResolveColumn(ref).ok());
}

TEST(TableReaderTest, FormatByExtensionOrExplicit) {
  ScopedTempDir dir;
  WriteText(dir.Join("x.data"), "1\t2\n");
  v1::TableSpec spec;
  spec.set_path("x.data");
  EXPECT_FALSE(ReadTable(spec, dir.path()).ok());  // cannot tell the format
  spec.set_format(v1::TableSpec::FORMAT_TSV);
  absl::StatusOr<Table> t = ReadTable(spec, dir.path());
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->rows[0][1], "2");
  spec.set_path("missing.tsv");
  EXPECT_EQ(ReadTable(spec, dir.path()).status().code(), absl::StatusCode::kNotFound);
}

// format unset is FORMAT_AUTO: by the extension, and an error naming the values to set
// when the extension does not tell.
TEST(TableReaderTest, UnsetFormatIsAuto) {
  using ::testing::HasSubstr;
  using testing::IsOk;
  using testing::StatusIs;
  ScopedTempDir dir;
  WriteText(dir.Join("x.tsv"), "a,b\tc\n");
  WriteText(dir.Join("x.csv"), "a,b\tc\n");
  WriteText(dir.Join("x.data"), "a,b\tc\n");
  for (const v1::TableSpec::Format format : {v1::TableSpec::FORMAT_UNSPECIFIED, v1::TableSpec::FORMAT_AUTO}) {
    v1::TableSpec spec;
    spec.set_format(format);
    spec.set_path("x.tsv");
    absl::StatusOr<Table> tsv = ReadTable(spec, dir.path());
    ASSERT_THAT(tsv, IsOk());
    EXPECT_EQ(tsv->rows[0], (std::vector<std::string>{"a,b", "c"}));
    spec.set_path("x.csv");
    absl::StatusOr<Table> csv = ReadTable(spec, dir.path());
    ASSERT_THAT(csv, IsOk());
    EXPECT_EQ(csv->rows[0], (std::vector<std::string>{"a", "b\tc"}));
    spec.set_path("x.data");
    EXPECT_THAT(ReadTable(spec, dir.path()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("set format: FORMAT_CSV or FORMAT_TSV")));
  }
}

v1::FeatureTableSpec ItemSpec(const std::string& path) {
  v1::FeatureTableSpec spec;
  EXPECT_THAT(ParseTextProto(R"pb(
    table { header: true }
    id_column { name: "id" }
    features { name: "genres" kind: KIND_MULTI_HOT column { name: "genres" } separator: "|" }
    features { name: "price" kind: KIND_NUMERIC column { name: "price" } }
    features { name: "flags" kind: KIND_MULTI_HOT flag_columns { name: "f1" } flag_columns { name: "f2" } }
  )pb", "spec", &spec), IsOk());
  spec.mutable_table()->set_path(path);
  return spec;
}

TEST(FeatureTableTest, ReadsMultiHotNumericAndFlagColumns) {
  ScopedTempDir dir;
  WriteText(dir.Join("items.csv"),
            "id,genres,price,f1,f2\nitem A, Action | Comedy ,9.5,1,0\nB,,,0,true\n");
  absl::StatusOr<FeatureTable> t = ReadFeatureTable(ItemSpec("items.csv"), dir.path());
  ASSERT_THAT(t, IsOk());
  ASSERT_EQ(t->ids, (std::vector<std::string>{"item A", "B"}));
  EXPECT_EQ(t->values[0][0].tokens, (std::vector<std::string>{"Action", "Comedy"}));
  EXPECT_TRUE(t->values[0][1].has_number);
  EXPECT_DOUBLE_EQ(t->values[0][1].number, 9.5);
  EXPECT_EQ(t->values[0][2].tokens, (std::vector<std::string>{"f1"}));
  EXPECT_TRUE(t->values[1][0].tokens.empty());
  EXPECT_FALSE(t->values[1][1].has_number);  // missing
  EXPECT_EQ(t->values[1][2].tokens, (std::vector<std::string>{"f2"}));
}

TEST(FeatureTableTest, BadNumberAndDuplicateIdsAreErrors) {
  ScopedTempDir dir;
  WriteText(dir.Join("a.csv"), "id,genres,price,f1,f2\nA,x,cheap,0,0\n");
  absl::StatusOr<FeatureTable> bad = ReadFeatureTable(ItemSpec("a.csv"), dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("a.csv:2: feature \"price\": \"cheap\" is not a finite number"),
            std::string::npos) << bad.status();
  // NaN and infinities parse as numbers elsewhere; a table must not carry them into a model.
  for (const char* cell : {"nan", "inf", "-Infinity"}) {
    WriteText(dir.Join("n.csv"), absl::StrCat("id,genres,price,f1,f2\nA,x,", cell, ",0,0\n"));
    EXPECT_NE(ReadFeatureTable(ItemSpec("n.csv"), dir.path()).status().message().find("is not a finite number"),
              std::string::npos) << cell;
  }
  WriteText(dir.Join("b.csv"), "id,genres,price,f1,f2\nA,x,1,0,0\nA,y,2,0,0\n");
  EXPECT_NE(ReadFeatureTable(ItemSpec("b.csv"), dir.path()).status().message().find("duplicate id"),
            std::string::npos);
  WriteText(dir.Join("c.csv"), "id,genres,price,f1,f2\nA,x,1,2,0\n");
  EXPECT_FALSE(ReadFeatureTable(ItemSpec("c.csv"), dir.path()).ok());  // flag must be 0/1
}

TEST(InteractionsTest, ReadsIdsAsStringsAndTimestamps) {
  ScopedTempDir dir;
  WriteText(dir.Join("clicks.tsv"), "u-1\tx:9\t100\nu-2\tx:8\t99\n");
  v1::InteractionTableSpec spec;
  spec.mutable_table()->set_path("clicks.tsv");
  spec.mutable_user_column()->set_index(0);
  spec.mutable_item_column()->set_index(1);
  spec.mutable_timestamp_column()->set_index(2);
  absl::StatusOr<InteractionLog> log = ReadInteractions(spec, dir.path());
  ASSERT_THAT(log, IsOk());
  EXPECT_EQ(log->users, (std::vector<std::string>{"u-1", "u-2"}));
  EXPECT_EQ(log->items[0], "x:9");
  EXPECT_EQ(log->timestamps, (std::vector<int64_t>{100, 99}));
  WriteText(dir.Join("clicks.tsv"), "u-1\tx:9\tyesterday\n");
  EXPECT_FALSE(ReadInteractions(spec, dir.path()).ok());
}

TEST(SkipBadRowsTest, BadRowsAreCountedAndLeftOutOnlyWhenAsked) {
  ScopedTempDir dir;
  WriteText(dir.Join("clicks.tsv"), "u1\ta\t1\nu2\tb\n\tc\t3\nu3\td\tsoon\nu4\te\t5\n");
  v1::InteractionTableSpec spec;
  spec.mutable_table()->set_path("clicks.tsv");
  spec.mutable_user_column()->set_index(0);
  spec.mutable_item_column()->set_index(1);
  spec.mutable_timestamp_column()->set_index(2);
  absl::StatusOr<InteractionLog> strict = ReadInteractions(spec, dir.path());
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.status().message().find("clicks.tsv:2: expected 3 fields, got 2"), std::string::npos)
      << strict.status();
  spec.mutable_table()->set_skip_bad_rows(true);
  absl::StatusOr<InteractionLog> lenient = ReadInteractions(spec, dir.path());
  ASSERT_THAT(lenient, IsOk());
  EXPECT_EQ(lenient->users, (std::vector<std::string>{"u1", "u4"}));
  EXPECT_EQ(lenient->timestamps, (std::vector<int64_t>{1, 5}));
  ASSERT_EQ(lenient->skipped.size(), 3u);  // wrong width, empty user, bad timestamp
  EXPECT_NE(lenient->skipped[2].find("clicks.tsv:4: timestamp \"soon\""), std::string::npos) << lenient->skipped[2];

  WriteText(dir.Join("items.csv"), "id,genres,price,f1,f2\nA,x,1,0,0\nB,y,cheap,0,0\nA,z,2,0,0\nC,w,3,1,1\n");
  v1::FeatureTableSpec items = ItemSpec("items.csv");
  items.mutable_table()->set_skip_bad_rows(true);
  absl::StatusOr<FeatureTable> table = ReadFeatureTable(items, dir.path());
  ASSERT_THAT(table, IsOk());
  EXPECT_EQ(table->ids, (std::vector<std::string>{"A", "C"}));  // B: bad number; 2nd A: duplicate
  EXPECT_EQ(table->skipped.size(), 2u);
}

// Ids and tokens become protobuf strings (bundle files, serving API): a table cell that is
// not UTF-8 is refused where it is read, with the file, line and column.
TEST(Utf8InputTest, NonUtf8IdsAreRefusedWithFileLineAndColumn) {
  ScopedTempDir dir;
  WriteText(dir.Join("clicks.csv"), "user,item\nu1,caf\xC3\xA9\nu2,caf\xE9\nu3,tea\n");
  v1::InteractionTableSpec spec;
  spec.mutable_table()->set_path("clicks.csv");
  spec.mutable_table()->set_header(true);
  spec.mutable_user_column()->set_name("user");
  spec.mutable_item_column()->set_name("item");
  absl::StatusOr<InteractionLog> strict = ReadInteractions(spec, dir.path());
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(strict.status().message().find(
                "clicks.csv:3: column item: not valid UTF-8 (byte 0xE9 at offset 3)"),
            std::string::npos) << strict.status();
  // With skip_bad_rows: counted and left out like any bad row.
  spec.mutable_table()->set_skip_bad_rows(true);
  absl::StatusOr<InteractionLog> lenient = ReadInteractions(spec, dir.path());
  ASSERT_THAT(lenient, IsOk());
  EXPECT_EQ(lenient->items, (std::vector<std::string>{"caf\xC3\xA9", "tea"}));
  ASSERT_EQ(lenient->skipped.size(), 1u);
  EXPECT_NE(lenient->skipped[0].find("clicks.csv:3: column item"), std::string::npos);
  // The same bytes declared as ISO-8859-1 are converted, and fine.
  spec.mutable_table()->set_skip_bad_rows(false);
  spec.mutable_table()->set_encoding(v1::TableSpec::ENCODING_LATIN1);
  WriteText(dir.Join("clicks.csv"), "user,item\nu2,caf\xE9\n");
  absl::StatusOr<InteractionLog> latin1 = ReadInteractions(spec, dir.path());
  ASSERT_THAT(latin1, IsOk());
  EXPECT_EQ(latin1->items[0], "caf\xC3\xA9");
}

TEST(Utf8InputTest, FeatureTableIdsTokensAndFlagHeadersMustBeUtf8) {
  ScopedTempDir dir;
  struct Case {
    const char* table;
    const char* message;
  };
  const Case cases[] = {
      {"id,genres,price,f1,f2\nA,x,1,0,0\nB\xFF,y,2,0,0\n", "items.csv:3: column id: not valid UTF-8"},
      {"id,genres,price,f1,f2\nA,x|\xED\xA0\x80,1,0,0\n", "items.csv:2: column genres: not valid UTF-8"},
  };
  for (const Case& c : cases) {
    WriteText(dir.Join("items.csv"), c.table);
    absl::StatusOr<FeatureTable> t = ReadFeatureTable(ItemSpec("items.csv"), dir.path());
    ASSERT_FALSE(t.ok()) << c.message;
    EXPECT_NE(t.status().message().find(c.message), std::string::npos) << t.status();
  }
  // A set flag's token is its column's header name (a flag column with such a name can only
  // be referenced by index: config strings are UTF-8).
  WriteText(dir.Join("items.csv"), "id,genres,price,f1,f\xC0\xAF\nA,x,1,0,1\n");
  v1::FeatureTableSpec by_index = ItemSpec("items.csv");
  by_index.mutable_features(2)->mutable_flag_columns(1)->set_index(4);
  const absl::Status header = ReadFeatureTable(by_index, dir.path()).status();
  EXPECT_NE(header.message().find("items.csv: header of column 4 (a flag of feature \"flags\"): not valid UTF-8"),
            std::string::npos) << header;
  // A column no feature reads may hold anything; a number column is parsed, not kept.
  WriteText(dir.Join("items.csv"), "id,genres,price,f1,f2,notes\nA,x,1,0,0,d\xE9j\xE0 vu\n");
  EXPECT_THAT(ReadFeatureTable(ItemSpec("items.csv"), dir.path()), IsOk());
  WriteText(dir.Join("items.csv"), "id,genres,price,f1,f2\nA,x,1\xE9,0,0\n");
  EXPECT_NE(ReadFeatureTable(ItemSpec("items.csv"), dir.path()).status().message().find("not a finite number"),
            std::string::npos);
}

TEST(SyntheticTest, WritesAllFilesDeterministically) {
  ScopedTempDir a, b;
  SyntheticOptions options;
  options.users = 50;
  options.items = 40;
  options.min_clicks = 5;
  options.max_clicks = 10;
  ASSERT_THAT(WriteSyntheticDataset(options, a.path()), IsOk());
  ASSERT_THAT(WriteSyntheticDataset(options, b.path()), IsOk());
  for (const char* name : {"users.csv", "items.csv", "train.csv", "test_warm.csv", "test_cold.csv"}) {
    absl::StatusOr<std::string> x = ReadFile(a.Join(name)), y = ReadFile(b.Join(name));
    ASSERT_THAT(x, IsOk());
    EXPECT_EQ(*x, *y) << name;
  }
  absl::StatusOr<std::string> items = ReadFile(a.Join("items.csv"));
  EXPECT_EQ(std::count(items->begin(), items->end(), '\n'), 41);  // header + 40 items
  options.max_clicks = 100;  // more than the catalogue
  EXPECT_FALSE(WriteSyntheticDataset(options, a.path()).ok());
  options.max_clicks = 10;
  options.users = 2000000000;  // an error, not std::bad_alloc
  EXPECT_EQ(WriteSyntheticDataset(options, a.path()).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace twotower
