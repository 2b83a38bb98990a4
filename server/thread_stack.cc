// The minimum stack of threads that libraries of this process create with an explicit
// stack size. Debian's civetweb (under prometheus-cpp's metrics exposer) asks for 100 KiB
// per worker thread, a compile-time choice of its build; answering a scrape goes through
// glibc's vsnprintf, whose positional-argument path alone takes a large part of that, and
// an AddressSanitizer build overflowed it on every scrape. The executable's definition of
// pthread_attr_setstacksize takes precedence over libc's for every shared library that
// calls it, so raising small requests here fixes the size for all of them; glibc's own
// callers and threads created without a size (gRPC's, the default 8 MiB) are unaffected.
// Linked into twotower_server only.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>

namespace {

constexpr size_t kMinimumThreadStack = size_t{1} << 20;

using SetStackSize = int (*)(pthread_attr_t*, size_t);

SetStackSize RealSetStackSize() {
  static const SetStackSize real =
      reinterpret_cast<SetStackSize>(::dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real;
}

}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stacksize) {
  const SetStackSize real = RealSetStackSize();
  if (real == nullptr) return ENOSYS;
  return real(attr, std::max(stacksize, kMinimumThreadStack));
}
