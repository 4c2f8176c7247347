// JwtVerifier against tokens signed here with OpenSSL: keys are generated per test run, never
// checked in, and the PEM/JWKS files the verifier reads are written the way an operator would.
#include <gtest/gtest.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <boost/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "auth/jwt.h"

using namespace chatd;
using auth::base64url_decode;
using auth::base64url_encode;

namespace {

// Returns a JwtConfig with what `set` changes (designated initializers would have to name every field).
template <class F>
chatd::auth::JwtConfig config(F set) {
  chatd::auth::JwtConfig c;
  set(c);
  return c;
}

constexpr std::int64_t kNow = 1'800'000'000;
const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";

struct Pkey {
  EVP_PKEY* p = nullptr;
  explicit Pkey(EVP_PKEY* k) : p(k) {}
  Pkey(const Pkey&) = delete;
  ~Pkey() { EVP_PKEY_free(p); }
};

Pkey rsa_key() { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})); }
Pkey ec_key() { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

std::string sign_with(EVP_PKEY* key, std::string_view data, bool ecdsa_raw) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t len = 0;
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (!ecdsa_raw) return sig;
  // DER -> R||S, as JWS wants it.
  const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* s = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(s), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(s), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(s);
  return raw;
}

std::string token(std::string_view alg, EVP_PKEY* key, const boost::json::object& claims, std::string_view kid = {}) {
  boost::json::object h{{"alg", alg}, {"typ", "JWT"}};
  if (!kid.empty()) h["kid"] = kid;
  auto signing = base64url_encode(boost::json::serialize(h)) + "." + base64url_encode(boost::json::serialize(claims));
  return signing + "." + base64url_encode(sign_with(key, signing, alg == "ES256"));
}

std::string pem_of(EVP_PKEY* key) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(b, key);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

std::string bn_param(EVP_PKEY* key, const char* name, std::size_t pad = 0) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string out(pad ? pad : static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return base64url_encode(out);
}

boost::json::object jwk_of(EVP_PKEY* key, std::string_view kid) {
  if (EVP_PKEY_is_a(key, "RSA"))
    return {{"kty", "RSA"}, {"kid", kid}, {"use", "sig"}, {"n", bn_param(key, OSSL_PKEY_PARAM_RSA_N)}, {"e", bn_param(key, OSSL_PKEY_PARAM_RSA_E)}};
  return {{"kty", "EC"}, {"kid", kid}, {"crv", "P-256"}, {"x", bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, 32)},
          {"y", bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32)}};
}

class Jwt : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("chatd-jwt-" + std::to_string(::getpid()) + "-" +
                                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& content) {
    auto p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  std::unique_ptr<auth::JwtVerifier> verifier(auth::JwtConfig cfg) {
    auto v = std::make_unique<auth::JwtVerifier>(std::move(cfg));
    v->set_clock([] { return kNow; });
    return v;
  }
  static boost::json::object claims() { return {{"sub", "u-42"}, {"name", "짱구"}, {"exp", kNow + 600}}; }
  std::filesystem::path dir_;
};

TEST_F(Jwt, Base64urlRoundTripsAndRefusesOtherAlphabets) {
  for (std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\xff\xfe\x00", 3)}) {
    std::string back;
    ASSERT_TRUE(base64url_decode(base64url_encode(s), back));
    EXPECT_EQ(back, s);
  }
  std::string out;
  EXPECT_FALSE(base64url_decode("Zm9v+/", out));
  EXPECT_FALSE(base64url_decode("Zg==", out));
  EXPECT_FALSE(base64url_decode("Zh", out));  // stray bits: not the canonical encoding
}

TEST_F(Jwt, Hs256GoodTokenGivesIdentity) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret + "\n"); }));
  auto c = claims();
  c["rooms"] = boost::json::array{"0B7A4C2E-1F3D-4E5A-8B9C-0D1E2F3A4B5C"};
  std::string why;
  auto id = v->verify(auth::mint_hs256(kSecret, boost::json::serialize(c)), why);
  ASSERT_TRUE(id) << why;
  EXPECT_EQ(id->user, "u-42");
  EXPECT_EQ(id->name, "짱구");
  EXPECT_EQ(id->expires_at, kNow + 600);
  ASSERT_EQ(id->rooms.size(), 1u);
  EXPECT_EQ(id->rooms[0], "0b7a4c2e-1f3d-4e5a-8b9c-0d1e2f3a4b5c");
}

TEST_F(Jwt, NameFallsBackToSub) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); }));
  std::string why;
  auto id = v->verify(auth::mint_hs256(kSecret, R"({"sub":"alice","exp":1900000000})"), why);
  ASSERT_TRUE(id) << why;
  EXPECT_EQ(id->name, "alice");
}

TEST_F(Jwt, TokenWithoutExpRefusedUnlessAllowed) {
  std::string why;
  auto strict = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); }));
  EXPECT_FALSE(strict->verify(auth::mint_hs256(kSecret, R"({"sub":"alice"})"), why));
  EXPECT_EQ(why, "token has no exp");
  auto lax = verifier(config([&](auth::JwtConfig& c) {
    c.secret_file = write("s", kSecret);
    c.require_exp = false;
  }));
  auto id = lax->verify(auth::mint_hs256(kSecret, R"({"sub":"alice"})"), why);
  ASSERT_TRUE(id) << why;
  EXPECT_EQ(id->expires_at, 0);
}

TEST_F(Jwt, SubAndNameMustBeShowable) {
  auto v = verifier(config([&](auth::JwtConfig& c) {
    c.secret_file = write("s", kSecret);
    c.max_name_bytes = 16;
  }));
  std::string why;
  auto mint = [](const boost::json::object& extra) {
    boost::json::object c{{"exp", 1900000000}};
    for (const auto& kv : extra) c[kv.key()] = kv.value();
    return auth::mint_hs256(kSecret, boost::json::serialize(c));
  };
  EXPECT_FALSE(v->verify(mint({{"sub", "a\x1f" "b"}}), why));
  EXPECT_EQ(why, "sub has control characters");
  EXPECT_FALSE(v->verify(mint({{"sub", "a"}, {"name", "tab\there"}}), why));
  EXPECT_EQ(why.rfind("name ", 0), 0u) << why;
  EXPECT_FALSE(v->verify(mint({{"sub", "a"}, {"name", std::string(17, 'x')}}), why));
  EXPECT_FALSE(v->verify(mint({{"sub", "a"}, {"name", "   "}}), why));
  // The shown name is trimmed as a typed sender is, so the two compare equal.
  auto id = v->verify(mint({{"sub", "a"}, {"name", "  짱구 "}}), why);
  ASSERT_TRUE(id) << why;
  EXPECT_EQ(id->name, "짱구");
  // A name that is no string is refused, not replaced by the sub (s19 probe); null and "" are
  // "no name" and the sub is shown, whose own fault is then told as the sub's.
  for (const auto& bad : {boost::json::value(42), boost::json::value(true), boost::json::value(boost::json::array{})}) {
    EXPECT_FALSE(v->verify(mint({{"sub", "a"}, {"name", bad}}), why)) << boost::json::serialize(bad);
    EXPECT_EQ(why, "name must be a string");
  }
  for (const auto& none : {boost::json::value(nullptr), boost::json::value("")}) {
    auto shown = v->verify(mint({{"sub", "alice"}, {"name", none}}), why);
    ASSERT_TRUE(shown) << why;
    EXPECT_EQ(shown->name, "alice");
  }
  EXPECT_FALSE(v->verify(mint({{"sub", "a\u202eb"}}), why));  // a bidi override
  EXPECT_EQ(why.rfind("sub (shown as the name", 0), 0u) << why;
}

TEST_F(Jwt, BadSignatureRefused) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); }));
  std::string why;
  auto t = auth::mint_hs256(kSecret + "x", boost::json::serialize(claims()));
  EXPECT_FALSE(v->verify(t, why));
  EXPECT_EQ(why, "bad signature");
  // A claim changed after signing.
  auto good = auth::mint_hs256(kSecret, boost::json::serialize(claims()));
  auto d1 = good.find('.'), d2 = good.rfind('.');
  auto forged = good.substr(0, d1 + 1) + base64url_encode(R"({"sub":"admin","exp":1900000000})") + good.substr(d2);
  EXPECT_FALSE(v->verify(forged, why));
  EXPECT_EQ(why, "bad signature");
}

TEST_F(Jwt, AlgNoneRefused) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); }));
  std::string why;
  auto t = base64url_encode(R"({"alg":"none"})") + "." + base64url_encode(boost::json::serialize(claims())) + ".";
  EXPECT_FALSE(v->verify(t, why));
  EXPECT_EQ(why, "unsigned tokens (alg none) are refused");
  EXPECT_FALSE(v->verify(base64url_encode(R"({"alg":"HS512"})") + "." + base64url_encode("{}") + ".", why));
  EXPECT_NE(why.find("not accepted"), std::string::npos);
  // The refusal quotes the token's alg into an ERROR frame: printable ASCII, 16 bytes at most,
  // so a line break cannot end the header and a cut cannot split a character.
  EXPECT_FALSE(v->verify(base64url_encode("{\"alg\":\"x\\n\\nINJ:1\\n\"}") + "." + base64url_encode("{}") + ".", why));
  EXPECT_EQ(why, "alg x??INJ:1? is not accepted (HS256, RS256, ES256)");
  EXPECT_FALSE(v->verify(base64url_encode("{\"alg\":\"abcdefghijklmno\u00e9\"}") + "." + base64url_encode("{}") + ".", why));
  EXPECT_EQ(why, "alg abcdefghijklmno? is not accepted (HS256, RS256, ES256)");
}

TEST_F(Jwt, AlgConfusionRefused) {
  // The classic attack: HS256 signed with the RSA public key's PEM as the HMAC secret.
  auto rsa = rsa_key();
  auto pem = pem_of(rsa.p);
  auto v = verifier(config([&](auth::JwtConfig& c) { c.public_key_file = write("k.pem", pem); }));
  std::string why;
  EXPECT_FALSE(v->verify(auth::mint_hs256(pem, boost::json::serialize(claims())), why));
  EXPECT_EQ(why, "alg HS256 does not fit the server's key");
  // And the right alg with the right key works.
  auto id = v->verify(token("RS256", rsa.p, claims()), why);
  EXPECT_TRUE(id) << why;
  // ES256 claimed against an RSA key.
  auto ec = ec_key();
  EXPECT_FALSE(v->verify(token("ES256", ec.p, claims()), why));
  EXPECT_EQ(why, "alg ES256 does not fit the server's key");
}

TEST_F(Jwt, Es256WithPem) {
  auto ec = ec_key();
  auto v = verifier(config([&](auth::JwtConfig& c) { c.public_key_file = write("k.pem", pem_of(ec.p)); }));
  std::string why;
  auto id = v->verify(token("ES256", ec.p, claims()), why);
  ASSERT_TRUE(id) << why;
  EXPECT_EQ(id->user, "u-42");
  auto other = ec_key();
  EXPECT_FALSE(v->verify(token("ES256", other.p, claims()), why));
  EXPECT_EQ(why, "bad signature");
}

TEST_F(Jwt, ExpiredAndNotYetValid) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); c.clock_skew = std::chrono::seconds(30); }));
  std::string why;
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":)" + std::to_string(kNow - 31) + "}"), why));
  EXPECT_EQ(why, "token expired");
  EXPECT_TRUE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":)" + std::to_string(kNow - 29) + "}"), why)) << "within skew";
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"nbf":)" + std::to_string(kNow + 31) + "}"), why));
  EXPECT_EQ(why, "token not yet valid (nbf)");
  EXPECT_TRUE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"nbf":)" + std::to_string(kNow + 29) + "}"), why));
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":"soon"})"), why));
  EXPECT_TRUE(v->expired(kNow - 30));
  EXPECT_FALSE(v->expired(kNow - 29));
  // The far ends of int64: exp + skew used to overflow (UB; in practice "expired").
  EXPECT_TRUE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":9223372036854775807})"), why)) << why;
  EXPECT_FALSE(v->expired(INT64_MAX));
  EXPECT_TRUE(v->expired(INT64_MIN));
}

TEST_F(Jwt, IssuerAndAudience) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); c.issuer = "https://id.example"; c.audience = "chatd"; }));
  std::string why;
  EXPECT_TRUE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"iss":"https://id.example","aud":"chatd"})"), why)) << why;
  EXPECT_TRUE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"iss":"https://id.example","aud":["x","chatd"]})"), why)) << why;
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"iss":"https://evil.example","aud":"chatd"})"), why));
  EXPECT_EQ(why, "wrong issuer (iss)");
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"iss":"https://id.example","aud":"other"})"), why));
  EXPECT_EQ(why, "wrong audience (aud)");
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"aud":"chatd"})"), why));
  EXPECT_EQ(why, "wrong issuer (iss)");
}

TEST_F(Jwt, MalformedTokensRefused) {
  auto v = verifier(config([&](auth::JwtConfig& c) { c.secret_file = write("s", kSecret); }));
  std::string why;
  for (std::string t : {"", "abc", "a.b", "a.b.c.d", "!!.e30.x", "e30.e30.e30"}) EXPECT_FALSE(v->verify(t, why)) << t;
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"name":"no sub","exp":1900000000})"), why));
  EXPECT_EQ(why, "token has no sub");
  EXPECT_FALSE(v->verify(auth::mint_hs256(kSecret, R"({"sub":"a","exp":1900000000,"rooms":["not-a-room"]})"), why));
  EXPECT_FALSE(v->verify(std::string(9000, 'a'), why));
  EXPECT_EQ(why, "token too long");
}

TEST_F(Jwt, JwksChoosesByKidAndRefusesUnknownKid) {
  auto a = rsa_key();
  auto b = ec_key();
  boost::json::object set{{"keys", boost::json::array{jwk_of(a.p, "rsa-1"), jwk_of(b.p, "ec-1")}}};
  auto v = verifier(config([&](auth::JwtConfig& c) { c.jwks_file = write("jwks.json", boost::json::serialize(set)); }));
  EXPECT_EQ(v->key_count(), 2u);
  std::string why;
  EXPECT_TRUE(v->verify(token("RS256", a.p, claims(), "rsa-1"), why)) << why;
  EXPECT_TRUE(v->verify(token("ES256", b.p, claims(), "ec-1"), why)) << why;
  EXPECT_FALSE(v->verify(token("RS256", a.p, claims(), "rsa-9"), why));
  EXPECT_EQ(why, "unknown kid");
  EXPECT_FALSE(v->verify(token("RS256", a.p, claims()), why));
  EXPECT_EQ(why, "token has no kid and the key set has several keys");
  // The kid picks the EC key; an RS256 token cannot use it.
  EXPECT_FALSE(v->verify(token("RS256", a.p, claims(), "ec-1"), why));
  EXPECT_EQ(why, "alg RS256 does not fit the server's key");
}

TEST_F(Jwt, RotatedKeysOnReload) {
  auto old_key = rsa_key();
  auto new_key = rsa_key();
  auto path = write("jwks.json", boost::json::serialize(boost::json::object{{"keys", boost::json::array{jwk_of(old_key.p, "2026-01")}}}));
  auto v = verifier(config([&](auth::JwtConfig& c) { c.jwks_file = path; }));
  std::string why;
  EXPECT_TRUE(v->verify(token("RS256", old_key.p, claims(), "2026-01"), why)) << why;
  EXPECT_FALSE(v->verify(token("RS256", new_key.p, claims(), "2026-02"), why));
  // Rotation, step 1: both keys published.
  write("jwks.json", boost::json::serialize(boost::json::object{
                         {"keys", boost::json::array{jwk_of(old_key.p, "2026-01"), jwk_of(new_key.p, "2026-02")}}}));
  ASSERT_TRUE(v->reload(why)) << why;
  EXPECT_TRUE(v->verify(token("RS256", old_key.p, claims(), "2026-01"), why)) << why;
  EXPECT_TRUE(v->verify(token("RS256", new_key.p, claims(), "2026-02"), why)) << why;
  // Step 2: the old key retired.
  write("jwks.json", boost::json::serialize(boost::json::object{{"keys", boost::json::array{jwk_of(new_key.p, "2026-02")}}}));
  ASSERT_TRUE(v->reload(why)) << why;
  EXPECT_FALSE(v->verify(token("RS256", old_key.p, claims(), "2026-01"), why));
  EXPECT_EQ(why, "unknown kid");
  // A broken file keeps the keys that work.
  write("jwks.json", "{not json");
  EXPECT_FALSE(v->reload(why));
  EXPECT_TRUE(v->verify(token("RS256", new_key.p, claims(), "2026-02"), why)) << why;
}

TEST_F(Jwt, BadKeyFilesFailAtStartUp) {
  EXPECT_THROW(auth::JwtVerifier(config([&](auth::JwtConfig& c) { c.secret_file = write("short", "too short"); })), std::runtime_error);
  EXPECT_THROW(auth::JwtVerifier(config([&](auth::JwtConfig& c) { c.public_key_file = write("x.pem", "not pem"); })), std::runtime_error);
  EXPECT_THROW(auth::JwtVerifier(config([&](auth::JwtConfig& c) { c.jwks_file = write("j", R"({"keys":[{"kty":"RSA","kid":"a"}]})"); })), std::runtime_error);
  EXPECT_THROW(auth::JwtVerifier(config([&](auth::JwtConfig& c) { c.secret_file = (dir_ / "missing").string(); })), std::runtime_error);
  EXPECT_THROW(auth::JwtVerifier(auth::JwtConfig()), std::runtime_error);
}

}  // namespace
