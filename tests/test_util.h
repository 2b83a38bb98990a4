// Shared helpers for the tests.
#ifndef TWOTOWER_TESTS_TEST_UTIL_H_
#define TWOTOWER_TESTS_TEST_UTIL_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

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

}  // namespace twotower::testing

#endif  // TWOTOWER_TESTS_TEST_UTIL_H_
