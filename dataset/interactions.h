// Positive interactions (user, item[, timestamp]) read from a table.
#ifndef TWOTOWER_DATASET_INTERACTIONS_H_
#define TWOTOWER_DATASET_INTERACTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "twotower/v1/config.pb.h"

namespace twotower {

struct InteractionLog {
  std::vector<std::string> users;
  std::vector<std::string> items;
  std::vector<int64_t> timestamps;  // empty when the table has no timestamp column
  // 1 = positive (clicked), 0 = exposure only (shown, not clicked). Empty when the table
  // has no label column: every row is a positive.
  std::vector<uint8_t> labels;
  // Rows left out by skip_bad_rows: "source:line: problem".
  std::vector<std::string> skipped;

  size_t size() const { return users.size(); }
};

absl::StatusOr<InteractionLog> ReadInteractions(const v1::InteractionTableSpec& spec,
                                                const std::string& base_dir);

}  // namespace twotower

#endif  // TWOTOWER_DATASET_INTERACTIONS_H_
