#include "coordinator/tls.h"

#include <fstream>
#include <sstream>

#include "common/core/error.h"

namespace dsmath {
namespace {

std::string read_pem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  DSMATH_CHECK(in.good(), flag, " ", path, ": cannot read the file");
  std::ostringstream text;
  text << in.rdbuf();
  DSMATH_CHECK(text.str().find("-----BEGIN ") != std::string::npos, flag, " ", path,
               ": not a PEM file (no -----BEGIN line)");
  return text.str();
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> server_credentials(const TlsFiles& f,
                                                            bool require_client) {
  DSMATH_CHECK(f.cert.empty() == f.key.empty(),
               "--tls-cert and --tls-key go together: give both or neither");
  if (f.cert.empty()) {
    DSMATH_CHECK(f.ca.empty(), "--tls-ca needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions options(
      require_client && !f.ca.empty() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (require_client && !f.ca.empty()) options.pem_root_certs = read_pem(f.ca, "--tls-ca");
  options.pem_key_cert_pairs.push_back(
      {read_pem(f.key, "--tls-key"), read_pem(f.cert, "--tls-cert")});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const TlsFiles& f) {
  DSMATH_CHECK(f.cert.empty() == f.key.empty(),
               "--tls-cert and --tls-key go together: give both or neither");
  if (f.ca.empty()) {
    DSMATH_CHECK(f.cert.empty(), "--tls-cert needs --tls-ca (to verify the coordinator)");
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = read_pem(f.ca, "--tls-ca");
  if (!f.cert.empty()) {
    options.pem_private_key = read_pem(f.key, "--tls-key");
    options.pem_cert_chain = read_pem(f.cert, "--tls-cert");
  }
  return grpc::SslCredentials(options);
}

}  // namespace dsmath
