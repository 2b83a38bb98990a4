#include "dataset/feature_table.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "dataset/table_reader.h"
#include "util/parse_number.h"
#include "util/status_macros.h"
#include "util/utf8.h"
#include "util/config_enums.h"

namespace twotower {

namespace {

// Where one feature's value comes from in the table.
struct FeatureSource {
  v1::FeatureSpec::Kind kind;
  int column = -1;
  std::vector<int> flag_columns;
  std::string separator;
  bool derived = false;
};

absl::StatusOr<bool> ParseFlag(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower.empty() || lower == "0" || lower == "false" || lower == "no") return false;
  if (lower == "1" || lower == "true" || lower == "yes") return true;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a 0/1 flag"));
}

}  // namespace

absl::StatusOr<FeatureTable> ReadFeatureTable(const v1::FeatureTableSpec& spec,
                                              const std::string& base_dir) {
  ASSIGN_OR_RETURN(Table table, ReadTable(spec.table(), base_dir));
  ASSIGN_OR_RETURN(int id_col, table.ResolveColumn(spec.id_column()));

  std::vector<FeatureSource> sources;
  for (const v1::FeatureSpec& feature : spec.features()) {
    FeatureSource source;
    source.kind = feature.kind();
    source.separator = feature.separator().empty() ? "|" : feature.separator();
    source.derived = ResolvedDerive(feature) != v1::FeatureSpec::DERIVE_NONE;
    if (feature.kind() == v1::FeatureSpec::KIND_POPULARITY ||
        feature.kind() == v1::FeatureSpec::KIND_HISTORY) {  // derived, no column
      sources.push_back(std::move(source));
      continue;
    }
    if (feature.flag_columns_size() > 0) {
      for (const v1::ColumnRef& ref : feature.flag_columns()) {
        absl::StatusOr<int> col = table.ResolveColumn(ref);
        if (!col.ok()) return col.status();
        // A set flag's token is the column's header name.
        if (!IsValidUtf8(table.ColumnName(*col))) {
          return absl::InvalidArgumentError(
              absl::StrCat(table.source, ": header of column ", *col, " (a flag of feature \"", feature.name(),
                           "\"): not valid UTF-8 (", DescribeInvalidUtf8(table.ColumnName(*col)), ")"));
        }
        source.flag_columns.push_back(*col);
      }
    } else {
      absl::StatusOr<int> col = table.ResolveColumn(feature.column());
      if (!col.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("feature \"", feature.name(), "\": ", col.status().message()));
      }
      source.column = *col;
    }
    sources.push_back(std::move(source));
  }

  FeatureTable out;
  out.ids.reserve(table.rows.size());
  out.values.reserve(table.rows.size());
  absl::flat_hash_set<std::string> seen;
  out.skipped = table.skipped;
  // Parse the whole row before keeping any of it, so a skipped row leaves no trace.
  RETURN_IF_ERROR(table.ParseRows(spec.table().skip_bad_rows(), &out.skipped, [&](size_t r) -> absl::Status {
    const std::vector<std::string>& row = table.rows[r];
    std::string id(absl::StripAsciiWhitespace(row[id_col]));
    if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(table.Where(r), ": empty id"));
    RETURN_IF_ERROR(table.CheckUtf8(r, id_col, id));
    if (seen.contains(id)) {
      return absl::InvalidArgumentError(absl::StrCat(table.Where(r), ": duplicate id \"", id, "\""));
    }
    std::vector<RawValue> values(sources.size());
    for (size_t f = 0; f < sources.size(); ++f) {
      const FeatureSource& source = sources[f];
      RawValue& value = values[f];
      const std::string where = absl::StrCat(table.Where(r), ": feature \"", spec.features(f).name(), "\": ");
      if (!source.flag_columns.empty()) {
        for (int col : source.flag_columns) {
          absl::StatusOr<bool> set = ParseFlag(row[col]);
          if (!set.ok()) return absl::InvalidArgumentError(where + std::string(set.status().message()));
          if (*set) value.tokens.push_back(table.ColumnName(col));
        }
        continue;
      }
      if (source.kind == v1::FeatureSpec::KIND_POPULARITY || source.kind == v1::FeatureSpec::KIND_HISTORY) continue;
      absl::string_view field = absl::StripAsciiWhitespace(row[source.column]);
      // Tokens (and derived values) become vocabulary entries: UTF-8 only. A plain number
      // is parsed, not kept.
      if (source.kind == v1::FeatureSpec::KIND_CATEGORICAL || source.kind == v1::FeatureSpec::KIND_MULTI_HOT ||
          source.derived) {
        RETURN_IF_ERROR(table.CheckUtf8(r, source.column, field));
      }
      switch (source.kind) {
        case v1::FeatureSpec::KIND_CATEGORICAL:
          if (!field.empty()) value.tokens.emplace_back(field);
          break;
        case v1::FeatureSpec::KIND_MULTI_HOT:
          for (absl::string_view token : absl::StrSplit(field, source.separator)) {
            token = absl::StripAsciiWhitespace(token);
            if (!token.empty()) value.tokens.emplace_back(token);
          }
          break;
        case v1::FeatureSpec::KIND_NUMERIC:
        case v1::FeatureSpec::KIND_BUCKETIZED:
          // A derived number ("01-Jan-1995" -> 1995) is parsed by the encoder after the
          // derivation, as for request values: keep the string.
          if (source.derived) {
            if (!field.empty()) value.tokens.emplace_back(field);
          } else if (!field.empty()) {
            const std::optional<double> number = ParseNumber(field);
            if (!number.has_value()) {
              return absl::InvalidArgumentError(
                  absl::StrCat(where, "\"", field, "\" is not a finite number"));
            }
            value.number = *number;
            value.has_number = true;
          }
          break;
        default:
          return absl::InvalidArgumentError(where + "kind not set");
      }
    }
    seen.insert(id);
    out.ids.push_back(std::move(id));
    out.values.push_back(std::move(values));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace twotower
