// Shared helpers for the tests.
#ifndef TWOTOWER_TESTS_TEST_UTIL_H_
#define TWOTOWER_TESTS_TEST_UTIL_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace twotower::testing {

// A fresh directory, removed with its contents when the object dies.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "twotower-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data()) != nullptr ? pattern : std::string();
  }
  ~ScopedTempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The source tree (configs/ etc.) and the build tree (binaries), compiled in by CMake.
inline std::string SourceDir() { return TWOTOWER_SOURCE_DIR; }
inline std::string BinaryDir() { return TWOTOWER_BINARY_DIR; }

// Expects two searches' answers (one list of results per query, best first) to be the
// same: as many lists, each as long, and at every rank the same `key` (e.g. the row or
// id) and the same score.
template <typename Result, typename Key>
void ExpectSameAnswers(const std::vector<std::vector<Result>>& a, const std::vector<std::vector<Result>>& b,
                       Key Result::*key) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t q = 0; q < a.size(); ++q) {
    ASSERT_EQ(a[q].size(), b[q].size()) << "query " << q;
    for (size_t r = 0; r < a[q].size(); ++r) {
      EXPECT_EQ(a[q][r].*key, b[q][r].*key) << "query " << q << " rank " << r;
      EXPECT_EQ(a[q][r].score, b[q][r].score) << "query " << q << " rank " << r;
    }
  }
}

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_TEST_UTIL_H_
