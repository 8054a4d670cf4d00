#include "coordinator/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "common/core/error.h"

namespace dsmath {

MetricsHttpServer::MetricsHttpServer(const std::string& address,
                                     std::function<std::string()> render)
    : render_(std::move(render)) {
  const size_t colon = address.rfind(':');
  DSMATH_CHECK(colon != std::string::npos, "--metrics-listen: expected host:port, got \"", address,
               "\"");
  std::string host = address.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  int port = -1;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (...) {
  }
  DSMATH_CHECK(port >= 0 && port < 65536, "--metrics-listen: bad port in \"", address, "\"");
  addr.sin_port = htons(uint16_t(port));
  DSMATH_CHECK(inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1, "--metrics-listen: \"", host,
               "\" is not an IPv4 address");
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener_, 16) != 0) {
    const int err = errno;
    ::close(listener_);
    fail("--metrics-listen: cannot listen on ", address, ": ", std::strerror(err));
  }
  socklen_t len = sizeof addr;
  getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  stop_ = true;
  thread_.join();
  ::close(listener_);
}

void MetricsHttpServer::serve() {
  while (!stop_) {
    pollfd p{listener_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    timeval timeout{2, 0};  // a client that stalls cannot hold the endpoint
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    answer(client);
    ::close(client);
  }
}

void MetricsHttpServer::answer(int client) {
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
    const ssize_t n = recv(client, buf, sizeof buf, 0);
    if (n <= 0) break;
    request.append(buf, size_t(n));
  }
  const bool metrics = request.rfind("GET /metrics ", 0) == 0 || request.rfind("GET / ", 0) == 0;
  const std::string body = metrics ? render_() : "not found: try /metrics\n";
  const std::string head =
      std::string(metrics ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.0 404 Not Found\r\n") +
      "Content-Type: " + (metrics ? "text/plain; version=0.0.4" : "text/plain") +
      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  const std::string response = head + body;
  for (size_t sent = 0; sent < response.size();) {
    const ssize_t n = send(client, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += size_t(n);
  }
}

}  // namespace dsmath
