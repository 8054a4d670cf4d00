#!/usr/bin/env bash
# Packs benchmarks/gpu/check.sh's programs for a GPU machine that has CUDA but none of the Debian
# packages the build needs and no network to fetch them (the `device` tool's H200: CUDA 13,
# CMake and Python, but no Open MPI, gRPC, ICU or PCRE2 headers). Run it here, on a machine
# with launch/install-deps.sh's packages and nvcc:
#
#   benchmarks/gpu/make-kit.sh [ARCH]   # default 90 (H100/H200); writes .gpukit/kit.tar.xz
#
# then on the GPU machine, with .gpukit carried along (device tool: carry [".gpukit"]):
#
#   benchmarks/gpu/check.sh            # finds no mpirun there, so it runs the kit's programs
#
# The kit is the Release build of check.sh's targets for sm_ARCH (build-gpukit/bin, stripped)
# and every shared library they and Open MPI's launcher and plugins load, except glibc,
# libstdc++/libgcc and CUDA's own (cudart, cuBLAS, NCCL: the GPU machine's, same CUDA major
# version). Open MPI and PMIx are relocated with OPAL_PREFIX / PMIX_INSTALL_PREFIX (usr/ in
# the kit). The test programs look for tests/data and each other under this checkout's path,
# which check.sh links to the checkout it runs in (source-dir in the kit).
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${1:-90}
BUILD=build-gpukit
TARGETS=(cuda_ops_test cuda_model_test cuda_sampling_test nccl_test dsmath-bench-decode
  dsmath-make-model dsmath-worker test_kernels)
command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ] || {
  echo "make-kit: no nvcc (CUDA toolkit) on this machine" >&2
  exit 1
}

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSMATH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DDSMATH_MPI_TEST_NP="1;2" > /dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
KIT=$STAGE/kit
mkdir -p "$KIT/bin" "$KIT/lib"
for t in "${TARGETS[@]}"; do strip --strip-unneeded -o "$KIT/bin/$t" "$BUILD/bin/$t"; done

# Open MPI's launcher, daemon, plugins and help texts, and PMIx's, under usr/ as installed.
MULTIARCH=usr/lib/x86_64-linux-gnu
mkdir -p "$KIT/usr/bin" "$KIT/$MULTIARCH/openmpi/lib" "$KIT/$MULTIARCH/pmix2/lib" "$KIT/usr/share"
cp -L /usr/bin/orterun /usr/bin/orted "$KIT/usr/bin/"
ln -s orterun "$KIT/usr/bin/mpirun"
cp -a "/$MULTIARCH/openmpi/lib/openmpi3" "$KIT/$MULTIARCH/openmpi/lib/"
cp -a "/$MULTIARCH/pmix2/lib/pmix" "/$MULTIARCH/pmix2/lib/"libpmix.so* "$KIT/$MULTIARCH/pmix2/lib/"
cp -a "/$MULTIARCH/pmix2/share" "$KIT/$MULTIARCH/pmix2/"
cp -a /usr/share/openmpi "$KIT/usr/share/"
[ -d /usr/share/pmix ] && cp -a /usr/share/pmix "$KIT/usr/share/"

# Every library those load (transitively, as ldd resolves it here), but the GPU machine's own.
BASE='^(linux-vdso|ld-linux|libc\.so|libm\.so|libmvec|libstdc\+\+|libgcc_s|libpthread|libdl\.so|librt\.so|libutil\.so|libresolv|libcuda\.so|libcudart|libcublas|libnccl)'
mapfile -t elves < <(find "$KIT/bin" "$KIT/usr" -type f \( -perm -u+x -o -name '*.so*' \))
ldd "${elves[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    [[ $name =~ $BASE ]] && continue
    [ -e "$KIT/lib/$name" ] || cp -L "$path" "$KIT/lib/$name"
  done
# A library the plugins need that is missing here only disables that plugin; one the programs
# need must be in the kit.
for t in "${TARGETS[@]}"; do
  if LD_LIBRARY_PATH=$KIT/lib ldd "$KIT/bin/$t" | grep -q 'not found'; then
    echo "make-kit: $t has unresolved libraries" >&2
    exit 1
  fi
done
echo "$PWD" > "$KIT/source-dir"
echo "sm_$ARCH, $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')" \
  > "$KIT/built-from"

mkdir -p .gpukit
tar -cJf .gpukit/kit.tar.xz -C "$KIT" .
echo "make-kit: .gpukit/kit.tar.xz, $(du -h .gpukit/kit.tar.xz | cut -f1) ($(cat "$KIT/built-from"))"
