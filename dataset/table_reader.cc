#include "dataset/table_reader.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "util/file.h"
#include "util/status_macros.h"
#include "util/utf8.h"
#include "util/config_enums.h"

namespace twotower {

absl::StatusOr<int> Table::ResolveColumn(const v1::ColumnRef& ref) const {
  const int width = rows.empty() ? static_cast<int>(header.size())
                                 : static_cast<int>(rows.front().size());
  switch (ref.ref_case()) {
    case v1::ColumnRef::kIndex:
      if (ref.index() < 0 || ref.index() >= width) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": column index ", ref.index(), " out of range (table has ", width,
            " columns, 0-based)"));
      }
      return ref.index();
    case v1::ColumnRef::kName:
      if (header.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": column \"", ref.name(),
            "\" referenced by name but the table has no header (set header: true or use "
            "index)"));
      }
      for (size_t i = 0; i < header.size(); ++i) {
        if (header[i] == ref.name()) return static_cast<int>(i);
      }
      return absl::InvalidArgumentError(absl::StrCat(source, ": no column named \"",
                                                     ref.name(), "\" (columns: ",
                                                     absl::StrJoin(header, ", "), ")"));
    case v1::ColumnRef::REF_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(source, ": column reference not set"));
}

std::string Table::ColumnName(int index) const {
  if (index >= 0 && static_cast<size_t>(index) < header.size()) return header[index];
  return absl::StrCat("#", index);
}

std::string Table::Where(size_t row) const {
  return absl::StrCat(source, ":", row < line_numbers.size() ? line_numbers[row] : 0);
}

absl::Status Table::CheckUtf8(size_t row, int column, absl::string_view value) const {
  if (IsValidUtf8(value)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      Where(row), ": column ", ColumnName(column), ": not valid UTF-8 (",
      DescribeInvalidUtf8(value), "); ids and values must be UTF-8 (set encoding: ENCODING_LATIN1 for "
      "an ISO-8859-1 file)"));
}

absl::Status Table::ParseRows(bool skip_bad_rows, std::vector<std::string>* skipped,
                              const std::function<absl::Status(size_t row)>& parse_row) const {
  for (size_t r = 0; r < rows.size(); ++r) {
    const absl::Status parsed = parse_row(r);
    if (!parsed.ok()) {
      if (!skip_bad_rows) return parsed;
      skipped->emplace_back(parsed.message());
    }
  }
  return absl::OkStatus();
}

namespace {

// Splits one record starting at `pos`; advances `pos` past its line end. CSV fields may be
// quoted (with "" for a quote and embedded newlines); TSV fields are taken verbatim.
absl::Status NextRecord(absl::string_view text, size_t& pos, char delim, bool quoting,
                        int& line, std::vector<std::string>& fields) {
  fields.clear();
  std::string field;
  bool in_quotes = false;
  bool field_was_quoted = false;
  const int start_line = line;
  while (pos < text.size()) {
    const char c = text[pos];
    if (in_quotes) {
      if (c == '"') {
        if (pos + 1 < text.size() && text[pos + 1] == '"') {
          field.push_back('"');
          pos += 2;
          continue;
        }
        in_quotes = false;
        ++pos;
        continue;
      }
      if (c == '\n') ++line;
      field.push_back(c);
      ++pos;
      continue;
    }
    if (c == delim) {
      fields.push_back(std::move(field));
      field.clear();
      field_was_quoted = false;
      ++pos;
      continue;
    }
    if (c == '\n' || c == '\r') {
      ++pos;
      if (c == '\r' && pos < text.size() && text[pos] == '\n') ++pos;
      ++line;
      fields.push_back(std::move(field));
      return absl::OkStatus();
    }
    if (quoting && c == '"' && field.empty() && !field_was_quoted) {
      in_quotes = true;
      field_was_quoted = true;
      ++pos;
      continue;
    }
    field.push_back(c);
    ++pos;
  }
  if (in_quotes) {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", start_line, ": unterminated quoted field"));
  }
  fields.push_back(std::move(field));
  ++line;
  return absl::OkStatus();
}

bool IsBlank(const std::vector<std::string>& fields) {
  return fields.size() == 1 && fields[0].empty();
}

}  // namespace

namespace {
absl::StatusOr<Table> Parse(absl::string_view text, char delim, bool quoting, bool has_header,
                            std::string source, bool skip_bad_rows) {
  Table table;
  table.source = std::move(source);
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // BOM
  size_t pos = 0;
  int line = 1;
  std::vector<std::string> fields;
  size_t width = 0;
  while (pos < text.size()) {
    const int record_line = line;
    if (absl::Status s = NextRecord(text, pos, delim, quoting, line, fields); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(table.source, ": ", s.message()));
    }
    if (IsBlank(fields)) continue;
    if (width == 0) width = fields.size();
    if (fields.size() != width) {
      if (skip_bad_rows) {
        table.skipped.push_back(absl::StrCat(table.source, ":", record_line, ": expected ", width,
                                             " fields, got ", fields.size()));
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(table.source, ":", record_line, ": expected ", width, " fields, got ",
                       fields.size(), " (separator '", delim == '\t' ? std::string("\\t") : std::string(1, delim), "')"));
    }
    if (has_header && table.header.empty()) {
      table.header = fields;
      continue;
    }
    table.rows.push_back(fields);
    table.line_numbers.push_back(record_line);
  }
  if (has_header && table.header.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(table.source, ": empty (no header row)"));
  }
  return table;
}
}  // namespace

absl::StatusOr<Table> ParseTable(absl::string_view text, Delimiter delimiter, bool has_header,
                                 std::string source, bool skip_bad_rows) {
  return Parse(text, delimiter == Delimiter::kComma ? ',' : '\t',
               delimiter == Delimiter::kComma, has_header, std::move(source), skip_bad_rows);
}

absl::StatusOr<Table> ParseTable(absl::string_view text, char separator, bool has_header,
                                 std::string source, bool skip_bad_rows) {
  return Parse(text, separator, false, has_header, std::move(source), skip_bad_rows);
}

std::string Latin1ToUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out.push_back(ch);
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

absl::StatusOr<Table> ReadTable(const v1::TableSpec& spec, const std::string& base_dir) {
  if (spec.path().empty()) return absl::InvalidArgumentError("table path is empty");
  const std::string path = ResolvePath(base_dir, spec.path());
  if (spec.delimiter().size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": delimiter must be one character, got \"", spec.delimiter(), "\""));
  }
  Delimiter delimiter = Delimiter::kComma;
  if (spec.delimiter().empty()) switch (ResolvedFormat(spec)) {
    case v1::TableSpec::FORMAT_CSV:
      delimiter = Delimiter::kComma;
      break;
    case v1::TableSpec::FORMAT_TSV:
      delimiter = Delimiter::kTab;
      break;
    default:
      if (absl::EndsWith(path, ".csv")) {
        delimiter = Delimiter::kComma;
      } else if (absl::EndsWith(path, ".tsv") || absl::EndsWith(path, ".tab")) {
        delimiter = Delimiter::kTab;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": cannot tell CSV from TSV by the extension; set format: FORMAT_CSV or FORMAT_TSV"));
      }
  }
  ReadFileOptions options;
  options.max_bytes = kMaxTableBytes;
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, options));
  if (ResolvedEncoding(spec) == v1::TableSpec::ENCODING_LATIN1) text = Latin1ToUtf8(text);
  if (!spec.delimiter().empty()) {
    return ParseTable(text, spec.delimiter()[0], spec.header(), path, spec.skip_bad_rows());
  }
  return ParseTable(text, delimiter, spec.header(), path, spec.skip_bad_rows());
}

std::string FormatCsvRow(const std::vector<std::string>& fields) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) out.push_back(',');
    const std::string& f = fields[i];
    if (f.find_first_of(",\"\n\r") == std::string::npos) {
      out += f;
      continue;
    }
    out.push_back('"');
    for (char c : f) {
      if (c == '"') out.push_back('"');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('\n');
  return out;
}

}  // namespace twotower
