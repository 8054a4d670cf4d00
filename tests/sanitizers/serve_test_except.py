"""Runs tests/e2e/serve_test.py except the tests named (launch/sanitize.sh tsan).

    serve_test_except.py BIN_DIR [Class.test_name ...]

The named tests are left out, and said so, because their fixed deadlines are meant for an
optimised build; every other test of serve_test.py runs as ctest's e2e.serve would run it.
"""
import importlib.util
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "e2e", "serve_test.py")
bin_dir, skipped = sys.argv[1], set(sys.argv[2:])
sys.argv = [path, bin_dir]  # serve_test.py takes BIN_DIR from argv[1] when imported
spec = importlib.util.spec_from_file_location("serve_test", path)
serve_test = importlib.util.module_from_spec(spec)
sys.modules["serve_test"] = serve_test
spec.loader.exec_module(serve_test)


def tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from tests(t)
        else:
            yield t


everything = list(tests(unittest.defaultTestLoader.loadTestsFromModule(serve_test)))
name = lambda t: t.id().split(".", 1)[1]  # noqa: E731  (Class.test_name)
unknown = skipped - {name(t) for t in everything}
if unknown:
    sys.exit(f"serve_test_except: no such test in serve_test.py: {', '.join(sorted(unknown))}")
for n in sorted(skipped):
    print(f"serve_test_except: left out {n}", flush=True)
kept = [t for t in everything if name(t) not in skipped]
result = unittest.TextTestRunner(verbosity=2).run(unittest.TestSuite(kept))
sys.exit(0 if result.wasSuccessful() else 1)
