"""The command line (python3 -m twotower.client) against a real twotower_server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest

from server import free_port, serve_trained_bundle, stop_served


def setUpModule() -> None:
    global bundle, server, client
    bundle, server, client = serve_trained_bundle()


def tearDownModule() -> None:
    stop_served(server, client)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twotower.client", *args], capture_output=True,
                          text=True, timeout=60)


def top_of_listing(out: str) -> str:
    """The item id on the "1 <item_id> <score>" line of the listing."""
    for line in out.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "1":
            return words[1]
    return ""


class CliTest(unittest.TestCase):
    def test_listing_agrees_with_the_api(self) -> None:
        user = bundle.users[0]
        run = cli("--address", server.address, "--user", user, "--k", "5")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn(server.version, run.stdout)
        self.assertEqual(top_of_listing(run.stdout), client.retrieve(user, k=5).item_ids[0])
        cold = cli("--address", server.address, "--user", "py-cold", "--k", "5", "--feature", "segment=s1",
                   "--feature", "age=num:31", "--feature", "region=r2", "--feature", "interests=multi:g0|g3")
        self.assertEqual(cold.returncode, 0, cold.stderr)
        expected = client.retrieve("py-cold", k=5, features={"segment": "s1", "age": 31.0, "region": "r2",
                                                             "interests": ["g0", "g3"]})
        self.assertEqual(top_of_listing(cold.stdout), expected.item_ids[0])

    def test_json_filters_history_and_exclusions(self) -> None:
        everything = str(len(bundle.items))
        clicked = [bundle.items[3], bundle.items[7]]
        run = cli("--address", server.address, "--user", "py-fresh", "--k", everything, "--json",
                  "--history", ",".join(clicked), "--exclude", bundle.items[9])
        self.assertEqual(run.returncode, 0, run.stderr)
        result = json.loads(run.stdout)
        expected = client.retrieve("py-fresh", k=len(bundle.items), history=clicked, exclude=[bundle.items[9]])
        self.assertEqual([i["item_id"] for i in result["items"]], expected.item_ids)
        self.assertEqual(result["model_version"], server.version)
        self.assertFalse(result["user_known"])
        self.assertEqual(len(result["items"]), len(bundle.items) - 3)
        included = json.loads(cli("--address", server.address, "--user", "py-fresh", "--k", everything,
                                  "--json", "--history", ",".join(clicked),
                                  "--include_history_items").stdout)
        self.assertTrue(set(clicked) <= {i["item_id"] for i in included["items"]})

        brands = sorted(set(bundle.brands.values()))[:2]
        run = cli("--address", server.address, "--user", bundle.users[0], "--k", everything, "--json",
                  "--include_history_items", "--filter", "brand=" + "|".join(brands))
        self.assertEqual(run.returncode, 0, run.stderr)
        ids = [i["item_id"] for i in json.loads(run.stdout)["items"]]
        self.assertEqual(len(ids), sum(1 for b in bundle.brands.values() if b in brands))
        self.assertTrue(all(bundle.brands[i] in brands for i in ids))

    def test_usage_errors_exit_2(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            not_json = os.path.join(tmp, "not.json")
            with open(not_json, "w") as f:
                f.write('{"loadBalancingConfig": [')
            refused = os.path.join(tmp, "refused.json")
            with open(refused, "w") as f:
                f.write('{"loadBalancingConfig": [{"no_such_policy": {}}]}')
            for args, message in [
                    (["--user", "u", "--feature", "segment"], "NAME=VALUE"),
                    (["--user", "u", "--feature", "age=num:old"], "age=num:old"),
                    (["--user", "u", "--feature", "age=num:nan"], "age=num:nan"),
                    (["--user", "u", "--feature", "age=num:inf"], "age=num:inf"),
                    (["--user", "u", "--feature", "a=x", "--feature", "a=y"], "given twice"),
                    (["--user", "u", "--filter", "brand="], "--filter"),
                    (["--user", "u", "--history", "a", "--feature", "history=multi:b"], "history"),
                    ([], "needs --user"),
                    (["--user", "u", "--k", "many"], "--k"),
                    (["--user", "u", "--service_config", not_json], "--service_config " + not_json),
                    (["--user", "u", "--service_config", refused], "--service_config " + refused)]:
                run = cli("--address", f"dns:///{server.address}", *args)
                self.assertEqual(run.returncode, 2, f"{args}: {run.stderr}")
                self.assertIn(message, run.stderr, args)

    def test_failed_calls_exit_1(self) -> None:
        run = cli("--address", server.address, "--user", bundle.users[0], "--k", "0")
        self.assertEqual(run.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", run.stderr)
        run = cli("--address", f"127.0.0.1:{free_port()}", "--user", "u", "--timeout_ms", "2000")
        self.assertEqual(run.returncode, 1)
        self.assertRegex(run.stderr, "UNAVAILABLE|DEADLINE_EXCEEDED")


if __name__ == "__main__":
    unittest.main()
