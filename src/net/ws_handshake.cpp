#include "net/ws_handshake.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

namespace chatd::net {

std::string ws_accept_key(std::string_view client_key) {
  static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input;
  input.reserve(client_key.size() + guid.size());
  input.append(client_key).append(guid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  // EVP_EncodeBlock writes 4 characters per 3 bytes, padded, and a NUL: 28 + 1 for 20 bytes.
  unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

}  // namespace chatd::net
