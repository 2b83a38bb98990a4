// libFuzzer target: the CSV / TSV / delimited table parser (untrusted input: users'
// exports), with and without a header and skip_bad_rows.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dataset/table_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool header = (mode & 1) != 0;
  const bool skip = (mode & 2) != 0;
  absl::StatusOr<twotower::Table> table =
      (mode & 4) != 0 ? twotower::ParseTable(text, twotower::Delimiter::kComma, header, "fuzz", skip)
      : (mode & 8) != 0 ? twotower::ParseTable(text, '|', header, "fuzz", skip)
                        : twotower::ParseTable(text, twotower::Delimiter::kTab, header, "fuzz", skip);
  if (table.ok()) {
    // Every row has the same width; column lookups never go out of range.
    for (const auto& row : table->rows) {
      if (row.size() != table->rows.front().size()) __builtin_trap();
    }
    twotower::v1::ColumnRef ref;
    ref.set_index(static_cast<int>(mode >> 4));
    (void)table->ResolveColumn(ref);
  }
  (void)twotower::Latin1ToUtf8(text);
  return 0;
}
