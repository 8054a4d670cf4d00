// --device: which Backend a rank computes on, and the communicator its collectives then need
// (the MPI control-plane communicator works on host memory; a GPU at tp > 1 needs NCCL on the
// backend's stream).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "worker/comm/communicator.h"
#include "worker/model/backend.h"

namespace dsmath {

// "cpu" and "cuda" (the latter also in builds without CUDA, which then refuse it by name).
const std::map<std::string, Device>& devices();

// The backend for `device`. A CUDA rank takes GPU (its rank on the node) mod (GPUs on the node).
// Throws naming the flag when this build or this machine cannot run it.
std::unique_ptr<Backend> make_backend(Device device, DType kv_dtype, MPI_Comm comm);

// What the model's collectives run on: nullptr when `control` serves (CPU, or tp 1), else an
// NCCL communicator over the same ranks, ordered on the backend's stream. Every rank calls it.
std::unique_ptr<Communicator> make_model_communicator(Backend& backend, Communicator& control);

// What pipeline stages send hidden states over: nullptr when the world's MPI communicator
// serves (CPU), else NCCL over all ranks of `world`, ordered on the backend's stream (a GPU
// group at pp > 1). Every rank calls it.
std::unique_ptr<Communicator> make_stage_links(Backend& backend, Communicator& world, int pp);

}  // namespace dsmath
