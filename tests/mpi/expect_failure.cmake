# cmake -DCOMMAND="prog|arg|..." -DEXPECT="regex" -P expect_failure.cmake
# Passes when COMMAND exits non-zero and its output matches EXPECT: checks that the MPI test
# harness reports failures instead of passing or hanging.
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "expected the job to fail, it exited 0")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "the job failed (${rc}) but its output does not match: ${EXPECT}")
endif()
