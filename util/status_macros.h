// Status propagation for functions that return absl::Status or absl::StatusOr<T>.
//
//   RETURN_IF_ERROR(WriteFile(path, bytes));          // returns the error, if any
//   ASSIGN_OR_RETURN(Bundle bundle, ReadBundle(dir)); // declares `bundle` or returns
//
// The expression is evaluated once. ASSIGN_OR_RETURN's left-hand side may be a
// declaration or an existing variable; a type with a top-level comma needs parentheses
// or an alias.
#ifndef TWOTOWER_UTIL_STATUS_MACROS_H_
#define TWOTOWER_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RETURN_IF_ERROR(expr)                                                 \
  do {                                                                        \
    if (::absl::Status twotower_status_ = (expr); !twotower_status_.ok()) {   \
      return twotower_status_;                                                \
    }                                                                         \
  } while (0)

#define TWOTOWER_STATUS_CONCAT_INNER_(a, b) a##b
#define TWOTOWER_STATUS_CONCAT_(a, b) TWOTOWER_STATUS_CONCAT_INNER_(a, b)

#define ASSIGN_OR_RETURN(lhs, expr) \
  TWOTOWER_ASSIGN_OR_RETURN_IMPL_(TWOTOWER_STATUS_CONCAT_(twotower_statusor_, __LINE__), lhs, expr)

#define TWOTOWER_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = *std::move(statusor)

#endif  // TWOTOWER_UTIL_STATUS_MACROS_H_
