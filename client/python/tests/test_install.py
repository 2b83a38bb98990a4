"""`pip install --no-deps` of client/python into a fresh directory gives a package that
imports (nothing from the source tree or the build directory) and calls a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from server import ServerProcess, trained_bundle

PACKAGE_DIR = Path(__file__).resolve().parents[1]

CALL = """
import json, sys
import twotower.client as c
with c.RetrievalClient(sys.argv[1]) as client:
    result = client.retrieve(sys.argv[2], k=3)
print(json.dumps({"file": c.__file__, "items": result.item_ids, "config": c.shipped_service_config()}))
"""


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.bundle = trained_bundle()
        cls.server = ServerProcess(cls.bundle.path).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def test_pip_install_target_imports_and_calls_the_server(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, "site")
            pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                                  "--disable-pip-version-check", "--target", target, str(PACKAGE_DIR)],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
            # Only the installed copy on the path, run from elsewhere than the source tree.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["PYTHONPATH"] = target
            run = subprocess.run([sys.executable, "-c", CALL, self.server.address, self.bundle.users[0]],
                                 capture_output=True, text=True, cwd=tmp, env=env, timeout=60)
            self.assertEqual(run.returncode, 0, run.stderr)
            out = json.loads(run.stdout)
            self.assertTrue(out["file"].startswith(target), out["file"])
            self.assertEqual(len(out["items"]), 3)
            shipped = (PACKAGE_DIR.parent / "service_config.json").read_text(encoding="utf-8")
            self.assertEqual(out["config"], shipped)
            # The console script.
            script = subprocess.run([os.path.join(target, "bin", "twotower-py"), "--address",
                                     self.server.address, "--user", self.bundle.users[0], "--k", "3",
                                     "--json"], capture_output=True, text=True, cwd=tmp, env=env, timeout=60)
            self.assertEqual(script.returncode, 0, script.stderr)
            self.assertEqual([i["item_id"] for i in json.loads(script.stdout)["items"]], out["items"])
            # Nothing generated or built was left in the source tree.
            self.assertEqual(sorted(p.name for p in PACKAGE_DIR.glob("twotower/*")), ["client"])
            self.assertFalse((PACKAGE_DIR / "build").exists())


if __name__ == "__main__":
    unittest.main()
