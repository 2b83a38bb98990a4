#include "dataset/interactions.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "dataset/table_reader.h"
#include "util/status_macros.h"

namespace twotower {

absl::StatusOr<InteractionLog> ReadInteractions(const v1::InteractionTableSpec& spec,
                                                const std::string& base_dir) {
  ASSIGN_OR_RETURN(Table table, ReadTable(spec.table(), base_dir));
  ASSIGN_OR_RETURN(int user_col, table.ResolveColumn(spec.user_column()));
  ASSIGN_OR_RETURN(int item_col, table.ResolveColumn(spec.item_column()));
  int time_col = -1;
  if (spec.has_timestamp_column()) {
    absl::StatusOr<int> col = table.ResolveColumn(spec.timestamp_column());
    if (!col.ok()) return col.status();
    time_col = *col;
  }
  int label_col = -1;
  if (spec.has_label_column()) {
    ASSIGN_OR_RETURN(int col, table.ResolveColumn(spec.label_column()));
    label_col = col;
  }
  InteractionLog log;
  log.users.reserve(table.rows.size());
  log.items.reserve(table.rows.size());
  log.skipped = table.skipped;
  // Parse the whole row before keeping any of it, so a skipped row leaves no trace.
  RETURN_IF_ERROR(table.ParseRows(spec.table().skip_bad_rows(), &log.skipped, [&](size_t r) -> absl::Status {
    const std::vector<std::string>& row = table.rows[r];
    absl::string_view user = absl::StripAsciiWhitespace(row[user_col]);
    absl::string_view item = absl::StripAsciiWhitespace(row[item_col]);
    if (user.empty() || item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(table.Where(r), ": empty user or item id"));
    }
    RETURN_IF_ERROR(table.CheckUtf8(r, user_col, user));
    RETURN_IF_ERROR(table.CheckUtf8(r, item_col, item));
    int64_t t = 0;
    if (time_col >= 0 && !absl::SimpleAtoi(absl::StripAsciiWhitespace(row[time_col]), &t)) {
      return absl::InvalidArgumentError(
          absl::StrCat(table.Where(r), ": timestamp \"", row[time_col], "\" is not an integer"));
    }
    uint8_t label = 1;
    if (label_col >= 0) {
      const std::string text = absl::AsciiStrToLower(absl::StripAsciiWhitespace(row[label_col]));
      if (text.empty() || text == "0" || text == "false" || text == "no") {
        label = 0;
      } else if (!(text == "1" || text == "true" || text == "yes")) {
        return absl::InvalidArgumentError(
            absl::StrCat(table.Where(r), ": label \"", row[label_col], "\" is not 0/1 (clicked or not)"));
      }
    }
    log.users.emplace_back(user);
    log.items.emplace_back(item);
    if (time_col >= 0) log.timestamps.push_back(t);
    if (label_col >= 0) log.labels.push_back(label);
    return absl::OkStatus();
  }));
  return log;
}

}  // namespace twotower
