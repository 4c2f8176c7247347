// Who a STOMP session speaks for. With --auth none a session has no identity (the body's
// `sender` is trusted, as the seed's clients expect); with --auth jwt it is what the token
// proved at CONNECT and never changes for the session's life.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace chatd::chat {

struct Identity {
  std::string user;                // the token's `sub`: stable, unique, never shown
  std::string name;                // shown as `sender`: the `name` claim, else `sub`
  std::vector<std::string> rooms;  // the `rooms` claim: restricted rooms the token opens
  std::int64_t expires_at = 0;     // `exp` in seconds since the epoch; 0: no expiry
};
using IdentityPtr = std::shared_ptr<const Identity>;

// Returns the token of an `Authorization: Bearer <token>` value, or empty. The scheme is
// case-insensitive (RFC 9110 §11.1) and followed by one or more spaces (RFC 6750 §2.1).
inline std::string_view bearer_token_of(std::string_view value) {
  constexpr std::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() || (value[kScheme.size()] != ' ' && value[kScheme.size()] != '\t')) return {};
  for (std::size_t i = 0; i < kScheme.size(); ++i)
    if ((value[i] | 0x20) != kScheme[i]) return {};
  value.remove_prefix(kScheme.size());
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// Presence's name for one person in a room. With a token it is the user and the name to show,
// joined by a unit separator (neither a `sub` nor a sender may hold control characters), so two
// people who chose one name are two members and one person's tabs are one. Without a token
// there is no person but the nickname: the sender itself.
inline std::string member_key(const Identity* who, std::string_view sender) {
  if (!who) return std::string(sender);
  std::string key;
  key.reserve(who->user.size() + 1 + who->name.size());
  key.append(who->user).push_back('\x1f');
  key.append(who->name);
  return key;
}

// The name to show for a member_key: the sender in ENTER, QUIT and member lists.
inline std::string_view member_shown(std::string_view member) {
  auto sep = member.find('\x1f');
  return sep == std::string_view::npos ? member : member.substr(sep + 1);
}

// Proves tokens (--auth jwt). Implementations are shared by every worker thread, so verify()
// must be safe to call concurrently.
class TokenVerifier {
 public:
  virtual ~TokenVerifier() = default;
  // Returns the identity `token` (a compact JWS) proves, or null with the reason in `why`
  // (worded to be shown to the client: "token expired", "bad signature", ...).
  virtual IdentityPtr verify(std::string_view token, std::string& why) const = 0;
  // Returns whether an identity whose token expires at `expires_at` (Identity::expires_at,
  // non-zero) has expired by now, allowing the configured clock skew.
  virtual bool expired(std::int64_t expires_at) const = 0;
};

}  // namespace chatd::chat
