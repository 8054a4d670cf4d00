#!/usr/bin/env python3
"""Batch jobs end to end with `dsmath-worker batch` and `dsmath grade` on a tiny checkpoint.

    batch_test.py BIN_DIR [unittest args]
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from ports import free_ports

BIN = os.path.abspath(sys.argv.pop(1))
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = tempfile.mkdtemp(prefix="dsmath-batch-test-")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"] + (
    ["--allow-run-as-root"] if os.geteuid() == 0 else [])
MODEL = os.path.join(TMP, "model")
subprocess.run([f"{BIN}/dsmath-make-model", "--preset", "tiny", "--seed", "3", "--out", MODEL],
               check=True, stdout=subprocess.DEVNULL)
with open(f"{MODEL}/config.json") as f:  # room for the 8-shot prompt (~800 tokens)
    config = json.load(f)
config["max_position_embeddings"] = 2048
with open(f"{MODEL}/config.json", "w") as f:
    json.dump(config, f)

# GSM8K-shaped problems; the tiny model's answers are noise, the grading is still exercised.
PROBLEMS = [{"id": f"p{i}", "question": f"What is {i} + {2 * i}?", "answer": f"{i}+{2 * i}\n#### {3 * i}"}
            for i in range(24)]
SAMPLING = ["--n", "6", "--temperature", "0.9", "--top-p", "0.95", "--seed", "11",
            "--max-new-tokens", "40"]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def batch(output, *extra, np=1, input_path=None, check=True):
    cmd = ([f"{BIN}/dsmath-worker"] if np == 1 else MPIRUN + ["-np", str(np), f"{BIN}/dsmath-worker"])
    cmd += ["batch", "--model", MODEL, "--threads", "1", "--kv-cache-gib", "0.05",
            "--input", input_path or INPUT, "--output", output, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def by_key(rows):
    return sorted(rows, key=lambda r: (r["id"], r["sample_index"]))


INPUT = write_jsonl(os.path.join(TMP, "problems.jsonl"), PROBLEMS)


class BatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reference_path = os.path.join(TMP, "reference.jsonl")
        batch(cls.reference_path, *SAMPLING, "--summary", os.path.join(TMP, "reference.summary.json"))
        cls.reference = read_jsonl(cls.reference_path)

    def test_every_sample_once_graded_and_summarised(self):
        rows = self.reference
        self.assertEqual(len(rows), 24 * 6)
        self.assertEqual(len({(r["id"], r["sample_index"]) for r in rows}), 24 * 6)
        for r in rows:
            for field in ("text", "finish_reason", "prompt_tokens", "completion_tokens",
                          "cumulative_logprob", "extracted_answer", "correct", "reference_answer"):
                self.assertIn(field, r)
            self.assertEqual(r["reference_answer"], str(3 * int(r["id"][1:])))
            self.assertLessEqual(r["cumulative_logprob"], 0)
        with open(os.path.join(TMP, "reference.summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(summary["overall"]["samples"], 24 * 6)
        self.assertEqual(summary["overall"]["k"], 6)
        self.assertEqual(len(summary["problems"]), 24)
        for key in ("maj@k", "pass@1", "pass@k", "mean_accuracy", "samples_per_second",
                    "tokens_per_second"):
            self.assertIn(key, summary["overall"])

    def test_kill_9_and_resume_three_times_equals_an_uninterrupted_run(self):
        out = os.path.join(TMP, "killed.jsonl")
        rng = random.Random(7)
        for attempt in range(3):
            proc = subprocess.Popen([f"{BIN}/dsmath-worker", "batch", "--model", MODEL,
                                     "--threads", "1", "--kv-cache-gib", "0.05", "--input", INPUT,
                                     "--output", out, *SAMPLING],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Kill once some samples are on disk (or the job is nearly done).
            deadline = time.time() + 30
            target = rng.randint(10, 90) * (attempt + 1)
            while time.time() < deadline and proc.poll() is None:
                if os.path.exists(out) and os.path.getsize(out) > 0:
                    with open(out) as f:
                        if sum(1 for _ in f) >= target:
                            break
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if attempt == 1:  # simulate a crash mid-write as well
                with open(out, "a") as f:
                    f.write('{"id": "p3", "sample_index": 2, "text": "torn')
        with open(out, "a") as f:  # and once more before the last run, which must say so
            f.write('{"id": "p5", "sample_')
        finished = batch(out, *SAMPLING)
        self.assertIn("cut a torn last line", finished.stderr)
        rows = read_jsonl(out)
        keys = [(r["id"], r["sample_index"]) for r in rows]
        self.assertEqual(len(keys), len(set(keys)), "a sample was written twice")
        self.assertEqual(by_key(rows), by_key(self.reference))

    def test_a_restart_with_other_flags_is_refused(self):
        out = os.path.join(TMP, "flags.jsonl")
        batch(out, "--n", "1", "--max-new-tokens", "4", "--temperature", "0.5")
        r = batch(out, "--n", "1", "--max-new-tokens", "4", "--temperature", "0.6", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("was written with other settings", r.stderr)
        self.assertIn("temperature: 0.5 before, 0.6 now", r.stderr)

    def test_same_texts_at_tp_1_2_and_4(self):
        outs = {}
        for np in (1, 2, 4):
            out = os.path.join(TMP, f"tp{np}.jsonl")
            batch(out, "--n", "3", "--temperature", "0.8", "--seed", "5", "--max-new-tokens", "16",
                  np=np)
            outs[np] = [(r["id"], r["sample_index"], r["text"]) for r in by_key(read_jsonl(out))]
        self.assertEqual(outs[1], outs[2])
        self.assertEqual(outs[1], outs[4])

    def test_openai_batch_in_and_out_matches_the_native_format(self):
        rows = [{"custom_id": p["id"], "method": "POST", "url": "/v1/completions",
                 "body": {"prompt": p["question"], "max_tokens": 40, "temperature": 0.9,
                          "top_p": 0.95, "n": 6, "seed": 11}} for p in PROBLEMS[:5]]
        path = write_jsonl(os.path.join(TMP, "openai.jsonl"), rows)
        out = os.path.join(TMP, "openai.out.jsonl")
        batch(out, "--output-format", "openai", input_path=path)
        lines = read_jsonl(out)
        self.assertEqual(len(lines), 5 * 6)
        native = {(r["id"], r["sample_index"]): r["text"] for r in self.reference}
        for line in lines:
            self.assertEqual(line["response"]["status_code"], 200)
            self.assertIsNone(line["error"])
            choice = line["response"]["body"]["choices"][0]
            self.assertEqual(choice["text"], native[(line["custom_id"], choice["index"])])

    def test_bad_lines_go_to_the_errors_file_and_duplicates_stop_the_job(self):
        path = write_jsonl(os.path.join(TMP, "bad.jsonl"),
                           [PROBLEMS[0], "not json", {"id": "q", "other": 1}, PROBLEMS[1]])
        out = os.path.join(TMP, "bad.out.jsonl")
        batch(out, "--n", "1", "--max-new-tokens", "4", input_path=path)
        self.assertEqual(len(read_jsonl(out)), 2)
        errors = read_jsonl(out + ".errors.jsonl")
        self.assertEqual([e["line"] for e in errors], [2, 3])
        self.assertIn("invalid JSON", errors[0]["reason"])
        self.assertIn("no prompt", errors[1]["reason"])
        dup = write_jsonl(os.path.join(TMP, "dup.jsonl"), [PROBLEMS[0], PROBLEMS[0]])
        r = batch(os.path.join(TMP, "dup.out.jsonl"), input_path=dup, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('id "p0" is used by line 1 already', r.stderr)

    def test_a_prompt_beyond_the_context_is_an_error_not_a_sample(self):
        path = write_jsonl(os.path.join(TMP, "long.jsonl"),
                           [PROBLEMS[0], {"id": "long", "question": "7 " * 3000}])
        out = os.path.join(TMP, "long.out.jsonl")
        batch(out, "--n", "2", "--max-new-tokens", "4", input_path=path)
        self.assertEqual({r["id"] for r in read_jsonl(out)}, {"p0"})
        errors = read_jsonl(out + ".errors.jsonl")
        self.assertEqual([(e["line"], e["id"]) for e in errors], [(2, "long")])
        self.assertIn("context", errors[0]["reason"])

    def test_few_shot_template_and_its_stop_strings(self):
        out = os.path.join(TMP, "fewshot.jsonl")
        batch(out, "--n", "1", "--max-new-tokens", "8", "--template",
              os.path.join(SRC, "launch/templates/gsm8k-8shot.json"))
        rows = read_jsonl(out)
        self.assertGreater(rows[0]["prompt_tokens"], 500)  # 8 exemplars before the question
        self.assertTrue(all("\nQ:" not in r["text"] for r in rows))

    def test_grade_regrades_the_output_the_same_way(self):
        graded = subprocess.run([f"{BIN}/dsmath", "grade", "--input", self.reference_path,
                                 "--answer-field", "reference_answer"],
                                capture_output=True, text=True, check=True).stdout.splitlines()
        self.assertEqual(len(graded), len(self.reference))
        for line, row in zip(graded, self.reference):
            g = json.loads(line)
            self.assertEqual(g["extracted_answer"], row["extracted_answer"])
            self.assertEqual(g["correct"], row["correct"])
        rows = [{"text": "so the answer is \\boxed{12}.", "answer": "#### 12"},
                {"text": "The answer is 7.", "answer": "#### 8"}]
        path = write_jsonl(os.path.join(TMP, "grade.jsonl"), rows)
        out = [json.loads(l) for l in subprocess.run(
            [f"{BIN}/dsmath", "grade", "--input", path], capture_output=True, text=True,
            check=True).stdout.splitlines()]
        self.assertEqual([(o["extracted_answer"], o["correct"]) for o in out],
                         [("12", True), ("7", False)])
        self.assertEqual(list(out[0].keys()), ["text", "answer", "extracted_answer", "correct"])


class ServedBatchTest(unittest.TestCase):
    """The same job through a coordinator (`dsmath batch submit`), the coordinator killed and
    restarted mid-job: the output equals the offline run's."""

    def coordinator(self):
        return subprocess.Popen([f"{BIN}/dsmath-coordinator", "--model", MODEL,
                                 "--listen", self.address, "--worker-listen", self.workers,
                                 "--data-dir", self.data, *self.coordinator_args], stderr=self.log)

    def dsmath(self, *args, check=True):
        return subprocess.run([f"{BIN}/dsmath", "batch", *args, "--server", self.address],
                              capture_output=True, text=True, check=check, timeout=300)

    PROBLEMS = [{"id": f"s{i}", "question": f"What is {i} * 3?", "answer": f"#### {3 * i}"}
                for i in range(120)]
    SAMPLING = ["--n", "2", "--temperature", "0.9", "--seed", "4", "--max-new-tokens", "24"]

    @classmethod
    def setUpClass(cls):
        # More runs than a job keeps in flight (64), so that samples land while others run.
        cls.offline = os.path.join(TMP, "served.offline.jsonl")
        batch(cls.offline, *cls.SAMPLING,
              input_path=write_jsonl(os.path.join(TMP, "served.problems.jsonl"), cls.PROBLEMS))

    def start(self, *coordinator_args):
        """A coordinator over a data dir of its own (jobs recorded there resume at its start)."""
        self.data = tempfile.mkdtemp(prefix="data-", dir=TMP)
        write_jsonl(os.path.join(self.data, "problems.jsonl"), self.PROBLEMS)
        self.address, self.workers = (f"127.0.0.1:{p}" for p in free_ports(2))
        self.log = open(os.path.join(TMP, f"served-{self.workers[-5:]}.log"), "w+")
        self.coordinator_args = list(coordinator_args)
        return self.coordinator()

    def group(self):
        return subprocess.Popen([f"{BIN}/dsmath-worker", "serve", "--model", MODEL, "--threads",
                                 "1", "--kv-cache-gib", "0.05", "--coordinator", self.workers,
                                 "--max-reconnect-seconds", "1"], stderr=self.log)

    def wait_serving(self, groups=1):
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run([f"{BIN}/dsmath", "health", "--server", self.address],
                               capture_output=True, text=True)
            if r.stdout.strip() == "SERVING":
                break
            time.sleep(0.1)
        time.sleep(0.5 * (groups - 1))  # the others register alongside

    def wait_for_samples(self, out, n):
        deadline = time.time() + 120
        while time.time() < deadline:
            if os.path.exists(out):
                with open(out) as f:
                    if sum(1 for _ in f) >= n:
                        return
            time.sleep(0.01)
        raise AssertionError(f"fewer than {n} samples in {out}")

    def check_output(self, job, out):
        done = self.dsmath("wait", job)
        status = json.loads(done.stdout)
        self.assertEqual(status["state"], "completed", done.stderr)
        self.assertEqual(int(status["samples_done"]), 120 * 2)  # int64: a JSON string
        rows = read_jsonl(out)
        keys = [(r["id"], r["sample_index"]) for r in rows]
        self.assertEqual(len(keys), len(set(keys)), "a sample was written twice")
        self.assertEqual(by_key(rows), by_key(read_jsonl(self.offline)))
        return status

    def test_a_group_killed_mid_job_leaves_its_runs_to_the_other(self):
        coordinator = self.start()
        groups = [self.group(), self.group()]
        try:
            self.wait_serving(groups=2)
            job = self.dsmath("submit", "--input", "problems.jsonl", "--output", "two.jsonl",
                              *self.SAMPLING).stdout.strip()
            out = os.path.join(self.data, "two.jsonl")
            self.wait_for_samples(out, 20)
            groups[0].kill()  # SIGKILL: its link breaks, its unfinished runs go to the other
            groups[0].wait()
            self.check_output(job, out)
            self.log.seek(0)
            self.assertRegex(self.log.read(), r"worker group \S+ left:")
        finally:
            coordinator.kill()
            coordinator.wait()
            for g in groups:
                g.kill()
                g.wait()
            self.log.close()

    def test_submit_kill_the_coordinator_restart_and_wait(self):
        coordinator = self.start()
        group = self.group()
        try:
            self.wait_serving()
            bad = self.dsmath("submit", "--input", "../problems.jsonl", "--output", "x.jsonl",
                              check=False)
            self.assertEqual(bad.returncode, 1)
            self.assertIn("INVALID_ARGUMENT: input \"../problems.jsonl\" is outside", bad.stderr)
            bad = self.dsmath("submit", "--input", "problems.jsonl", "--output", "y.jsonl",
                              "--top-p", "1.5", check=False)
            self.assertEqual(bad.returncode, 1)
            self.assertIn("INVALID_ARGUMENT: top_p must be in (0, 1]", bad.stderr)
            job = self.dsmath("submit", "--input", "problems.jsonl", "--output", "served.jsonl",
                              "--summary", "served.summary.json", *self.SAMPLING).stdout.strip()
            out = os.path.join(self.data, "served.jsonl")
            self.wait_for_samples(out, 20)  # some samples on disk, then the coordinator dies
            coordinator.kill()
            coordinator.wait()
            coordinator = self.coordinator()  # the group reconnects; the job resumes
            status = self.check_output(job, out)
            self.assertIn("maj@k", json.loads(status["summary_json"])["overall"])
            self.log.seek(0)
            self.assertIn(f"batch job {job} resumed", self.log.read())
            listed = [json.loads(l) for l in self.dsmath("list").stdout.splitlines()]
            self.assertEqual([j["job_id"] for j in listed], [job])
        finally:
            coordinator.kill()
            group.kill()
            coordinator.wait()
            group.wait()
            self.log.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
