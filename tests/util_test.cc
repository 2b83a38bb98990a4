#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "twotower/v1/config.pb.h"
#include "util/admin_token.h"
#include "util/file.h"
#include "util/string_table.h"
#include "util/status_macros.h"
#include "util/utf8.h"

using ::twotower::testing::IsOk;
using ::twotower::testing::StatusIs;

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

TEST(AdminTokenTest, AnOversizedTokenFileIsRefused) {
  testing::ScopedTempDir dir;
  testing::WriteText(dir.Join("token"), std::string(100 << 10, 'x'));
  EXPECT_EQ(ReadAdminToken(dir.Join("token")).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(Utf8Test, AcceptsWellFormedText) {
  for (const char* text : {"", "plain ascii id-42", "caf\xC3\xA9",  // U+00E9
                           "\xC2\x80", "\xDF\xBF",                   // U+0080, U+07FF
                           "\xE0\xA0\x80", "\xED\x9F\xBF",           // U+0800, U+D7FF
                           "\xEE\x80\x80", "\xEF\xBF\xBF",           // U+E000, U+FFFF
                           "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",   // U+10000, U+10FFFF
                           "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80"}) {
    EXPECT_TRUE(IsValidUtf8(text)) << absl::CHexEscape(text);
  }
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));  // NUL is a character
  EXPECT_EQ(DescribeInvalidUtf8("fine"), "");
}

TEST(Utf8Test, RefusesMalformedTextAtTheFirstBadByte) {
  struct Case {
    std::string text;
    size_t offset;
  };
  const Case cases[] = {
      {"caf\xE9", 3},                     // Latin-1 e-acute: a lead byte without continuation
      {"\x80", 0},                        // a stray continuation byte
      {"ab\xBF" "cd", 2},
      {"\xC0\x80", 0},                     // overlong NUL
      {"\xC1\xBF", 0},                     // overlong U+007F
      {"\xE0\x80\x80", 0},                 // overlong 3-byte form
      {"\xE0\x9F\xBF", 0},                 // overlong U+07FF
      {"\xF0\x80\x80\x80", 0},             // overlong 4-byte form
      {"\xF0\x8F\xBF\xBF", 0},             // overlong U+FFFF
      {"x\xED\xA0\x80", 1},                // surrogate U+D800
      {"\xED\xBF\xBF", 0},                 // surrogate U+DFFF
      {"\xF4\x90\x80\x80", 0},             // U+110000
      {"\xF5\x80\x80\x80", 0},             // lead byte past U+10FFFF
      {"\xFF", 0},
      {"\xFE", 0},
      {"ok\xC3", 2},                       // truncated at the end
      {"ok\xE2\x82", 2},
      {"ok\xF0\x9F\x98", 2},
      {"\xE2\x28\xA1", 0},                 // bad second byte
      {"\xF0\x9F\x98(", 0},                // bad fourth byte
      {std::string(37, 'a') + "\xE9" + std::string(20, 'b'), 37},  // past the 8-byte ASCII runs
  };
  for (const Case& c : cases) {
    EXPECT_FALSE(IsValidUtf8(c.text)) << absl::CHexEscape(c.text);
    EXPECT_EQ(FirstInvalidUtf8(c.text), c.offset) << absl::CHexEscape(c.text);
  }
  EXPECT_EQ(DescribeInvalidUtf8("caf\xE9"), "byte 0xE9 at offset 3");
}

TEST(Utf8Test, PrefixNeverCutsACharacter) {
  EXPECT_EQ(Utf8Prefix("94110", 1), "9");
  EXPECT_EQ(Utf8Prefix("ab", 5), "ab");
  EXPECT_EQ(Utf8Prefix("a\xC3\xA9" "b", 2), "a");         // would cut e-acute: before it
  EXPECT_EQ(Utf8Prefix("a\xC3\xA9" "b", 3), "a\xC3\xA9");
  EXPECT_EQ(Utf8Prefix("\xC3\xA9t\xC3\xA9", 1), "\xC3\xA9");  // the first character whole
  EXPECT_EQ(Utf8Prefix("\xF0\x9F\x98\x80x", 2), "\xF0\x9F\x98\x80");
  EXPECT_EQ(Utf8Prefix("ab\xF0\x9F\x98\x80", 5), "ab");
  EXPECT_EQ(Utf8Prefix("\xE6\x97\xA5\xE6\x9C\xAC", 4), "\xE6\x97\xA5");
  // Every prefix of valid text is valid.
  const std::string text = "z\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80q";
  for (size_t n = 1; n <= text.size(); ++n) EXPECT_TRUE(IsValidUtf8(Utf8Prefix(text, n))) << n;
}

TEST(Utf8Test, CheckUtf8FieldsNamesTheField) {
  v1::TrainerConfig config;
  config.mutable_data()->mutable_train()->mutable_table()->set_path("train.csv");
  config.mutable_data()->mutable_users()->add_features()->set_name("fine");
  EXPECT_THAT(CheckUtf8Fields(config), IsOk());
  config.mutable_data()->mutable_users()->add_features()->set_name("caf\xE9");
  const absl::Status status = CheckUtf8Fields(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("data.users.features[1].name: not valid UTF-8 (byte 0xE9 at offset 3)"),
            std::string::npos) << status;
}

TEST(WriteAllTest, WritesAtTheOffsetRetriesInterruptionsAndReportsTheFault) {
  testing::ScopedTempDir dir;
  const std::string path = dir.Join("f");
  testing::WriteText(path, "0123456789");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // Two interrupted attempts, then the real write at byte 3.
  int calls = 0;
  EXPECT_EQ(WriteAll(fd, "abc", 3, [&calls] { return ++calls <= 2 ? EINTR : 0; }), 0);
  EXPECT_EQ(calls, 3);
  // A failing write reports its errno and writes nothing.
  EXPECT_EQ(WriteAll(fd, "zz", 0, [] { return ENOSPC; }), ENOSPC);
  // offset < 0: at the file position (0 after open).
  EXPECT_EQ(WriteAll(fd, "XY"), 0);
  ::close(fd);
  absl::StatusOr<std::string> contents = ReadFile(path);
  ASSERT_THAT(contents, IsOk());
  EXPECT_EQ(*contents, "XY2abc6789");
  EXPECT_EQ(WriteAll(-1, "x"), EBADF);
  EXPECT_EQ(WriteAll(-1, ""), 0);  // nothing to write: no call
}

TEST(ReadFileTest, ReadsWholeFilesAndMissingIsNotFound) {
  testing::ScopedTempDir dir;
  const std::string big(200000, 'q');  // several read() calls
  testing::WriteText(dir.Join("f"), big);
  EXPECT_EQ(ReadFile(dir.Join("f")).value(), big);
  EXPECT_EQ(ReadFile(dir.Join("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ReadFileTest, SizeCapRefusesBiggerFilesAndEndlessStreams) {
  testing::ScopedTempDir dir;
  testing::WriteText(dir.Join("f"), "0123456789");
  ReadFileOptions options;
  options.max_bytes = 10;
  EXPECT_EQ(ReadFile(dir.Join("f"), options).value(), "0123456789");
  options.max_bytes = 9;
  const absl::Status status = ReadFile(dir.Join("f"), options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find(dir.Join("f")), std::string::npos) << status;
  // A character device that never ends: stopped at the cap, not at the end of memory.
  options.max_bytes = 1 << 20;
  EXPECT_EQ(ReadFile("/dev/zero", options).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(ReadFileTest, RegularOnlyRefusesFifosAndDevicesWithoutBlocking) {
  testing::ScopedTempDir dir;
  const std::string fifo = dir.Join("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ReadFileOptions options;
  options.regular_only = true;
  // No writer: a blocking open would hang here for ever.
  auto pending = std::async(std::launch::async, [&] { return ReadFile(fifo, options).status(); });
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "blocked on a FIFO";
  const absl::Status status = pending.get();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("a FIFO"), std::string::npos) << status;
  EXPECT_EQ(ReadFile("/dev/null", options).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadFile(dir.path(), options).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ReadFileTest, WithoutRegularOnlyAFifoIsReadToItsEnd) {
  // What a shell's --config <(generate) gives the trainer.
  testing::ScopedTempDir dir;
  const std::string fifo = dir.Join("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] { testing::WriteText(fifo, "from a pipe"); });
  ReadFileOptions options;
  options.max_bytes = 1 << 10;
  const absl::StatusOr<std::string> text = ReadFile(fifo, options);
  writer.join();
  ASSERT_THAT(text, IsOk());
  EXPECT_EQ(*text, "from a pipe");
}

TEST(ReadFileTest, NoFollowRefusesASymlink) {
  testing::ScopedTempDir dir;
  testing::WriteText(dir.Join("real"), "x");
  std::filesystem::create_symlink(dir.Join("real"), dir.Join("link"));
  ReadFileOptions options;
  EXPECT_EQ(ReadFile(dir.Join("link"), options).value(), "x");
  options.no_follow = true;
  const absl::Status status = ReadFile(dir.Join("link"), options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("symbolic link"), std::string::npos) << status;
}

TEST(ReadFileTest, ReadFileAtTakesPlainNamesOnly) {
  testing::ScopedTempDir dir;
  std::filesystem::create_directories(dir.Join("d"));
  testing::WriteText(dir.Join("d/f"), "inside");
  testing::WriteText(dir.Join("outside"), "outside");
  // The directory itself may be reached through a symlink.
  std::filesystem::create_directory_symlink(dir.Join("d"), dir.Join("via"));
  absl::StatusOr<ScopedFd> fd = OpenDirectory(dir.Join("via"));
  ASSERT_THAT(fd, IsOk());
  EXPECT_EQ(ReadFileAt(*fd, dir.Join("via"), "f", {}).value(), "inside");
  for (const char* name : {"../outside", "", ".", "..", "/etc/hostname", "sub/f"}) {
    EXPECT_EQ(ReadFileAt(*fd, dir.Join("via"), name, {}).status().code(),
              absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_EQ(ReadFileAt(*fd, dir.Join("via"), "missing", {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(OpenDirectory(dir.Join("d/f")).status().code(), absl::StatusCode::kNotFound);
}

TEST(EnsureWritableDirectoryTest, CreatesParentsOrSaysWhyNot) {
  testing::ScopedTempDir dir;
  EXPECT_THAT(EnsureWritableDirectory(dir.Join("a/b/c")), IsOk());
  EXPECT_TRUE(std::filesystem::is_directory(dir.Join("a/b/c")));
  EXPECT_TRUE(std::filesystem::is_empty(dir.Join("a/b/c")));  // the probe is gone
  EXPECT_THAT(EnsureWritableDirectory(dir.Join("a/b/c")), IsOk());  // existing: fine
  testing::WriteText(dir.Join("file"), "");
  const absl::Status under_file = EnsureWritableDirectory(dir.Join("file/sub"));
  EXPECT_EQ(under_file.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(under_file.message().find("file/sub"), std::string::npos) << under_file;
  EXPECT_EQ(EnsureWritableDirectory(dir.Join("file")).code(), absl::StatusCode::kFailedPrecondition);
  if (::geteuid() != 0) {  // root writes through permission bits
    ASSERT_EQ(::chmod(dir.Join("a/b").c_str(), 0555), 0);
    EXPECT_EQ(EnsureWritableDirectory(dir.Join("a/b")).code(), absl::StatusCode::kFailedPrecondition);
    ::chmod(dir.Join("a/b").c_str(), 0755);
  }
}

// The compact id table: every string found at its position, misses are -1 (also among
// many strings, where probes pass other strings' slots), a repeated string finds its
// first position, the table survives a move, and it costs its characters plus ~10 bytes
// per string (what the catalogue and the vocabularies rely on for their memory).
TEST(StringTableTest, FindsEveryStringAndHoldsThemCompactly) {
  std::vector<std::string> ids;
  size_t chars = 0;
  for (int i = 0; i < 20000; ++i) {
    ids.push_back("item-" + std::to_string(i * 7919 % 100003));
    chars += ids.back().size();
  }
  ids.push_back("");  // the empty string is a string like any other
  StringTable moved = StringTable::Of(ids);
  const StringTable table = std::move(moved);
  ASSERT_EQ(table.size(), static_cast<int32_t>(ids.size()));
  for (int32_t i = 0; i < table.size(); ++i) {
    ASSERT_EQ(table[i], ids[i]);
    ASSERT_EQ(table.Find(ids[i]), i) << ids[i];
  }
  EXPECT_EQ(table.Find("item-100003"), -1);
  EXPECT_EQ(table.Find("item-"), -1);
  EXPECT_EQ(table.Find(std::string("item-1\0", 7)), -1);
  EXPECT_FALSE(table.contains("nope"));
  EXPECT_EQ(std::vector<std::string>(table.begin(), table.end()), ids);
  EXPECT_LE(table.MemoryBytes(), chars + 11 * ids.size());

  const StringTable repeated = StringTable::Of(std::vector<std::string>{"a", "b", "a"});
  EXPECT_EQ(repeated.size(), 3);
  EXPECT_EQ(repeated[2], "a");
  EXPECT_EQ(repeated.Find("a"), 0);
  EXPECT_EQ(repeated.Find("b"), 1);

  const StringTable empty;
  EXPECT_EQ(empty.size(), 0);
  EXPECT_EQ(empty.Find(""), -1);
  EXPECT_EQ(StringTable::Of(std::vector<std::string>{}).Find("x"), -1);
}

absl::Status FailsWhen(bool fail) {
  return fail ? absl::DataLossError("broken") : absl::OkStatus();
}
absl::StatusOr<int> ValueOrError(bool fail) {
  if (fail) return absl::NotFoundError("missing");
  return 7;
}
absl::Status Chain(bool first, bool second, int* out) {
  RETURN_IF_ERROR(FailsWhen(first));
  ASSIGN_OR_RETURN(const int value, ValueOrError(second));
  *out = value;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateTheFirstErrorAndAssignValues) {
  int out = 0;
  EXPECT_THAT(Chain(false, false, &out), IsOk());
  EXPECT_EQ(out, 7);
  out = 0;
  EXPECT_THAT(Chain(true, false, &out), StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("broken")));
  EXPECT_THAT(Chain(false, true, &out), StatusIs(absl::StatusCode::kNotFound, ::testing::Eq("missing")));
  EXPECT_EQ(out, 0);
}

TEST(StatusMatchersTest, IsOkFailsOnAnErrorAndPrintsIt) {
  EXPECT_NONFATAL_FAILURE(EXPECT_THAT(absl::InternalError("the cause"), IsOk()), "the cause");
  EXPECT_NONFATAL_FAILURE(EXPECT_THAT(ValueOrError(true), IsOk()), "missing");
  EXPECT_NONFATAL_FAILURE(
      EXPECT_THAT(absl::InternalError("x"), StatusIs(absl::StatusCode::kDataLoss, ::testing::_)), "INTERNAL");
}

}  // namespace
}  // namespace twotower
