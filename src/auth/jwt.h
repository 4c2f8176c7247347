// Proves JSON Web Tokens (compact JWS) for --auth jwt: HS256 with a shared secret, RS256 and
// ES256 with public keys from a PEM file or a JWKS file (several keys, chosen by `kid`). The
// signature is checked by OpenSSL; this file only decodes, selects the key and checks claims.
//
// Refused, each with its own reason: `alg` none or anything but HS256/RS256/ES256; an `alg`
// that is not the chosen key's (no HMAC with a public key as secret); a `kid` no key has; a bad
// signature; `exp` passed or `nbf` not reached (both with --jwt-clock-skew); `iss`/`aud` other
// than --jwt-issuer/--jwt-audience when set; no `sub`, or one with control characters; a `name`
// that is not a nickname the chat would accept as a sender; no `exp` unless require_exp is off
// (a token that never expires would keep a session open for good).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "chat/identity.h"

namespace chatd::auth {

struct JwtConfig {
  std::string secret_file;      // HS256: the file's bytes (a trailing newline dropped) are the key
  std::string public_key_file;  // RS256 or ES256 (P-256): one PEM public key
  std::string jwks_file;        // RFC 7517 key set: RSA, EC P-256 and oct keys, by kid
  std::string issuer;           // empty: `iss` not checked
  std::string audience;         // empty: `aud` not checked
  std::chrono::seconds clock_skew{30};  // servers' clocks disagree by seconds, not minutes
  std::size_t max_token_bytes = 8192;   // a CONNECT header line holds no more
  std::size_t max_rooms_claim = 1000;   // entries of the `rooms` claim
  std::size_t max_name_bytes = 64;      // the `name` claim becomes `sender`: chat::Limits::max_sender_bytes
  bool require_exp = true;              // --jwt-require-exp
};

// The keys of one load of the configured files; immutable once built.
class KeySet;

class JwtVerifier final : public chat::TokenVerifier {
 public:
  // Loads the keys. Throws std::runtime_error naming the file and what is wrong with it.
  explicit JwtVerifier(JwtConfig cfg);
  ~JwtVerifier() override;

  chat::IdentityPtr verify(std::string_view token, std::string& why) const override;
  bool expired(std::int64_t expires_at) const override;

  // Reads the key files again (SIGHUP): tokens signed by keys added since are accepted, by keys
  // removed are refused. Returns false with the reason in `why`, keeping the old keys, when
  // the files do not load. Any thread.
  bool reload(std::string& why);
  // Returns how many keys are loaded.
  std::size_t key_count() const;

  // Tests: the clock (seconds since the epoch) verify() and expired() use.
  void set_clock(std::function<std::int64_t()> now) { now_ = std::move(now); }

  const JwtConfig& config() const { return cfg_; }

 private:
  std::shared_ptr<const KeySet> keys() const;
  std::int64_t now() const { return now_(); }

  JwtConfig cfg_;
  std::function<std::int64_t()> now_;
  mutable std::mutex mu_;
  std::shared_ptr<const KeySet> keys_;
};

// Returns an HS256 secret file's key: its bytes less trailing newlines. Throws
// std::runtime_error when it cannot be read or holds fewer than 32 bytes (RFC 7518 §3.2).
std::string read_secret_file(const std::string& path);

// Returns an HS256 token over `claims_json` (a JSON object) signed with `secret`, with `kid`
// in its header when not empty. For --auth-dev-mint and tests.
std::string mint_hs256(std::string_view secret, std::string_view claims_json, std::string_view kid = {});

// Returns base64url without padding (RFC 7515 §2), and its inverse (nullopt-like: false when
// `in` is not base64url).
std::string base64url_encode(std::string_view in);
bool base64url_decode(std::string_view in, std::string& out);

}  // namespace chatd::auth
