#!/usr/bin/env python3
"""The trained arithmetic model (tests/data/models/arith) end to end, where answers mean something:

- greedy accuracy on its 200 held-out problems is at least 90% through `dsmath-worker generate`
  (chat template + chain of thought), with the same tokens at tp 1 and tp 2 and the same tokens
  as Hugging Face transformers on the same checkpoint (hf_greedy.jsonl, tools/eval_arith.py);
- a sampled batch job's summary reports the accuracy that `dsmath grade` computes on its output;
- a served request with stop `\\boxed` ends where the greedy text first says `\\boxed`.

    arith_test.py BIN_DIR [unittest args]     (DSMATH_ARITH_MODEL=DIR tests another checkpoint)
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

from ports import free_ports

BIN = os.path.abspath(sys.argv.pop(1))
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.environ.get("DSMATH_ARITH_MODEL", os.path.join(SRC, "tests", "data", "models", "arith"))
TMP = tempfile.mkdtemp(prefix="dsmath-arith-test-")
SCALE = float(os.environ.get("DSMATH_TEST_TIMEOUT_SCALE", "1"))  # sanitizer builds: slower
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"] + (
    ["--allow-run-as-root"] if os.geteuid() == 0 else [])


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


HELDOUT = read_jsonl(os.path.join(MODEL, "heldout.jsonl"))


def grade(rows):
    """`dsmath grade` over {"text", "answer"} lines: the list of `correct` flags."""
    path = write_jsonl(os.path.join(TMP, f"grade-{time.monotonic_ns()}.jsonl"), rows)
    out = subprocess.run([f"{BIN}/dsmath", "grade", "--input", path], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return [json.loads(line)["correct"] for line in out]


def greedy(np):
    """Greedy completions of every held-out problem at tp `np`, in input order."""
    prompts = write_jsonl(os.path.join(TMP, "prompts.jsonl"),
                          [{"id": p["id"], "prompt": p["question"]} for p in HELDOUT])
    cmd = [f"{BIN}/dsmath-worker", "generate", "--model", MODEL, "--threads", "1",
           "--prompts-file", prompts, "--chat", "--cot", "--temperature", "0",
           "--max-new-tokens", "48", "--format", "json"]
    if np > 1:
        cmd = MPIRUN + ["-np", str(np)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    return [json.loads(line) for line in out]


class ArithModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tp1 = greedy(1)

    def test_greedy_accuracy_at_least_90_percent(self):
        self.assertEqual([r["id"] for r in self.tp1], [p["id"] for p in HELDOUT])
        correct = grade([{"text": r["text"], "answer": p["answer"]}
                         for r, p in zip(self.tp1, HELDOUT)])
        accuracy = sum(correct) / len(correct)
        print(f"greedy accuracy on {len(correct)} held-out problems: {accuracy:.1%}")
        self.assertGreaterEqual(accuracy, 0.90)

    def test_tp2_gives_the_same_tokens(self):
        tp2 = greedy(2)
        self.assertEqual([r["token_ids"] for r in tp2], [r["token_ids"] for r in self.tp1])

    def test_same_tokens_as_transformers(self):
        hf = {r["id"]: r for r in read_jsonl(os.path.join(MODEL, "hf_greedy.jsonl"))}
        self.assertEqual(len(hf), len(HELDOUT))
        # f32 against f32 differ by ~1e-5 in a logit: a path with a closer near-tie is no test.
        near_ties = [i for i, r in hf.items() if r["min_margin"] < 1e-3]
        self.assertLessEqual(len(near_ties), 2, near_ties)
        for r in self.tp1:
            if r["id"] not in near_ties:
                self.assertEqual(r["token_ids"], hf[r["id"]]["token_ids"], r["id"])

    def test_batch_summary_accuracy_is_what_grade_computes(self):
        problems = os.path.join(TMP, "problems.jsonl")
        write_jsonl(problems, HELDOUT[:50])
        output, summary = os.path.join(TMP, "samples.jsonl"), os.path.join(TMP, "summary.json")
        subprocess.run([f"{BIN}/dsmath-worker", "batch", "--model", MODEL, "--threads", "1",
                        "--input", problems, "--output", output, "--summary", summary,
                        "--chat", "--cot", "--n", "4", "--temperature", "0.7", "--seed", "3",
                        "--max-new-tokens", "48"], check=True, capture_output=True)
        samples = read_jsonl(output)
        self.assertEqual(len(samples), 200)
        reference = {p["id"]: p["answer"] for p in HELDOUT}
        correct = grade([{"text": s["text"], "answer": reference[s["id"]]} for s in samples])
        self.assertEqual(correct, [s["correct"] for s in samples])
        with open(summary) as f:
            overall = json.load(f)["overall"]
        print(f"sampled (t 0.7, n 4): {json.dumps(overall)}")
        self.assertAlmostEqual(overall["mean_accuracy"], sum(correct) / len(correct), places=9)
        self.assertGreaterEqual(overall["mean_accuracy"], 0.5)  # it really does arithmetic
        self.assertGreaterEqual(overall["maj@k"], overall["mean_accuracy"] - 0.1)


class ServedStopTest(unittest.TestCase):
    def test_stop_at_boxed_ends_before_it(self):
        address, workers = (f"127.0.0.1:{p}" for p in free_ports(2))
        log = open(os.path.join(TMP, "served.log"), "w+")
        coordinator = subprocess.Popen([f"{BIN}/dsmath-coordinator", "--model", MODEL,
                                        "--listen", address, "--worker-listen", workers],
                                       stderr=log)
        group = subprocess.Popen([f"{BIN}/dsmath-worker", "serve", "--model", MODEL, "--threads",
                                  "1", "--coordinator", workers, "--max-reconnect-seconds", "1"],
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60 * SCALE
            while time.time() < deadline:
                health = subprocess.run([f"{BIN}/dsmath", "health", "--server", address],
                                        capture_output=True, text=True)
                if health.stdout.strip() == "SERVING":
                    break
                time.sleep(0.1)
            else:
                log.seek(0)
                self.fail("the coordinator never served a worker group:\n" + log.read())
            question = HELDOUT[0]["question"]
            ask = [f"{BIN}/dsmath", "generate", "--server", address, "--chat", "--cot",
                   "--temperature", "0", "--max-new-tokens", "48", "--format", "json", question]
            full = json.loads(subprocess.run(ask, capture_output=True, text=True,
                                             check=True).stdout)["outputs"][0]
            self.assertIn("\\boxed", full["text"])
            cut = json.loads(subprocess.run(ask + ["--stop", "\\boxed"], capture_output=True,
                                            text=True, check=True).stdout)["outputs"][0]
            self.assertEqual(cut["text"], full["text"][:full["text"].index("\\boxed")])
            self.assertEqual(cut["finish_reason"], "stop")
            self.assertEqual(cut["stop_reason"], {"stop_string": "\\boxed"})
        finally:
            coordinator.terminate()
            coordinator.wait(timeout=30 * SCALE)
            group.wait(timeout=30 * SCALE)
            log.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
