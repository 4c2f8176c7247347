// --allowed-origins: which web pages may drive a connection to chatd. A browser sends Origin
// on a WebSocket handshake, on SockJS's XHRs and on cross-site fetches; a page on another site
// must not be able to open a logged-in user's connection (cross-site WebSocket hijacking).
// Clients that are not browsers send no Origin and are not concerned.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace chatd::net {

class AllowedOrigins {
 public:
  // Default: the server's own origin plus pages on localhost (the demo).
  AllowedOrigins() = default;
  // `spec`: "*" (any origin), "default" (same origin plus localhost), or a comma-separated list
  // of origins ("https://app.example.com,http://localhost:3000"), allowed besides the server's
  // own origin. Throws std::invalid_argument for an entry that is not scheme://host[:port].
  static AllowedOrigins parse(std::string_view spec);

  // Returns whether a request carrying `origin` (empty: none) to a server reached as `host`
  // (the Host header) may proceed.
  bool allows(std::string_view origin, std::string_view host) const;

  // Returns the spec as --help shows it.
  const std::string& spec() const { return spec_; }

 private:
  bool any_ = false;
  bool localhost_ = true;
  std::vector<std::string> listed_;  // lower case, no trailing slash
  std::string spec_ = "default";
};

}  // namespace chatd::net
