#include "auth/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "chat/rules.h"

namespace chatd::auth {
namespace {

enum class Alg { hs256, rs256, es256 };

std::string_view to_string(Alg a) {
  switch (a) {
    case Alg::hs256: return "HS256";
    case Alg::rs256: return "RS256";
    case Alg::es256: return "ES256";
  }
  return "?";
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

struct Key {
  std::string kid;     // empty: a key from --jwt-secret-file or --jwt-public-key-file, any kid
  Alg alg = Alg::hs256;
  std::string secret;  // HS256
  Pkey pkey;           // RS256, ES256
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Returns the algorithm a public key is for: RS256 for RSA, ES256 for EC on P-256.
Alg alg_of(EVP_PKEY* p, const std::string& where) {
  if (EVP_PKEY_is_a(p, "RSA")) {
    if (EVP_PKEY_get_bits(p) < 2048) throw std::runtime_error(where + ": RSA keys shorter than 2048 bits are refused");
    return Alg::rs256;
  }
  if (EVP_PKEY_is_a(p, "EC")) {
    char group[64] = {0};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(p, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) &&
        std::string_view(group) == "prime256v1")
      return Alg::es256;
    throw std::runtime_error(where + ": only EC keys on P-256 (ES256) are supported");
  }
  throw std::runtime_error(where + ": only RSA (RS256) and EC P-256 (ES256) public keys are supported");
}

Pkey read_pem(const std::string& path) {
  auto pem = read_file(path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  Pkey p(PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  if (!p) throw std::runtime_error(path + ": not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  return p;
}

std::string jwk_string(const boost::json::object& k, std::string_view name, const std::string& where) {
  auto v = k.if_contains(name);
  if (!v || !v->is_string()) throw std::runtime_error(where + ": member \"" + std::string(name) + "\" missing");
  return std::string(v->get_string());
}

std::string jwk_bytes(const boost::json::object& k, std::string_view name, const std::string& where) {
  std::string out;
  if (!base64url_decode(jwk_string(k, name, where), out))
    throw std::runtime_error(where + ": member \"" + std::string(name) + "\" is not base64url");
  return out;
}

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};

// Builds a public key from JWK parameters through OpenSSL 3's EVP_PKEY_fromdata.
Pkey jwk_public_key(const boost::json::object& k, const std::string& kty, const std::string& where) {
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  std::unique_ptr<BIGNUM, BnFree> n, e;
  std::string point;
  const char* type = nullptr;
  if (kty == "RSA") {
    type = "RSA";
    auto nb = jwk_bytes(k, "n", where), eb = jwk_bytes(k, "e", where);
    n.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(nb.data()), static_cast<int>(nb.size()), nullptr));
    e.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(eb.data()), static_cast<int>(eb.size()), nullptr));
    if (!n || !e || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
        !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()))
      throw std::runtime_error(where + ": bad RSA parameters");
  } else {
    type = "EC";
    if (jwk_string(k, "crv", where) != "P-256") throw std::runtime_error(where + ": only EC keys on P-256 are supported");
    auto x = jwk_bytes(k, "x", where), y = jwk_bytes(k, "y", where);
    if (x.size() != 32 || y.size() != 32) throw std::runtime_error(where + ": P-256 coordinates are 32 bytes");
    point = "\x04" + x + y;  // uncompressed SEC1 point
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()))
      throw std::runtime_error(where + ": bad EC parameters");
  }
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld.get());
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* raw = nullptr;
  const bool ok = params && ctx && EVP_PKEY_fromdata_init(ctx) > 0 &&
                  EVP_PKEY_fromdata(ctx, &raw, EVP_PKEY_PUBLIC_KEY, params) > 0;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  if (!ok) throw std::runtime_error(where + ": OpenSSL refused the key");
  return Pkey(raw);
}

std::vector<Key> read_jwks(const std::string& path) {
  boost::system::error_code ec;
  auto v = boost::json::parse(read_file(path), ec);
  if (ec || !v.is_object() || !v.get_object().if_contains("keys") || !v.get_object().at("keys").is_array())
    throw std::runtime_error(path + ": not a JWKS ({\"keys\":[...]})");
  std::vector<Key> out;
  std::size_t i = 0;
  for (const auto& jv : v.get_object().at("keys").get_array()) {
    const std::string where = path + ": keys[" + std::to_string(i++) + "]";
    if (!jv.is_object()) throw std::runtime_error(where + ": not an object");
    const auto& k = jv.get_object();
    if (auto use = k.if_contains("use"); use && use->is_string() && use->get_string() != "sig") continue;  // not for signatures
    Key key;
    key.kid = jwk_string(k, "kid", where);
    const auto kty = jwk_string(k, "kty", where);
    if (kty == "oct") {
      key.alg = Alg::hs256;
      key.secret = jwk_bytes(k, "k", where);
      if (key.secret.size() < 32) throw std::runtime_error(where + ": HS256 keys need at least 32 bytes");
    } else if (kty == "RSA" || kty == "EC") {
      key.pkey = jwk_public_key(k, kty, where);
      key.alg = alg_of(key.pkey.get(), where);
    } else {
      throw std::runtime_error(where + ": kty must be RSA, EC or oct");
    }
    // A key that names its alg is used for that alg only.
    if (auto a = k.if_contains("alg"); a && a->is_string() && a->get_string() != to_string(key.alg))
      throw std::runtime_error(where + ": alg " + std::string(a->get_string()) + " does not fit a " + kty + " key");
    out.push_back(std::move(key));
  }
  if (out.empty()) throw std::runtime_error(path + ": no signing keys");
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

// JWS ES256 signatures are R||S (32 bytes each); OpenSSL verifies DER.
std::string es256_to_der(std::string_view sig) {
  if (sig.size() != 64) return {};
  ECDSA_SIG* s = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()), 32, nullptr);
  BIGNUM* ss = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()) + 32, 32, nullptr);
  std::string out;
  if (s && r && ss && ECDSA_SIG_set0(s, r, ss)) {
    r = ss = nullptr;  // owned by s now
    unsigned char* der = nullptr;
    int len = i2d_ECDSA_SIG(s, &der);
    if (len > 0) out.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
  }
  BN_free(r);
  BN_free(ss);
  ECDSA_SIG_free(s);
  return out;
}

bool verify_signature(const Key& k, std::string_view signed_part, std::string_view sig) {
  if (k.alg == Alg::hs256) {
    auto mac = hmac_sha256(k.secret, signed_part);
    return sig.size() == mac.size() && CRYPTO_memcmp(sig.data(), mac.data(), mac.size()) == 0;
  }
  std::string der;
  if (k.alg == Alg::es256) {
    der = es256_to_der(sig);
    if (der.empty()) return false;
    sig = der;
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, k.pkey.get()) == 1 &&
                  EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                                   reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

// Returns claim `name` as a whole number of seconds; false when present but not a number.
bool time_claim(const boost::json::object& o, std::string_view name, std::optional<std::int64_t>& out) {
  auto v = o.if_contains(name);
  if (!v) return true;
  if (v->is_int64()) out = v->get_int64();
  else if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) out = static_cast<std::int64_t>(v->get_uint64());
  else if (v->is_double() && v->get_double() > -9e15 && v->get_double() < 9e15) out = static_cast<std::int64_t>(v->get_double());
  else return false;
  return true;
}

}  // namespace

class KeySet {
 public:
  std::vector<Key> keys;
};

std::string base64url_encode(std::string_view in) {
  static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    auto n = (std::uint32_t(std::uint8_t(in[i])) << 16) | (std::uint32_t(std::uint8_t(in[i + 1])) << 8) | std::uint8_t(in[i + 2]);
    out += tbl[(n >> 18) & 63];
    out += tbl[(n >> 12) & 63];
    out += tbl[(n >> 6) & 63];
    out += tbl[n & 63];
  }
  if (i < in.size()) {
    auto n = std::uint32_t(std::uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) n |= std::uint32_t(std::uint8_t(in[i + 1])) << 8;
    out += tbl[(n >> 18) & 63];
    out += tbl[(n >> 12) & 63];
    if (i + 1 < in.size()) out += tbl[(n >> 6) & 63];
  }
  return out;
}

bool base64url_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 == 1) return false;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    else return false;  // padding, '+', '/' or anything else: not base64url
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return (acc & ((1u << bits) - 1)) == 0;  // no stray bits: one encoding per byte string
}

std::string read_secret_file(const std::string& path) {
  auto s = read_file(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.size() < 32) throw std::runtime_error(path + ": an HS256 secret needs at least 32 bytes (RFC 7518 §3.2)");
  return s;
}

namespace {

std::shared_ptr<const KeySet> load_keys(const JwtConfig& cfg) {
  auto set = std::make_shared<KeySet>();
  if (!cfg.secret_file.empty()) {
    Key k;
    k.alg = Alg::hs256;
    k.secret = read_secret_file(cfg.secret_file);
    set->keys.push_back(std::move(k));
  }
  if (!cfg.public_key_file.empty()) {
    Key k;
    k.pkey = read_pem(cfg.public_key_file);
    k.alg = alg_of(k.pkey.get(), cfg.public_key_file);
    set->keys.push_back(std::move(k));
  }
  if (!cfg.jwks_file.empty())
    for (auto& k : read_jwks(cfg.jwks_file)) set->keys.push_back(std::move(k));
  if (set->keys.empty())
    throw std::runtime_error("--auth jwt needs a key: --jwt-secret-file, --jwt-public-key-file or --jwt-jwks-file");
  return set;
}

}  // namespace

JwtVerifier::JwtVerifier(JwtConfig cfg)
    : cfg_(std::move(cfg)),
      now_([] {
        return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      }),
      keys_(load_keys(cfg_)) {}

JwtVerifier::~JwtVerifier() = default;

std::shared_ptr<const KeySet> JwtVerifier::keys() const {
  std::lock_guard lock(mu_);
  return keys_;
}

bool JwtVerifier::reload(std::string& why) {
  try {
    auto fresh = load_keys(cfg_);
    std::lock_guard lock(mu_);
    keys_ = std::move(fresh);
    return true;
  } catch (const std::exception& e) {
    why = e.what();
    return false;
  }
}

std::size_t JwtVerifier::key_count() const { return keys()->keys.size(); }

// Written as now - skew: exp may be any int64, and exp + skew could overflow.
bool JwtVerifier::expired(std::int64_t expires_at) const { return now() - cfg_.clock_skew.count() >= expires_at; }

chat::IdentityPtr JwtVerifier::verify(std::string_view token, std::string& why) const {
  auto fail = [&why](std::string reason) {
    why = std::move(reason);
    return chat::IdentityPtr();
  };
  if (token.size() > cfg_.max_token_bytes) return fail("token too long");
  auto d1 = token.find('.');
  auto d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return fail("malformed token (a JWT is three base64url parts joined by dots)");
  std::string header_json, payload_json, sig;
  if (!base64url_decode(token.substr(0, d1), header_json) || !base64url_decode(token.substr(d1 + 1, d2 - d1 - 1), payload_json) ||
      !base64url_decode(token.substr(d2 + 1), sig))
    return fail("malformed token (not base64url)");

  boost::system::error_code ec;
  auto hv = boost::json::parse(header_json, ec);
  if (ec || !hv.is_object()) return fail("malformed token header");
  const auto& h = hv.get_object();
  auto algv = h.if_contains("alg");
  if (!algv || !algv->is_string()) return fail("token header has no alg");
  std::string_view alg_name = algv->get_string();
  Alg alg;
  if (alg_name == "HS256") alg = Alg::hs256;
  else if (alg_name == "RS256") alg = Alg::rs256;
  else if (alg_name == "ES256") alg = Alg::es256;
  else if (alg_name == "none" || alg_name == "None" || alg_name == "NONE") return fail("unsigned tokens (alg none) are refused");
  else {
    // Whatever the token says goes into an ERROR frame: printable ASCII only, and short.
    std::string shown(alg_name.substr(0, 16));
    std::replace_if(shown.begin(), shown.end(), [](char c) { return c < 0x20 || c > 0x7e; }, '?');
    return fail("alg " + shown + " is not accepted (HS256, RS256, ES256)");
  }
  if (h.if_contains("crit")) return fail("token header has crit extensions this server does not know");
  std::string_view kid;
  if (auto k = h.if_contains("kid")) {
    if (!k->is_string()) return fail("token header's kid is not a string");
    kid = k->get_string();
  }

  // The key decides the algorithm, not the token: only keys made for `alg` are tried. A kid
  // picks the key set's key of that kid; keys from the single-key files have none and serve
  // any token of their algorithm.
  auto set = keys();
  std::size_t keyed = 0;
  bool kid_matches = false;
  for (const auto& k : set->keys) {
    keyed += !k.kid.empty();
    kid_matches = kid_matches || (!kid.empty() && k.kid == kid);
  }
  auto candidate = [&](const Key& k) {
    if (k.kid.empty()) return !kid_matches;
    if (!kid.empty()) return k.kid == kid;
    return keyed == 1;  // a key set of one key needs no kid
  };
  bool some_key = false, verified = false;
  const std::string_view signed_part = token.substr(0, d2);
  for (const auto& k : set->keys) {
    if (!candidate(k) || k.alg != alg) continue;
    some_key = true;
    if (verify_signature(k, signed_part, sig)) {
      verified = true;
      break;
    }
  }
  if (!some_key) {
    if (!kid.empty() && !kid_matches && keyed) return fail("unknown kid");
    if (kid.empty() && keyed > 1) return fail("token has no kid and the key set has several keys");
    return fail("alg " + std::string(alg_name) + " does not fit the server's key");
  }
  if (!verified) return fail("bad signature");

  auto pv = boost::json::parse(payload_json, ec);
  if (ec || !pv.is_object()) return fail("malformed token claims");
  const auto& c = pv.get_object();
  std::optional<std::int64_t> exp, nbf;
  if (!time_claim(c, "exp", exp) || !time_claim(c, "nbf", nbf)) return fail("exp and nbf must be numbers");
  const auto now = this->now();
  const auto skew = cfg_.clock_skew.count();
  if (!exp && cfg_.require_exp) return fail("token has no exp");
  if (exp && expired(*exp)) return fail("token expired");
  if (nbf && now + skew < *nbf) return fail("token not yet valid (nbf)");
  if (!cfg_.issuer.empty()) {
    auto iss = c.if_contains("iss");
    if (!iss || !iss->is_string() || iss->get_string() != cfg_.issuer) return fail("wrong issuer (iss)");
  }
  if (!cfg_.audience.empty()) {
    bool ok = false;
    if (auto aud = c.if_contains("aud")) {
      if (aud->is_string()) ok = aud->get_string() == cfg_.audience;
      else if (aud->is_array())
        for (const auto& a : aud->get_array()) ok = ok || (a.is_string() && a.get_string() == cfg_.audience);
    }
    if (!ok) return fail("wrong audience (aud)");
  }
  auto sub = c.if_contains("sub");
  if (!sub || !sub->is_string() || sub->get_string().empty()) return fail("token has no sub");
  if (sub->get_string().size() > 256) return fail("sub too long");
  // Presence joins a member's user and name with a control character (chat::member_key).
  for (unsigned char ch : sub->get_string())
    if (ch < 0x20 || ch == 0x7f) return fail("sub has control characters");
  auto id = std::make_shared<chat::Identity>();
  id->user = sub->get_string();
  std::string_view shown = id->user;
  // null or "": as if absent (identity providers send both for "no name").
  const auto* n = c.if_contains("name");
  if (n && !n->is_null() && !n->is_string()) return fail("name must be a string");
  const bool named = n && n->is_string() && !n->get_string().empty();
  if (named) shown = n->get_string();
  // The shown name is every message's sender, checked like a sender the client typed; without
  // a name it is the sub, and the reason says so.
  std::string name_why;
  auto name = chat::check_name(shown, cfg_.max_name_bytes, name_why);
  if (!name) return fail(std::string(named ? "name " : "sub (shown as the name: there is no name) ") + name_why);
  id->name = std::move(*name);
  if (auto r = c.if_contains("rooms")) {
    if (!r->is_array() || r->get_array().size() > cfg_.max_rooms_claim)
      return fail("rooms must be an array of at most " + std::to_string(cfg_.max_rooms_claim) + " room ids");
    for (const auto& x : r->get_array()) {
      if (!x.is_string() || !chat::is_room_id(x.get_string())) return fail("rooms must hold room ids (UUIDs)");
      id->rooms.push_back(chat::canonical_room_id(x.get_string()));
    }
  }
  id->expires_at = exp.value_or(0);
  return id;
}

std::string mint_hs256(std::string_view secret, std::string_view claims_json, std::string_view kid) {
  std::string header = R"({"alg":"HS256","typ":"JWT")";
  if (!kid.empty()) header += ",\"kid\":" + boost::json::serialize(boost::json::string(kid));
  header += "}";
  std::string signing = base64url_encode(header) + "." + base64url_encode(claims_json);
  return signing + "." + base64url_encode(hmac_sha256(secret, signing));
}

}  // namespace chatd::auth
