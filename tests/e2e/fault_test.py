#!/usr/bin/env python3
"""Faults, end to end: a supervised cluster (launch/dsmath-cluster) on 127.0.0.1 losing a rank,
its coordinator, or a group that stops answering; a rank stuck in a collective; a full disk.
Each time the batch job's output must equal an undisturbed run's, every sample once.

    fault_test.py BIN_DIR [unittest args]

The disk-full cases mount a small tmpfs and report skipped where that is not allowed (not root).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from ports import free_ports

BIN = os.path.abspath(sys.argv.pop(1))
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = tempfile.mkdtemp(prefix="dsmath-fault-test-")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"] + (
    ["--allow-run-as-root"] if os.geteuid() == 0 else [])
for var in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(var, None)

MODEL = os.path.join(TMP, "model")
subprocess.run([f"{BIN}/dsmath-make-model", "--preset", "tiny", "--seed", "3", "--out", MODEL],
               check=True, stdout=subprocess.DEVNULL)
with open(f"{MODEL}/config.json") as f:  # long streams stay live for a while
    config = json.load(f)
config["max_position_embeddings"] = 4096
with open(f"{MODEL}/config.json", "w") as f:
    json.dump(config, f)

PROBLEMS = [{"id": f"s{i}", "question": f"What is {i} * 3?", "answer": f"#### {3 * i}"}
            for i in range(120)]
SAMPLING = ["--n", "2", "--temperature", "0.9", "--seed", "4", "--max-new-tokens", "24"]
SAMPLES = len(PROBLEMS) * 2


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def by_key(rows):
    return sorted(rows, key=lambda r: (r["id"], r["sample_index"]))


def offline_batch(output, check=True):
    return subprocess.run([f"{BIN}/dsmath-worker", "batch", "--model", MODEL, "--threads", "1",
                           "--kv-cache-gib", "0.05", "--input", INPUT, "--output", output,
                           *SAMPLING], capture_output=True, text=True, check=check)


INPUT = write_jsonl(os.path.join(TMP, "problems.jsonl"), PROBLEMS)
REFERENCE = os.path.join(TMP, "reference.jsonl")
offline_batch(REFERENCE)


def process_tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def ranks_of(mpirun_pid):
    """{rank: pid} of an mpirun job's processes on this machine."""
    ranks = {}
    for pid in process_tree(mpirun_pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"OMPI_COMM_WORLD_RANK" in env and pid != mpirun_pid:
            ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
    return ranks


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, what, timeout=60, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class SupervisedCluster:
    """launch/dsmath-cluster on free loopback ports, over a data dir of its own."""

    def __init__(self, groups, tp, coordinator_args=(), model=MODEL, supervisor_args=(),
                 wait=True):
        self.address, self.metrics, workers = (f"127.0.0.1:{p}" for p in free_ports(3))
        self.data = tempfile.mkdtemp(prefix="data-", dir=TMP)
        write_jsonl(os.path.join(self.data, "problems.jsonl"), PROBLEMS)
        self.state_file = os.path.join(self.data, "cluster.json")
        self.log_path = os.path.join(self.data, "cluster.log")
        self.log = open(self.log_path, "w")
        args = ["--data-dir", self.data, "--metrics-listen", self.metrics, *coordinator_args]
        self.proc = subprocess.Popen(
            [f"{SRC}/launch/dsmath-cluster", "--host", f"localhost:{tp}", "--groups", str(groups),
             "--tp", str(tp), "--model", model, "--bin", BIN, "--listen", self.address,
             "--worker-listen", workers, "--state-file", self.state_file,
             "--max-backoff", "1", *supervisor_args, "--coordinator-args", " ".join(args), "--",
             "--threads", "1", "--kv-cache-gib", "0.05", "--max-reconnect-seconds", "1"],
            stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_groups(groups)

    def state(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def metric(self, name):
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return float(line.split()[1])
        except OSError:
            return None

    def wait_groups(self, n, timeout=60):
        wait_until(lambda: self.metric("dsmath_worker_groups") == n,
                   f"{n} worker group(s) joined\n{self.text()[-3000:]}", timeout)

    def dsmath(self, *args, check=True, timeout=300):
        return subprocess.run([f"{BIN}/dsmath", *args, "--server", self.address],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def submit(self, output):
        job = self.dsmath("batch", "submit", "--input", "problems.jsonl", "--output", output,
                          *SAMPLING).stdout.strip()
        return job, os.path.join(self.data, output)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.text()


def lines_in(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


class FaultTestCase(unittest.TestCase):
    def check_job(self, cluster, job, out):
        done = cluster.dsmath("batch", "wait", job, check=False)
        status = json.loads(done.stdout)
        self.assertEqual(status["state"], "completed", done.stderr + cluster.text()[-3000:])
        self.assertEqual(int(status["samples_done"]), SAMPLES)
        rows = read_jsonl(out)
        keys = [(r["id"], r["sample_index"]) for r in rows]
        self.assertEqual(len(keys), len(set(keys)), "a sample was written twice")
        self.assertEqual(by_key(rows), by_key(read_jsonl(REFERENCE)))


class SupervisorTest(FaultTestCase):
    def test_a_rank_killed_mid_job_takes_its_group_down_and_the_supervisor_restarts_it(self):
        cluster = SupervisedCluster(groups=1, tp=2)
        try:
            job, out = cluster.submit("rank.jsonl")
            wait_until(lambda: lines_in(out) >= 20, "20 samples written")
            group = cluster.state()["groups"][0]
            ranks = ranks_of(group["pid"])
            self.assertEqual(sorted(ranks), [0, 1])
            killed_at = time.time()
            os.kill(ranks[1], signal.SIGKILL)
            # The whole group goes: no rank 0 left spinning, mpirun gone.
            wait_until(lambda: not any(alive(p) for p in [group["pid"], *ranks.values()]),
                       "every process of the group to end", timeout=15)
            wait_until(lambda: re.search(r"worker group \S+ left", cluster.text()),
                       "the coordinator to notice", timeout=10)
            noticed = time.time() - killed_at
            self.assertLess(noticed, 10)
            wait_until(lambda: cluster.state()["groups"][0]["starts"] == 2, "a restart")
            self.assertIn("group 0: exited (137)", cluster.text())
            self.check_job(cluster, job, out)
            self.assertEqual(cluster.state()["groups"][0]["state"], "running")
        finally:
            text = cluster.stop()
        self.assertIn("dsmath-cluster: stopped", text)
        self.assertEqual(cluster.proc.returncode, 0)

    def test_the_coordinator_killed_mid_job_comes_back_and_the_job_resumes(self):
        cluster = SupervisedCluster(groups=1, tp=1)
        try:
            job, out = cluster.submit("coord.jsonl")
            wait_until(lambda: lines_in(out) >= 20, "20 samples written")
            # An interactive stream in flight when the coordinator dies gets UNAVAILABLE.
            stream = subprocess.Popen(
                [f"{BIN}/dsmath", "generate", "--server", cluster.address, "--temperature", "1",
                 "--max-new-tokens", "3000", "--ignore-eos", "Count to a thousand:"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = threading.Event()
            threading.Thread(target=lambda: (stream.stdout.read(1), first.set()),
                             daemon=True).start()
            self.assertTrue(first.wait(30), "the stream sent nothing")
            coordinator = cluster.state()["coordinator"]["pid"]
            os.kill(coordinator, signal.SIGKILL)
            self.assertNotEqual(stream.wait(timeout=15), 0)
            self.assertIn("UNAVAILABLE", stream.stderr.read())
            stream.stdout.close()
            stream.stderr.close()
            wait_until(lambda: cluster.state()["coordinator"]["starts"] == 2,
                       "the coordinator's restart")
            cluster.wait_groups(1)  # the group reconnects by itself
            self.check_job(cluster, job, out)
            self.assertIn(f"batch job {job} resumed", cluster.text())
            self.assertEqual(cluster.state()["groups"][0]["starts"], 1)
        finally:
            cluster.stop()

    def test_a_stopped_group_is_declared_dead_and_its_requests_go_to_the_other(self):
        cluster = SupervisedCluster(groups=2, tp=1,
                                    coordinator_args=["--heartbeat-timeout-seconds", "4"])
        stopped = []
        try:
            group = cluster.state()["groups"][0]["pid"]
            stopped = process_tree(group)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            stopped_at = time.time()
            # Requests sent now land on both groups (least loaded); the stopped group's run
            # again on the other once its heartbeat is late, and every one completes.
            results, seconds = [None] * 8, [0.0] * 8

            def ask(i):
                results[i] = cluster.dsmath("generate", "--temperature", "0", "--max-new-tokens",
                                            "32", "--ignore-eos", "--timeout", "60",
                                            f"What is {i} + 1?", check=False)
                seconds[i] = time.time() - stopped_at
            askers = [threading.Thread(target=ask, args=(i,)) for i in range(len(results))]
            for t in askers:
                t.start()
            for t in askers:
                t.join()
            for r in results:
                self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(cluster.text(),
                             r"worker group \S+ left: no message for [\d.]+ s \(heartbeat")
            self.assertEqual(cluster.metric("dsmath_worker_groups"), 1)
            # Some went to the stopped group and waited until its heartbeat was late (4 s after
            # the last one, which came up to a second before the stop).
            self.assertGreater(max(seconds), 2.5, seconds)
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            cluster.wait_groups(2)  # back, on a new link
            self.assertEqual(cluster.state()["groups"][0]["starts"], 1)
        finally:
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            cluster.stop()


    def test_a_group_that_keeps_failing_is_reported_failed_and_the_cluster_stops(self):
        # The coordinator serves this copy (it reads no weights); every rank fails to load it.
        broken = os.path.join(TMP, "broken-model")
        subprocess.run(["cp", "-r", MODEL, broken], check=True)
        with open(os.path.join(broken, "model.safetensors"), "r+b") as f:
            f.truncate(100)
        cluster = SupervisedCluster(groups=1, tp=1, model=broken, wait=False,
                                    supervisor_args=["--max-restarts", "2"])
        try:
            self.assertEqual(cluster.proc.wait(timeout=120), 1)
        finally:
            text = cluster.stop()
        self.assertEqual(text.count("group 0: started"), 3, text)
        self.assertIn("restart 2 of at most 2 in 600 s, in 1 s", text)
        self.assertIn("group 0: FAILED: exited (1) 3 times within 600 s (--max-restarts 2)", text)
        self.assertIn("every group failed; stopping the cluster", text)
        self.assertIn("model.safetensors", text)  # the workers' own message, relayed
        self.assertEqual(cluster.state()["groups"][0]["state"], "failed")


class WatchdogTest(unittest.TestCase):
    def test_a_rank_stuck_in_a_collective_aborts_its_group_naming_rank_and_collective(self):
        prompts = write_jsonl(os.path.join(TMP, "prompts.jsonl"),
                              [{"prompt": f"Count from {i}:"} for i in range(16)])
        group = subprocess.Popen(
            MPIRUN + ["-np", "2", f"{BIN}/dsmath-worker", "generate", "--model", MODEL,
                      "--threads", "1", "--prompts-file", prompts, "--n", "8", "--temperature", "1",
                      "--max-new-tokens", "3000", "--ignore-eos",
                      "--collective-timeout-seconds", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            ranks = wait_until(lambda: len(ranks_of(group.pid)) == 2 and ranks_of(group.pid),
                               "both ranks")
            time.sleep(3)  # loaded and generating
            self.assertIsNone(group.poll(), "the job ended before a rank was stopped")
            os.kill(ranks[1], signal.SIGSTOP)
            stopped_at = time.time()
            code = group.wait(timeout=30)
            self.assertNotEqual(code, 0)
            self.assertLess(time.time() - stopped_at, 15)
            err = group.stderr.read()
            self.assertRegex(err, r"rank 0: (all_reduce|all_gather|broadcast\S*) has waited \d+ s "
                                  r"for the other ranks of its group \(--collective-timeout-"
                                  r"seconds 3\).*aborting the group")
            wait_until(lambda: not any(alive(p) for p in ranks.values()), "no rank left",
                       timeout=10)
        finally:
            if group.poll() is None:
                for pid in reversed(process_tree(group.pid)):
                    os.kill(pid, signal.SIGKILL)
                group.wait()
            group.stderr.close()

    def test_the_watchdog_flag_is_checked(self):
        r = subprocess.run([f"{BIN}/dsmath-worker", "generate", "--model", MODEL, "--prompt",
                            "x", "--collective-timeout-seconds", "-1"],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--collective-timeout-seconds", r.stderr)


class SmallDisk:
    """A tmpfs of `size` at `path` (default: a fresh directory), grown with grow(); skips the
    test if it cannot mount (not root)."""

    def __init__(self, test, size, path=None):
        self.path = path or tempfile.mkdtemp(prefix="disk-", dir=TMP)
        os.makedirs(self.path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            test.skipTest(f"cannot mount a tmpfs ({r.stderr.strip()}); needs root")
        test.addCleanup(lambda: subprocess.run(["umount", "-l", self.path]))

    def grow(self, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", self.path], check=True)


class DiskFullTest(FaultTestCase):
    def test_offline_job_stops_with_the_file_named_and_resumes_intact(self):
        disk = SmallDisk(self, "40k")
        out = os.path.join(disk.path, "out.jsonl")
        r = offline_batch(out, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"cannot write the output {out}: No space left on device", r.stderr)
        written = lines_in(out)
        self.assertGreater(written, 0)
        self.assertLess(written, SAMPLES)
        disk.grow("4m")
        offline_batch(out)
        rows = read_jsonl(out)
        self.assertEqual(len(rows), len({(r["id"], r["sample_index"]) for r in rows}))
        self.assertEqual(by_key(rows), by_key(read_jsonl(REFERENCE)))

    def test_served_job_pauses_while_the_disk_is_full_and_goes_on_when_there_is_room(self):
        cluster = SupervisedCluster(groups=1, tp=1)
        try:
            # The job's files on a small disk mounted inside --data-dir.
            disk = SmallDisk(self, "56k", path=os.path.join(cluster.data, "small"))
            write_jsonl(os.path.join(disk.path, "problems.jsonl"), PROBLEMS)
            job = cluster.dsmath("batch", "submit", "--input", "small/problems.jsonl",
                                 "--output", "small/full.jsonl", *SAMPLING).stdout.strip()
            out = os.path.join(disk.path, "full.jsonl")

            def status():
                return json.loads(cluster.dsmath("batch", "status", job).stdout)
            paused = wait_until(lambda: status()["state"] == "paused" and status(),
                                "the job to pause", timeout=120)
            self.assertIn(f"cannot write the output {out}: No space left on device",
                          paused["error"])
            self.assertIn(f"batch job {job} paused", cluster.text())
            before = lines_in(out)
            time.sleep(1)
            self.assertEqual(lines_in(out), before)  # paused: nothing more is written
            disk.grow("4m")
            self.check_job(cluster, job, out)
        finally:
            cluster.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
