// The WebSocket opening handshake's one computation (RFC 6455 §4.2.2). It lives in net, not
// in the pure ws codec, because it takes SHA-1 from OpenSSL rather than writing it by hand.
#pragma once

#include <string>
#include <string_view>

namespace chatd::net {

// Returns the Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key: base64 of the
// SHA-1 of the key and RFC 6455's GUID.
std::string ws_accept_key(std::string_view client_key);

}  // namespace chatd::net
