// gMock matchers for absl::Status and absl::StatusOr<T>:
//
//   ASSERT_THAT(ReadBundle(dir), IsOk());
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("MANIFEST")));
//
// A failure prints the status, so no `<< x.status()` is needed.
#ifndef TWOTOWER_TESTS_STATUS_MATCHERS_H_
#define TWOTOWER_TESTS_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace twotower::testing {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = ::twotower::testing::GetStatus(arg);
  if (!status.ok()) *result_listener << "whose status is " << status;
  return status.ok();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + absl::StatusCodeToString(code) + " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher)) {
  const absl::Status& status = ::twotower::testing::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_STATUS_MATCHERS_H_
