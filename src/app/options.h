// Command line and CHATD_* environment: every setting with its default and why.
// Exceptions are how configuration fails; the caller prints them and exits non-zero.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "auth/jwt.h"
#include "bus/message_bus.h"
#include "bus/presence.h"
#include "chat/hub.h"
#include "hooks/webhooks.h"
#include "net/server.h"
#include "store/room_store.h"

namespace chatd::app {

struct Options {
  net::ServerConfig server;
  chat::HubConfig hub;
  bus::BusConfig bus;
  bool presence = true;                 // --presence on|off
  bus::PresenceConfig presence_cfg;
  store::StoreConfig store;
  hooks::WebhookConfig webhooks;        // url empty: no webhooks
  std::string webhook_secret_file;      // read at start-up; its content is the HMAC key
  std::string api_key_file;             // read at start-up; absent: the server API is off
  std::string data_dir = "./data";
  bool auth_jwt = false;     // --auth jwt (default none: the body's sender is trusted, as the seed's clients expect)
  auth::JwtConfig jwt;       // keys and claim checks for --auth jwt
  bool auth_dev_mint = false;  // --auth-dev-mint: POST /auth/dev-token mints tokens (dev only)
  unsigned threads = 0;  // 0: one worker per core
  bool engine_thread = true;  // --engine-thread yes: the engines get a thread of their own
  bool help = false;
  bool log_json = false;  // --log-format json
  std::string trusted_proxies_spec;  // --trusted-proxies as given, for --help
  bool version = false;       // --version: print it and exit
  bool check_config = false;  // --check-config: validate, reach the engines, exit 0 or 1
};

// Returns the options from `args` (argv without the program name) over `environ`-style
// CHATD_* variables over the defaults. Throws std::invalid_argument with a readable message.
Options parse_options(const std::vector<std::string>& args, const std::vector<std::string>& env);

// Returns the --help text, each option with its default.
std::string help_text();

// Returns "chatd <version>", the version CMake's project() declares.
std::string version_text();

// Returns the web root used when --web-root is not given: the installed assets beside the
// binary (<prefix>/share/chatd/web for <prefix>/bin/chatd) when they exist, else the source
// tree's web/ this binary was built from.
std::string default_web_root();

}  // namespace chatd::app
