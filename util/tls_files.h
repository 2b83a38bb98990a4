// Checks of the PEM files a TLS server is given, run at start so that a misconfiguration
// is named and refused there, instead of surfacing as "cannot listen" or as every client
// being rejected later.
#ifndef TWOTOWER_UTIL_TLS_FILES_H_
#define TWOTOWER_UTIL_TLS_FILES_H_

#include <string>

#include "absl/status/status.h"

namespace twotower {

// OK when `cert_chain` holds at least one PEM certificate, `key` a PEM private key that
// matches the first certificate, and (when `client_ca` is not null) `*client_ca` at least
// one PEM certificate. INVALID_ARGUMENT naming the problem otherwise.
absl::Status CheckTlsServerFiles(const std::string& cert_chain, const std::string& key,
                                 const std::string* client_ca);

}  // namespace twotower

#endif  // TWOTOWER_UTIL_TLS_FILES_H_
