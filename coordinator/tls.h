// TLS for the coordinator's two ports and their clients, from PEM files:
//   public API (--listen): the server proves itself (--tls-cert, --tls-key); clients verify it
//     against the CA that signed it (dsmath --tls-ca).
//   worker link (--worker-listen): the same, and with the coordinator's --tls-ca also mutual:
//     a group must present a certificate signed by that CA (dsmath-worker serve --tls-cert,
//     --tls-key), or its handshake fails.
// Without these flags both sides use plaintext, as before.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace dsmath {

struct TlsFiles {
  std::string cert, key, ca;  // PEM paths; empty: not given
};

// What a server listens with: insecure without a certificate; TLS with one; with `require_client`
// and a CA, mutual TLS. Throws Error naming the flag and file that is missing or unreadable.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const TlsFiles& files,
                                                            bool require_client);

// What a client dials with: insecure without a CA; TLS verifying the server against the CA
// otherwise, presenting its own certificate when it has one.
std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const TlsFiles& files);

}  // namespace dsmath
