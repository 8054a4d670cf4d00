#!/usr/bin/env bash
# Installs every Debian package that building and testing dsmath needs (Debian 12).
# Idempotent: when everything is already installed it changes nothing and needs no network.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config git python3
  libgtest-dev libgmock-dev libbenchmark-dev          # tests, microbenchmarks
  nlohmann-json3-dev libcli11-dev                     # JSON, command lines
  libpcre2-dev libicu-dev                             # tokenizer regexes, Unicode normalization
  libsentencepiece-dev sentencepiece                  # tokenizer.model, spm_train in tests
  libopenmpi-dev openmpi-bin                          # worker groups under mpirun
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc  # coordinator API
  python3-grpcio python3-protobuf                     # serving tests: a Python gRPC client
  openssl                                             # TLS tests: a CA and certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
