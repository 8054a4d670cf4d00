#!/usr/bin/env python3
"""Serving end to end: a real dsmath-coordinator and `mpirun` worker groups on 127.0.0.1 (free
ports), driven by a Python grpcio client whose stubs are generated here from proto/.

    serve_test.py BIN_DIR [unittest args]

Needs Debian's python3-grpcio and python3-protobuf (launch/install-deps.sh), protoc and
grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc).
"""
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from ports import free_port, free_ports

BIN = os.path.abspath(sys.argv.pop(1))
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = tempfile.mkdtemp(prefix="dsmath-serve-test-")
# Sanitizer builds run several times slower (launch/sanitize.sh sets this): the deadlines that
# bound how long a generation may take scale with it.
SCALE = float(os.environ.get("DSMATH_TEST_TIMEOUT_SCALE", "1"))
# Loopback only: a proxy from the environment must not carry gRPC or metrics calls.
for var in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(var, None)

import grpc  # noqa: E402  (after the argument handling, so --help works without it)


def generate_stubs():
    """dsmath_pb2 & co. from proto/, and a subset of grpc reflection for `list`."""
    out = os.path.join(TMP, "stubs")
    os.makedirs(out)
    reflection = os.path.join(TMP, "reflection_subset.proto")
    with open(reflection, "w") as f:  # field numbers of grpc/reflection/v1alpha/reflection.proto
        f.write("""syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest { string host = 1; oneof message_request { string list_services = 7; } }
message ServiceResponse { string name = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServerReflectionResponse { oneof message_response { ListServiceResponse list_services_response = 6; } }
""")
    # health.proto at the top level: a `grpc.health` module path would clash with grpcio's.
    with open(f"{SRC}/proto/grpc/health/v1/health.proto") as src, \
            open(os.path.join(TMP, "health.proto"), "w") as dst:
        dst.write(src.read())
    subprocess.run(["protoc", f"--proto_path={SRC}/proto", f"--proto_path={TMP}",
                    f"--python_out={out}", f"--grpc_out={out}",
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                    "dsmath.proto", "health.proto", "reflection_subset.proto"], check=True)
    sys.path.insert(0, out)


generate_stubs()
import dsmath_pb2 as pb  # noqa: E402
import dsmath_pb2_grpc  # noqa: E402
import reflection_subset_pb2  # noqa: E402
import reflection_subset_pb2_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"] + (
    ["--allow-run-as-root"] if os.geteuid() == 0 else [])


def make_model(name, seed=5, context=4096):
    """A tiny random checkpoint; a long context so that long requests stay live for a while."""
    path = os.path.join(TMP, name)
    subprocess.run([f"{BIN}/dsmath-make-model", "--preset", "tiny", "--seed", str(seed),
                    "--out", path], check=True, stdout=subprocess.DEVNULL)
    with open(f"{path}/config.json") as f:
        config = json.load(f)
    config["max_position_embeddings"] = context
    with open(f"{path}/config.json", "w") as f:
        json.dump(config, f)
    return path


MODEL = make_model("model")


class Cluster:
    """One coordinator and the worker groups started against it; everything is killed at stop()."""

    def __init__(self, *coordinator_args, start=True, credentials=None):
        self.port, self.worker_port, self.metrics_port = free_ports(3)
        self.address = f"127.0.0.1:{self.port}"
        self.worker_address = f"127.0.0.1:{self.worker_port}"
        self.args = list(coordinator_args)
        self.coordinator = None
        self.groups = []
        self.channel = (grpc.secure_channel(self.address, credentials) if credentials
                        else grpc.insecure_channel(self.address))
        self.stub = dsmath_pb2_grpc.GenerationStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        if start:
            self.start_coordinator()

    def start_coordinator(self, model=MODEL):
        self.coordinator_log = open(os.path.join(TMP, f"coordinator-{self.port}.log"), "w+")
        self.coordinator = subprocess.Popen(
            [f"{BIN}/dsmath-coordinator", "--model", model, "--listen", self.address,
             "--worker-listen", self.worker_address,
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *self.args],
            stderr=self.coordinator_log)
        self.wait(lambda: self.health_status("") == "SERVING", "the coordinator to listen")

    def start_group(self, np=2, model=MODEL, wait=True, extra=()):
        log = open(os.path.join(TMP, f"group-{self.port}-{len(self.groups)}.log"), "w+")
        group = subprocess.Popen(
            MPIRUN + ["-np", str(np), f"{BIN}/dsmath-worker", "serve", "--model", model,
                      "--coordinator", self.worker_address, "--threads", "1",
                      "--kv-cache-gib", "0.05", "--max-reconnect-seconds", "1", *extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        group.log = log
        self.groups.append(group)
        if wait:
            n = len([g for g in self.groups if g.poll() is None])
            self.wait(lambda: self.metric("dsmath_worker_groups") == n, f"{n} worker group(s)")
        return group

    def wait(self, condition, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if condition():
                    return
            except (grpc.RpcError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self):
        out = []
        for f in [getattr(self, "coordinator_log", None)] + [g.log for g in self.groups]:
            if f:
                f.flush()
                f.seek(0)
                out.append(f"--- {f.name}\n{f.read()[-3000:]}")
        return "\n".join(out)

    def health_status(self, service="dsmath.v1.Generation"):
        r = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def metrics_text(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def metric(self, name, labels=""):
        """The sum of a metric's samples whose labels contain `labels`."""
        total, found = 0.0, False
        for line in self.metrics_text().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            key, value = line.rsplit(" ", 1)
            if key.split("{")[0] == name and labels in key:
                total, found = total + float(value), True
        return total if found else None

    def idle(self):
        return (self.metric("dsmath_live_requests") == 0 and
                not self.metric("dsmath_running_sequences") and
                not self.metric("dsmath_kv_blocks", 'state="used"'))

    def stop(self):
        for p in [self.coordinator] + self.groups:
            if p and p.poll() is None:
                if p in self.groups:
                    signal_group(p, signal.SIGKILL)
                else:
                    p.kill()
                p.wait()
        self.channel.close()
        for f in [getattr(self, "coordinator_log", None)] + [g.log for g in self.groups]:
            if f:
                f.close()


def signal_group(group, sig):
    """Sends `sig` to an mpirun job and all its ranks (Open MPI puts ranks in process groups of
    their own, so a signal to mpirun's group does not reach them)."""
    children = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    todo, job = [group.pid], []
    while todo:
        pid = todo.pop()
        job.append(pid)
        todo.extend(children.get(pid, []))
    for pid in reversed(job):  # ranks first, so that mpirun does not react to them alone
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def request(**fields):
    fields.setdefault("prompt", "What is 2 + 3?")
    return pb.GenerateRequest(**fields)


def stream_all(stub, req, timeout=60):
    """Concatenated deltas per output: {index: (text, token_ids, finish_reason)}, and messages."""
    texts, ids, finish, messages = {}, {}, {}, []
    for m in stub.GenerateStream(req, timeout=timeout):
        messages.append(m)
        for o in m.outputs:
            texts[o.index] = texts.get(o.index, "") + o.text
            ids.setdefault(o.index, []).extend(o.token_ids)
            if o.finish_reason:
                finish[o.index] = o.finish_reason
    return {i: (texts[i], ids[i], finish.get(i)) for i in texts}, messages


class ServingTest(unittest.TestCase):
    """One coordinator and one `mpirun -np 2` group."""

    @classmethod
    def setUpClass(cls):
        cls.c = Cluster("--max-n", "8", "--max-new-tokens", "4000")
        cls.c.start_group(np=2)
        cls.stub = cls.c.stub

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()

    def test_health_info_and_reflection(self):
        self.assertEqual(self.c.health_status(), "SERVING")
        self.assertEqual(self.c.health_status(""), "SERVING")
        info = self.stub.GetModelInfo(pb.ModelInfoRequest())
        self.assertEqual(info.model, "model")
        self.assertEqual(info.max_context, 4096)
        self.assertEqual(list(info.eos_token_ids), [100001])
        self.assertEqual(len(info.worker_groups), 1)
        self.assertEqual(info.worker_groups[0].tp, 2)
        reflection = reflection_subset_pb2_grpc.ServerReflectionStub(self.c.channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_subset_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in replies for s in r.list_services_response.service}
        self.assertIn("dsmath.v1.Generation", names)
        self.assertIn("grpc.health.v1.Health", names)

    def test_concurrent_streams_equal_unary_generate(self):
        def one(seed):
            req = request(prompt=f"Problem {seed}: what is {seed} + 7?", temperature=1.0,
                          top_p=0.95, seed=seed, max_new_tokens=24, ignore_eos=True)
            return seed, stream_all(self.stub, req)[0][0]
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            streamed = dict(pool.map(one, range(32)))
        self.assertEqual(len(streamed), 32)
        distinct = set()
        for seed, (text, ids, finish) in streamed.items():
            unary = self.stub.Generate(request(prompt=f"Problem {seed}: what is {seed} + 7?",
                                               temperature=1.0, top_p=0.95, seed=seed,
                                               max_new_tokens=24, ignore_eos=True))
            self.assertEqual(len(unary.outputs), 1)
            self.assertEqual(unary.outputs[0].text, text, seed)
            self.assertEqual(list(unary.outputs[0].token_ids), ids, seed)
            self.assertEqual(finish, "length")
            self.assertEqual(unary.usage.completion_tokens, 24)
            distinct.add(tuple(ids))
        self.assertGreater(len(distinct), 16)  # the seeds really differ

    def test_same_seed_alone_and_among_others(self):
        req = request(prompt="Find x if 2x + 3 = 11.", temperature=0.8, seed=42,
                      max_new_tokens=32, n=2)
        alone = self.stub.Generate(req)
        with concurrent.futures.ThreadPoolExecutor(17) as pool:
            others = [pool.submit(self.stub.Generate, request(temperature=1.0, seed=s,
                                                               max_new_tokens=40))
                      for s in range(16)]
            crowded = pool.submit(self.stub.Generate, req).result()
            for f in others:
                f.result()
        self.assertEqual([list(o.token_ids) for o in alone.outputs],
                         [list(o.token_ids) for o in crowded.outputs])
        self.assertNotEqual(list(alone.outputs[0].token_ids), list(alone.outputs[1].token_ids))
        self.assertEqual(alone.seed, 42)

    def test_greedy_equals_worker_generate(self):
        prompt = "What is the integral of x^2 from 0 to 2?"
        out = subprocess.run(MPIRUN + ["-np", "2", f"{BIN}/dsmath-worker", "generate",
                                       "--model", MODEL, "--threads", "1", "--kv-cache-gib",
                                       "0.05", "--chat", "--cot", "--prompt", prompt,
                                       "--max-new-tokens", "20", "--temperature", "0",
                                       "--format", "json"],
                             check=True, capture_output=True, text=True).stdout
        offline = json.loads(out.strip().splitlines()[-1])
        served = self.stub.Generate(pb.GenerateRequest(
            messages=[pb.ChatMessage(role="user", content=prompt)], cot=True,
            max_new_tokens=20, temperature=0))
        self.assertEqual(list(served.outputs[0].token_ids), offline["token_ids"])
        self.assertEqual(served.outputs[0].text, offline["text"])

    def test_stop_string_logprobs_and_usage(self):
        full = self.stub.Generate(request(temperature=0, max_new_tokens=16, ignore_eos=True))
        text = full.outputs[0].text
        stop = text[len(text) // 2:len(text) // 2 + 3]
        self.assertTrue(stop.strip(), text)
        req = request(temperature=0, max_new_tokens=16, ignore_eos=True, stop=[stop], logprobs=2)
        got = self.stub.Generate(req)
        out = got.outputs[0]
        self.assertEqual(out.finish_reason, "stop")
        self.assertEqual(out.stop_reason.stop_string, stop)
        self.assertEqual(out.text, text[:text.index(stop)])
        self.assertEqual(len(out.logprobs), len(out.token_ids))
        self.assertEqual(len(out.logprobs[0].top), 2)
        self.assertEqual(got.usage.prompt_tokens, len(self.stub.Tokenize(
            pb.TokenizeRequest(text="What is 2 + 3?")).token_ids))
        streamed, messages = stream_all(self.stub, req)
        self.assertEqual(streamed[0][0], out.text)
        self.assertEqual(messages[-1].outputs[-1].stop_reason.stop_string, stop)
        self.assertEqual(messages[-1].usage.completion_tokens, len(out.token_ids))

    def test_bad_inputs_get_status_and_sentence(self):
        code = grpc.StatusCode
        cases = [
            (pb.GenerateRequest(), code.INVALID_ARGUMENT, "the prompt is empty"),
            (request(prompt_token_ids=[1, 2]), code.INVALID_ARGUMENT, "only one of"),
            (request(max_new_tokens=4000, prompt="x " * 200), code.INVALID_ARGUMENT,
             "exceeds the model's context of 4096"),
            (request(temperature=-1), code.INVALID_ARGUMENT, "temperature must be >= 0"),
            (request(top_p=0), code.INVALID_ARGUMENT, "top_p must be in (0, 1]"),
            (request(top_p=1.5), code.INVALID_ARGUMENT, "top_p must be in (0, 1]"),
            (request(n=9), code.INVALID_ARGUMENT, "n must be in [1, 8]"),
            (request(max_new_tokens=4001), code.INVALID_ARGUMENT,
             "max_new_tokens must be in [1, 4000]"),
            (pb.GenerateRequest(prompt_token_ids=[5, 102400]), code.INVALID_ARGUMENT,
             "prompt_token_ids[1] = 102400 is outside the vocabulary"),
            (request(stop_token_ids=[-1]), code.INVALID_ARGUMENT, "stop_token_ids[0]"),
            (request(stop=[""]), code.INVALID_ARGUMENT, "stop[0] is empty"),
            (pb.GenerateRequest(messages=[pb.ChatMessage(role="robot", content="hi")]),
             code.INVALID_ARGUMENT, "messages[0].role"),
            (request(repetition_penalty=0), code.INVALID_ARGUMENT, "repetition_penalty"),
        ]
        for req, want, sentence in cases:
            for call in (self.stub.Generate, lambda r: list(self.stub.GenerateStream(r))):
                with self.assertRaises(grpc.RpcError) as e:
                    call(req)
                self.assertEqual(e.exception.code(), want, (req, e.exception.details()))
                self.assertIn(sentence, e.exception.details())
        self.assertEqual(self.c.health_status(), "SERVING")
        self.assertTrue(self.stub.Generate(request(max_new_tokens=2)).outputs)

    def long_stream(self, **fields):
        fields.setdefault("max_new_tokens", 3900)
        return self.stub.GenerateStream(request(ignore_eos=True, temperature=1.0, seed=3,
                                                **fields), timeout=60)

    def test_client_cancel_frees_blocks(self):
        stream = self.long_stream()
        next(stream)
        self.assertTrue(self.c.metric("dsmath_kv_blocks", 'state="used"'))
        stream.cancel()
        self.c.wait(self.c.idle, "the cancelled request's blocks to be freed", timeout=10)

    def test_deadline_frees_blocks(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Generate(request(ignore_eos=True, max_new_tokens=3900), timeout=0.5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.c.wait(self.c.idle, "the expired request's blocks to be freed", timeout=10)
        self.c.wait(lambda: self.c.metric("dsmath_requests_total", 'status="DEADLINE_EXCEEDED"'),
                    "the expiry to be counted", timeout=10)

    def test_abort_mid_stream(self):
        stream = self.long_stream(request_id="abort-me", n=2)
        first = next(stream)
        self.assertEqual(first.request_id, "abort-me")
        with self.assertRaises(grpc.RpcError) as e:  # a live duplicate
            self.stub.Generate(request(request_id="abort-me"))
        self.assertEqual(e.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
        self.assertTrue(self.stub.Abort(pb.AbortRequest(request_id="abort-me")).aborted)
        rest = list(stream)  # ends OK
        finishes = {o.index: o.finish_reason for m in rest for o in m.outputs if o.finish_reason}
        self.assertEqual(finishes, {0: "cancelled", 1: "cancelled"})
        self.assertTrue(rest[-1].HasField("usage"))
        self.assertFalse(self.stub.Abort(pb.AbortRequest(request_id="abort-me")).aborted)
        self.c.wait(self.c.idle, "the aborted request's blocks to be freed", timeout=10)

    def test_dsmath_cli_client(self):
        def dsmath(*args, stdin=None):
            return subprocess.run([f"{BIN}/dsmath", *args, "--server", self.c.address],
                                  input=stdin, capture_output=True, text=True, timeout=60)
        self.assertEqual(dsmath("health").stdout.strip(), "SERVING")
        self.assertEqual(json.loads(dsmath("info").stdout)["model"], "model")
        want = self.stub.Generate(request(prompt="1+1=", temperature=0, max_new_tokens=12))
        streamed = dsmath("generate", "1+1=", "--temperature", "0", "--max-new-tokens", "12")
        self.assertEqual(streamed.returncode, 0, streamed.stderr)
        self.assertEqual(streamed.stdout, want.outputs[0].text + "\n")
        as_json = json.loads(dsmath("generate", "1+1=", "--temperature", "0",
                                    "--max-new-tokens", "12", "--format", "json").stdout)
        self.assertEqual(as_json["outputs"][0]["token_ids"], list(want.outputs[0].token_ids))
        bad = dsmath("generate", "1+1=", "--top-p", "2")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: top_p must be in (0, 1]", bad.stderr)
        chat = dsmath("chat", "--temperature", "0", "--max-new-tokens", "6", stdin="hi\nand?\n")
        self.assertEqual(chat.returncode, 0, chat.stderr)
        second = self.stub.Generate(pb.GenerateRequest(
            messages=[pb.ChatMessage(role="user", content="hi"),
                      pb.ChatMessage(role="assistant", content=chat.stdout.split("\n")[0]),
                      pb.ChatMessage(role="user", content="and?")],
            temperature=0, max_new_tokens=6))
        self.assertEqual(chat.stdout.split("\n")[1], second.outputs[0].text)

    def test_tokenize(self):
        r = self.stub.Tokenize(pb.TokenizeRequest(
            messages=[pb.ChatMessage(role="user", content="1+1")], cot=True))
        self.assertEqual(r.token_ids[0], 100000)
        self.assertEqual(len(r.token_ids), len(r.tokens))


class QueueTest(unittest.TestCase):
    def test_queue_full_is_resource_exhausted(self):
        c = Cluster("--max-queue", "4")
        group = c.start_group(np=1)
        signal_group(group, signal.SIGSTOP)  # nothing gets a first token while it is stopped
        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                waiting = [pool.submit(c.stub.Generate, request(max_new_tokens=4, seed=i),
                                       timeout=60) for i in range(4)]
                c.wait(lambda: c.metric("dsmath_queue_depth") == 4, "4 queued")
                with self.assertRaises(grpc.RpcError) as e:
                    c.stub.Generate(request(max_new_tokens=4))
                self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("--max-queue 4", e.exception.details())
                signal_group(group, signal.SIGCONT)
                for f in waiting:
                    self.assertEqual(len(f.result().outputs[0].token_ids), 4)
        finally:
            signal_group(group, signal.SIGCONT)
            c.stop()


class TwoGroupsTest(unittest.TestCase):
    def test_killed_group_unstarted_requests_move_started_ones_fail(self):
        c = Cluster("--heartbeat-timeout-seconds", "30")
        try:
            g1 = c.start_group(np=1)
            g2 = c.start_group(np=1)
            stub = c.stub
            # One long stream on each group (the second goes to the group with less work).
            started = []
            for seed in (1, 2):
                started.append(stub.GenerateStream(request(ignore_eos=True, max_new_tokens=2000,
                                                           temperature=1.0, seed=seed),
                                                   timeout=60 * SCALE))
                next(started[-1])
            for g in (g1, g2):  # both stay unfinished, and what comes next cannot start
                signal_group(g, signal.SIGSTOP)
            # Two short ones: equal loads, so one lands on each group.
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                later = [pool.submit(stub.Generate, request(max_new_tokens=8, seed=10 + s),
                                     timeout=60 * SCALE) for s in range(2)]
                c.wait(lambda: c.metric("dsmath_queue_depth") == 2, "2 queued requests")
                signal_group(g2, signal.SIGKILL)
                signal_group(g1, signal.SIGCONT)
                for f in later:  # both complete, the one of g2 re-run on g1
                    self.assertEqual(len(f.result().outputs[0].token_ids), 8)
            outcomes = []
            for s in started:
                try:
                    for _ in s:
                        pass
                    outcomes.append("OK")
                except grpc.RpcError as e:
                    outcomes.append(e.code())
                    self.assertIn("was lost", e.details())
            self.assertEqual(sorted(map(str, outcomes)), sorted(["OK", str(grpc.StatusCode.UNAVAILABLE)]))
            c.wait(lambda: c.metric("dsmath_worker_groups") == 1, "one group left")
            self.assertEqual(c.health_status(), "SERVING")
            g1.poll()
            self.assertIsNone(g1.returncode)
        finally:
            c.stop()


class LifecycleTest(unittest.TestCase):
    def test_no_group_is_unavailable_until_one_joins_and_sigterm_drains(self):
        c = Cluster("--shutdown-grace-seconds", str(30 * SCALE), start=False)
        try:
            group = c.start_group(np=2, wait=False)  # before the coordinator: it keeps retrying
            time.sleep(1)
            self.assertIsNone(group.poll())
            c.start_coordinator()
            c.wait(lambda: c.health_status() == "SERVING", "the group to join")
            stream = c.stub.GenerateStream(request(ignore_eos=True, max_new_tokens=400,
                                                   temperature=0), timeout=120 * SCALE)
            next(stream)
            signal_group(group, signal.SIGSTOP)  # the request stays running while we look
            c.coordinator.send_signal(signal.SIGTERM)
            c.wait(lambda: c.health_status() == "NOT_SERVING", "draining")
            with self.assertRaises(grpc.RpcError) as e:
                c.stub.Generate(request(max_new_tokens=2))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            signal_group(group, signal.SIGCONT)
            rest = list(stream)  # the running request finishes
            self.assertEqual(rest[-1].outputs[-1].finish_reason, "length")
            self.assertEqual(c.coordinator.wait(timeout=30 * SCALE), 0)
            self.assertEqual(group.wait(timeout=30 * SCALE), 0, c.logs())
        finally:
            c.stop()

    def test_unavailable_without_groups_and_mismatched_model_refused(self):
        c = Cluster()
        try:
            self.assertEqual(c.health_status(), "NOT_SERVING")
            with self.assertRaises(grpc.RpcError) as e:
                c.stub.Generate(request())
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("no worker group", e.exception.details())
            other = make_model("other-model", context=2048)
            group = c.start_group(np=1, model=other, wait=False)
            self.assertEqual(group.wait(timeout=60), 1)
            group.log.seek(0)
            self.assertIn("is not the one this coordinator serves", group.log.read())
            self.assertEqual(c.metric("dsmath_worker_groups"), 0)
        finally:
            c.stop()


class AuthTest(unittest.TestCase):
    def test_bearer_token_on_every_api_call_and_the_cli(self):
        token = "s3cret-" + "x" * 20
        token_file = os.path.join(TMP, "token")
        with open(token_file, "w") as f:
            f.write(token + "\n")  # a trailing newline is not part of the token
        c = Cluster("--auth-token-file", token_file)
        try:
            c.start_group(np=1)
            self.assertEqual(c.health_status(), "SERVING", "health stays open")
            jobs = dsmath_pb2_grpc.BatchJobsStub(c.channel)
            calls = [lambda md: c.stub.GetModelInfo(pb.ModelInfoRequest(), metadata=md),
                     lambda md: c.stub.Tokenize(pb.TokenizeRequest(text="1+1"), metadata=md),
                     lambda md: c.stub.Generate(request(max_new_tokens=2), metadata=md),
                     lambda md: list(c.stub.GenerateStream(request(max_new_tokens=2),
                                                           metadata=md)),
                     lambda md: jobs.List(pb.ListBatchJobsRequest(), metadata=md)]
            for call in calls:
                for metadata, why in [(None, "missing bearer token"),
                                      ((("authorization", "Bearer " + token[:-1] + "y"),),
                                       "wrong bearer token"),
                                      ((("authorization", token),), "wrong bearer token")]:
                    with self.assertRaises(grpc.RpcError) as e:
                        call(metadata)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertIn(why, e.exception.details())
                    self.assertNotIn(token, e.exception.details())
                call((("authorization", "Bearer " + token),))  # succeeds
            self.assertGreaterEqual(
                c.metric("dsmath_requests_total", 'status="UNAUTHENTICATED"'), 6)

            def dsmath(*args, env=None):
                return subprocess.run([f"{BIN}/dsmath", *args, "--server", c.address],
                                      capture_output=True, text=True, timeout=60,
                                      env={**os.environ, **(env or {})})
            args = ["generate", "1+1=", "--temperature", "0", "--max-new-tokens", "4"]
            refused = dsmath(*args, env={"DSMATH_TOKEN": ""})
            self.assertEqual(refused.returncode, 1)
            self.assertIn("UNAUTHENTICATED: missing bearer token", refused.stderr)
            by_file = dsmath(*args, "--auth-token-file", token_file)
            self.assertEqual(by_file.returncode, 0, by_file.stderr)
            by_env = dsmath(*args, env={"DSMATH_TOKEN": token})
            self.assertEqual(by_env.stdout, by_file.stdout)
            self.assertEqual(dsmath("health").stdout.strip(), "SERVING")
        finally:
            c.stop()

    def test_worker_groups_need_the_secret(self):
        secret, wrong = (os.path.join(TMP, name) for name in ("secret", "wrong-secret"))
        with open(secret, "w") as f:
            f.write("group-secret-" + "z" * 16)
        with open(wrong, "w") as f:
            f.write("group-secret-" + "y" * 16)
        c = Cluster("--worker-secret-file", secret)
        try:
            for extra, why in [((), "missing bearer token"),  # and how to send one:
                               ((), "dsmath-worker serve --worker-secret-file FILE"),
                               (("--worker-secret-file", wrong), "wrong bearer token")]:
                group = c.start_group(np=1, wait=False, extra=extra)
                self.assertEqual(group.wait(timeout=60), 1, "refused groups exit 1, no retries")
                group.log.seek(0)
                text = group.log.read()
                self.assertIn(why, text)
                self.assertNotIn("z" * 16, text)
            self.assertEqual(c.metric("dsmath_worker_groups"), 0)
            c.start_group(np=1, extra=("--worker-secret-file", secret))
            reply = c.stub.Generate(request(max_new_tokens=3))
            self.assertEqual(len(reply.outputs[0].token_ids), 3)
        finally:
            c.stop()

    def test_a_bad_token_file_is_named(self):
        short = os.path.join(TMP, "short-token")
        with open(short, "w") as f:
            f.write("abc\n")
        bad = subprocess.run([f"{BIN}/dsmath-coordinator", "--model", MODEL, "--listen",
                              f"127.0.0.1:{free_port()}", "--auth-token-file", short],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn(f"--auth-token-file {short}: the token has 3 bytes", bad.stderr)


class LimitsTest(unittest.TestCase):
    def test_configured_limits_are_enforced_and_reported(self):
        c = Cluster("--max-prompt-tokens", "8", "--max-message-bytes", "4096", "--max-n", "2",
                    "--max-new-tokens", "5")
        try:
            limits = c.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=10).limits
            self.assertEqual((limits.max_prompt_tokens, limits.max_n, limits.max_new_tokens),
                             (8, 2, 5))
            for fields, code, says in [
                    (dict(prompt_token_ids=list(range(100, 109))), "INVALID_ARGUMENT",
                     "at most 8 (--max-prompt-tokens)"),
                    (dict(prompt="x" * 5000), "RESOURCE_EXHAUSTED", ""),  # > --max-message-bytes
                    (dict(prompt="1+1", n=3), "INVALID_ARGUMENT", "n must be"),
                    (dict(prompt="1+1", max_new_tokens=6), "INVALID_ARGUMENT", "max_new_tokens")]:
                with self.assertRaises(grpc.RpcError) as e:
                    c.stub.Generate(pb.GenerateRequest(**fields), timeout=10)
                self.assertEqual(e.exception.code().name, code, fields.keys())
                self.assertIn(says, e.exception.details() or "")
        finally:
            c.stop()


def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a worker's client certificate it signed, and a
    client certificate from another CA: PEM files in `directory`, by the openssl CLI."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out",
            f"{ca}.pem", "-days", "2", "-subj", f"/CN=dsmath test {ca}")
    for name, ca, ext in (("server", "ca", ["-extfile", "server.ext"]), ("worker", "ca", []),
                          ("rogue", "rogue-ca", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext)
    return {n: os.path.join(directory, n) for n in os.listdir(directory)}


class TlsTest(unittest.TestCase):
    def test_tls_on_both_ports_and_mutual_tls_for_workers(self):
        pem = make_certificates(tempfile.mkdtemp(dir=TMP))
        with open(pem["ca.pem"], "rb") as f:
            trusted = grpc.ssl_channel_credentials(root_certificates=f.read())
        c = Cluster("--tls-cert", pem["server.pem"], "--tls-key", pem["server.key"],
                    "--tls-ca", pem["ca.pem"], credentials=trusted)
        try:
            # Plaintext clients do not get in.
            plain = health_pb2_grpc.HealthStub(grpc.insecure_channel(c.address))
            with self.assertRaises(grpc.RpcError) as e:
                plain.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            # Groups without a certificate, or with one another CA signed, never join.
            tls = ("--tls-ca", pem["ca.pem"])
            for extra in [tls, tls + ("--tls-cert", pem["rogue.pem"], "--tls-key", pem["rogue.key"])]:
                group = c.start_group(np=1, wait=False, extra=extra)
                time.sleep(6)  # far beyond a join on loopback; it keeps retrying meanwhile
                self.assertEqual(c.metric("dsmath_worker_groups"), 0, extra)
                signal_group(group, signal.SIGKILL)
                group.wait()
            # The group with the CA's certificate joins, and requests flow over TLS both ways.
            c.start_group(np=1, extra=tls + ("--tls-cert", pem["worker.pem"],
                                             "--tls-key", pem["worker.key"]))
            reply = c.stub.Generate(request(prompt="1+1=", temperature=0, max_new_tokens=4))
            self.assertEqual(len(reply.outputs[0].token_ids), 4)
            cli = subprocess.run([f"{BIN}/dsmath", "generate", "1+1=", "--temperature", "0",
                                  "--max-new-tokens", "4", "--server", c.address,
                                  "--tls-ca", pem["ca.pem"], "--format", "json"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(cli.returncode, 0, cli.stderr)
            self.assertEqual(json.loads(cli.stdout)["outputs"][0]["token_ids"],
                             list(reply.outputs[0].token_ids))
            without = subprocess.run([f"{BIN}/dsmath", "info", "--server", c.address,
                                      "--timeout", "5"], capture_output=True, text=True, timeout=60)
            self.assertEqual(without.returncode, 1)
            self.assertIn("UNAVAILABLE", without.stderr)
        finally:
            c.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
