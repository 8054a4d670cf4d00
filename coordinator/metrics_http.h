// A minimal HTTP/1.0 endpoint for Prometheus: GET /metrics returns the text format, anything
// else 404. Debian ships no Prometheus client library for C++, and a scrape endpoint is a few
// dozen lines of sockets: one thread, one connection at a time, short timeouts.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace dsmath {

class MetricsHttpServer {
 public:
  // `address`: host:port (IPv4 or "localhost"; port 0 picks a free one). Throws Error naming
  // the flag's address when it cannot listen there.
  MetricsHttpServer(const std::string& address, std::function<std::string()> render);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  void serve();
  void answer(int client);

  std::function<std::string()> render_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace dsmath
