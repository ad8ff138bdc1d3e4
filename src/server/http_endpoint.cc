#include "server/http_endpoint.h"

#include <httplib.h>

namespace lipsync::server {

Result<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return InvalidArgument("address '" + address + "' is not host:port");
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  try {
    size_t used = 0;
    port = std::stoi(address.substr(colon + 1), &used);
    if (used != address.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    return InvalidArgument("address '" + address + "' has no valid port");
  }
  return std::make_pair(host, port);
}

Result<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& address,
                                                          Handlers handlers) {
  LIPSYNC_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(address));
  std::unique_ptr<HttpEndpoint> endpoint(new HttpEndpoint());
  endpoint->http_ = std::make_unique<httplib::Server>();
  auto& http = *endpoint->http_;
  http.Get("/metrics", [h = handlers](const httplib::Request&, httplib::Response& res) {
    res.set_content(h.metrics(), "text/plain; version=0.0.4");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  http.Get("/readyz", [h = handlers](const httplib::Request&, httplib::Response& res) {
    const bool ready = h.ready();
    res.status = ready ? 200 : 503;
    res.set_content(ready ? "ready\n" : "not ready\n", "text/plain");
  });
  // httplib's sockets allow a shared port (SO_REUSEPORT), so a second server would listen beside
  // the first; SO_REUSEADDR alone still rebinds a port left in TIME_WAIT, and refuses one in use.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const auto& [host, port] = host_port;
  if (port == 0) {
    endpoint->port_ = http.bind_to_any_port(host.c_str());
  } else {
    endpoint->port_ = http.bind_to_port(host.c_str(), port) ? port : -1;
  }
  if (endpoint->port_ <= 0) {
    return Unavailable("cannot listen for HTTP on " + address +
                       " (in use, or not an address "
                       "of this machine)");
  }
  endpoint->thread_ = std::thread([&http] { http.listen_after_bind(); });
  return endpoint;
}

void HttpEndpoint::Stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpEndpoint::~HttpEndpoint() { Stop(); }

}  // namespace lipsync::server
