// Reads delimited text tables (CSV with RFC 4180 quoting, or TSV), with or without a
// header row, and resolves column references against them.
#ifndef TWOTOWER_DATASET_TABLE_READER_H_
#define TWOTOWER_DATASET_TABLE_READER_H_

#include <functional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

struct Table {
  std::string source;               // file name, for error messages
  std::vector<std::string> header;  // empty when the table has no header row
  std::vector<std::vector<std::string>> rows;
  std::vector<int> line_numbers;    // 1-based source line of each row
  std::vector<std::string> skipped; // "source:line: problem" of rows left out (skip_bad_rows)

  // Column index of `ref`; an error names the table and the known columns.
  absl::StatusOr<int> ResolveColumn(const v1::ColumnRef& ref) const;
  // Human-readable name of column `index` (header name, else "#index").
  std::string ColumnName(int index) const;
  // "source:line" of row `row`, for error messages.
  std::string Where(size_t row) const;
  // OK when `value` (a cell of row `row`, column `column`, or part of one) is valid UTF-8;
  // else INVALID_ARGUMENT "source:line: column C: not valid UTF-8 (byte 0xE9 at offset 3)".
  // Ids and tokens must be: the model and the serving API carry them as UTF-8 strings.
  absl::Status CheckUtf8(size_t row, int column, absl::string_view value) const;
  // Runs `parse_row(r)` on every row r, in order. A row it fails is an error (that status,
  // returned at once), or with `skip_bad_rows` its message goes to *skipped and the next row
  // follows: `parse_row` should keep nothing of a row before all of it has parsed.
  absl::Status ParseRows(bool skip_bad_rows, std::vector<std::string>* skipped,
                         const std::function<absl::Status(size_t row)>& parse_row) const;
};

// Largest table file ReadTable reads (the trainer holds every table in memory, several
// times its size once parsed).
inline constexpr uint64_t kMaxTableBytes = uint64_t{16} << 30;

enum class Delimiter { kComma, kTab };

// Parses `text`. Every row must have as many fields as the first one; blank lines are
// skipped; "\r\n" line ends are accepted.
// With `skip_bad_rows`, a row of the wrong width is recorded in Table::skipped instead.
absl::StatusOr<Table> ParseTable(absl::string_view text, Delimiter delimiter, bool has_header,
                                 std::string source, bool skip_bad_rows = false);
// The same with any single-character separator and no quoting.
absl::StatusOr<Table> ParseTable(absl::string_view text, char separator, bool has_header,
                                 std::string source, bool skip_bad_rows = false);

// ISO-8859-1 bytes as UTF-8.
std::string Latin1ToUtf8(absl::string_view text);

// Reads spec.path (resolved against `base_dir` when relative) in spec.format; a file over
// kMaxTableBytes is an error.
absl::StatusOr<Table> ReadTable(const v1::TableSpec& spec, const std::string& base_dir);

// Writes rows as CSV (quoting fields that need it) - used by the synthetic generator.
std::string FormatCsvRow(const std::vector<std::string>& fields);

}  // namespace twotower

#endif  // TWOTOWER_DATASET_TABLE_READER_H_
