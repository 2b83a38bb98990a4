#include "util/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace twotower {

namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Certificate = std::unique_ptr<X509, X509Free>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of `pem` (null if it has none), and how many it holds.
Certificate FirstCertificate(const std::string& pem, int* count) {
  *count = 0;
  Bio bio = MemoryBio(pem);
  Certificate first;
  while (bio != nullptr) {
    Certificate cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    if (first == nullptr) first = std::move(cert);
    ++*count;
  }
  ERR_clear_error();  // the read past the last certificate leaves an error queued
  return first;
}

}  // namespace

absl::Status CheckTlsServerFiles(const std::string& cert_chain, const std::string& key,
                                 const std::string* client_ca) {
  int certificates = 0;
  const Certificate leaf = FirstCertificate(cert_chain, &certificates);
  if (leaf == nullptr) {
    return absl::InvalidArgumentError("--tls_cert holds no PEM certificate");
  }
  Bio key_bio = MemoryBio(key);
  const std::unique_ptr<EVP_PKEY, KeyFree> private_key(
      key_bio == nullptr ? nullptr
                         : PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (private_key == nullptr) {
    return absl::InvalidArgumentError(
        "--tls_key holds no PEM private key (or an encrypted one, which needs a passphrase)");
  }
  if (X509_check_private_key(leaf.get(), private_key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "--tls_key does not match the certificate of --tls_cert (the first in the chain)");
  }
  if (client_ca != nullptr) {
    int cas = 0;
    if (FirstCertificate(*client_ca, &cas) == nullptr) {
      return absl::InvalidArgumentError(
          "--tls_client_ca holds no PEM certificate: no client could ever be verified");
    }
  }
  return absl::OkStatus();
}

}  // namespace twotower
