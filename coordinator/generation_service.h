// dsmath.v1.Generation: checks and plans each request (request_plan), hands it to the router,
// and answers Abort, Tokenize and GetModelInfo itself.
#pragma once

#include "coordinator/auth.h"
#include "coordinator/batch_jobs.h"
#include "coordinator/router.h"
#include "proto/dsmath.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dsmath {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  GenerationService(const ServedModel& model, const ServerLimits& limits, Router& router,
                    Metrics& metrics, const BearerAuth& auth)
      : model_(model), limits_(limits), router_(router), metrics_(metrics), auth_(auth) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::ModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  grpc::Status submit(const grpc::CallbackServerContext& context,
                      const v1::GenerateRequest& request, bool streaming,
                      std::shared_ptr<ResponseSink> sink, std::string* key);

  const ServedModel& model_;
  ServerLimits limits_;
  Router& router_;
  Metrics& metrics_;
  const BearerAuth& auth_;
};

// The reactor of a unary call that `auth` refuses, finished with its status; nullptr when the
// call may go on.
grpc::ServerUnaryReactor* refuse_unauthenticated(grpc::CallbackServerContext* context,
                                                 const BearerAuth& auth);

// dsmath.v1.BatchJobs: the coordinator's batch jobs (coordinator/batch_jobs).
class BatchJobsService final : public v1::BatchJobs::CallbackService {
 public:
  BatchJobsService(BatchJobManager& jobs, const BearerAuth& auth) : jobs_(jobs), auth_(auth) {}
  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* context,
                                   const v1::SubmitBatchRequest* request,
                                   v1::BatchJobStatus* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const v1::BatchJobRequest* request,
                                v1::BatchJobStatus* response) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const v1::BatchJobRequest* request,
                                   v1::BatchJobStatus* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListBatchJobsRequest* request,
                                 v1::ListBatchJobsResponse* response) override;

 private:
  BatchJobManager& jobs_;
  const BearerAuth& auth_;
};

// dsmath.worker.v1.WorkerLink: each worker group's stream is a GroupStream.
class WorkerLinkService final : public worker::v1::WorkerLink::CallbackService {
 public:
  WorkerLinkService(Router& router, const BearerAuth& auth) : router_(router), auth_(auth) {}
  grpc::ServerBidiReactor<worker::v1::WorkerMessage, worker::v1::CoordinatorMessage>* Connect(
      grpc::CallbackServerContext* context) override;

 private:
  Router& router_;
  const BearerAuth& auth_;
};

}  // namespace dsmath
