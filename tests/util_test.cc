#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "util/admin_token.h"

namespace twotower {
namespace {

TEST(AdminTokenTest, FileAndEnvironmentAreStrippedAlike) {
  testing::ScopedTempDir dir;
  testing::WriteText(dir.Join("token"), "  s3cret\n");
  ::setenv("TWOTOWER_ADMIN_TOKEN", "other\n", 1);
  EXPECT_EQ(ReadAdminToken(dir.Join("token")).value(), "s3cret");  // the file wins
  EXPECT_EQ(ReadAdminToken("").value(), "other");                  // then the environment
  ::unsetenv("TWOTOWER_ADMIN_TOKEN");
  EXPECT_EQ(ReadAdminToken("").value(), "");                       // then none
  EXPECT_FALSE(ReadAdminToken(dir.Join("missing")).ok());
  testing::WriteText(dir.Join("blank"), " \n");
  EXPECT_EQ(ReadAdminToken(dir.Join("blank")).status().code(), absl::StatusCode::kInvalidArgument);
  ::setenv("TWOTOWER_ADMIN_TOKEN", " \n", 1);  // set but blank: an error, not "no token"
  EXPECT_EQ(ReadAdminToken("").status().code(), absl::StatusCode::kInvalidArgument);
  ::unsetenv("TWOTOWER_ADMIN_TOKEN");
}

}  // namespace
}  // namespace twotower
