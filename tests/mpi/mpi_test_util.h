// Helpers for tests under mpirun (see mpi_test_main.cpp).
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

namespace dsmath::test {

inline int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

inline int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

}  // namespace dsmath::test

// Skips the test (on every rank alike) when the job has fewer than n ranks.
#define DSMATH_REQUIRE_WORLD_SIZE(n)                                                             \
  do {                                                                                           \
    if (::dsmath::test::world_size() < (n))                                                      \
      GTEST_SKIP() << "needs " << (n) << " ranks, the job has " << ::dsmath::test::world_size(); \
  } while (0)
