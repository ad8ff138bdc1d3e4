// The HTTP side of the server: /metrics (Prometheus text), /healthz (alive) and /readyz (serving).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "lipsync/status.h"

namespace httplib {
class Server;
}

namespace lipsync::server {

class HttpEndpoint {
 public:
  struct Handlers {
    std::function<std::string()> metrics;
    std::function<bool()> ready;
  };
  // `address` is host:port; port 0 picks a free one (see port()).
  static Result<std::unique_ptr<HttpEndpoint>> Start(const std::string& address, Handlers handlers);
  ~HttpEndpoint();
  int port() const { return port_; }
  void Stop();

 private:
  HttpEndpoint() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

// Splits "host:port" ("[::1]:80" too); InvalidArgument naming the flag value otherwise.
Result<std::pair<std::string, int>> SplitHostPort(const std::string& address);

}  // namespace lipsync::server
