#include "worker/model/make_backend.h"

#include "common/core/error.h"
#include "worker/comm/mpi_session.h"
#include "worker/model/cpu_backend.h"
#if DSMATH_HAVE_CUDA_BACKEND
#include "worker/comm/nccl_communicator.h"
#include "worker/model/cuda_backend.h"
#endif

namespace dsmath {

const std::map<std::string, Device>& devices() {
  static const std::map<std::string, Device> names{{"cpu", Device::kCpu}, {"cuda", Device::kCuda}};
  return names;
}

std::unique_ptr<Backend> make_backend(Device device, DType kv_dtype, MPI_Comm comm) {
  if (device == Device::kCpu) return std::make_unique<CpuBackend>(kv_dtype);
#if DSMATH_HAVE_CUDA_BACKEND
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  DSMATH_CHECK(rc == cudaSuccess && count > 0, "--device cuda: no CUDA device on this node (",
               rc == cudaSuccess ? "0 GPUs" : cudaGetErrorString(rc), ")");
  const int local = comm == MPI_COMM_NULL ? 0 : MpiSession::local_rank(comm);
  return std::make_unique<CudaBackend>(local % count, kv_dtype);
#else
  (void)comm;
  fail(
      "--device cuda: this build has no CUDA backend (configure with -DDSMATH_CUDA=ON where "
      "the CUDA toolkit is installed)");
#endif
}

namespace {
// NCCL over the ranks of `comm`, on the CUDA backend's GPU and stream.
std::unique_ptr<Communicator> nccl_on_backend_stream(Backend& backend, Communicator& comm) {
#if DSMATH_HAVE_CUDA_BACKEND
  auto& cuda = static_cast<CudaBackend&>(backend);
  auto nccl = std::make_unique<NcclCommunicator>(comm.control_comm(), cuda.gpu());
  nccl->set_stream(cuda.stream(), /*host_waits=*/false);
  return nccl;
#else
  (void)comm;
  fail("a ", device_name(backend.device()), " backend in a build without CUDA");
#endif
}
}  // namespace

std::unique_ptr<Communicator> make_model_communicator(Backend& backend, Communicator& control) {
  if (backend.device() == Device::kCpu || control.topology().tp_size == 1) return nullptr;
  return nccl_on_backend_stream(backend, control);
}

std::unique_ptr<Communicator> make_stage_links(Backend& backend, Communicator& world, int pp) {
  if (backend.device() == Device::kCpu || pp == 1) return nullptr;
  return nccl_on_backend_stream(backend, world);
}

}  // namespace dsmath
