"""RetrievalClient against a real twotower_server."""

from __future__ import annotations

import json
import signal
import time
import unittest

import grpc

from server import ServerProcess, free_port, serve_trained_bundle, stop_served
from twotower.client import (Query, RetrievalClient, TwoTowerError, load_service_config,
                             shipped_service_config)

COLD_FEATURES = {"segment": "s1", "age": 31.0, "region": "r2", "interests": ["g0", "g3"]}


def setUpModule() -> None:
    global bundle, server, client
    bundle, server, client = serve_trained_bundle()


def tearDownModule() -> None:
    stop_served(server, client)


class RetrieveTest(unittest.TestCase):
    def test_known_user_gets_k_items_best_first(self) -> None:
        result = client.retrieve(bundle.users[0], k=5)
        self.assertEqual(len(result.items), 5)
        self.assertEqual(result.model_version, server.version)
        self.assertTrue(result.user_known)
        scores = [item.score for item in result.items]
        self.assertEqual(scores, sorted(scores, reverse=True))
        self.assertEqual(len(set(result.item_ids)), 5)
        self.assertTrue(set(result.item_ids) <= set(bundle.items))

    def test_features_serve_a_user_the_model_never_saw(self) -> None:
        result = client.retrieve("py-new-user", k=5, features=COLD_FEATURES)
        self.assertFalse(result.user_known)
        self.assertEqual(len(result.items), 5)
        other = client.retrieve("py-new-user", k=5, features={**COLD_FEATURES, "segment": "s3",
                                                               "interests": ["g5"], "age": 70.0})
        self.assertNotEqual([i.score for i in result.items], [i.score for i in other.items])

    def test_exclusions_are_not_returned(self) -> None:
        user = bundle.users[1]
        top = client.retrieve(user, k=3).item_ids
        result = client.retrieve(user, k=3, exclude=[top[0]])
        self.assertNotIn(top[0], result.item_ids)
        self.assertEqual(result.item_ids[:2], top[1:])

    def test_filters_keep_only_matching_items(self) -> None:
        user = bundle.users[2]
        brand = bundle.brands[client.retrieve(user, k=1).item_ids[0]]
        result = client.retrieve(user, k=len(bundle.items), filters={"brand": [brand]},
                                 include_history_items=True)
        self.assertGreater(len(result.items), 0)
        self.assertEqual({bundle.brands[i] for i in result.item_ids}, {brand})
        self.assertEqual(len(result.items), sum(1 for b in bundle.brands.values() if b == brand))

    def test_history_items_are_left_out_unless_asked(self) -> None:
        clicked = [bundle.items[3], bundle.items[7]]
        everything = len(bundle.items)
        without = client.retrieve("py-fresh", k=everything, history=clicked).item_ids
        self.assertEqual(len(without), everything - 2)
        self.assertFalse(set(clicked) & set(without))
        with_them = client.retrieve("py-fresh", k=everything, history=clicked,
                                    include_history_items=True).item_ids
        self.assertTrue(set(clicked) <= set(with_them))
        # The history is the model's input too: it changes the scores.
        scores = {i.item_id: i.score for i in client.retrieve(
            "py-fresh", k=everything, history=clicked, include_history_items=True).items}
        plain = {i.item_id: i.score for i in client.retrieve(
            "py-fresh", k=everything, include_history_items=True).items}
        self.assertNotEqual(scores, plain)

    def test_history_given_twice_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            client.retrieve("u", history=["a"], features={"history": ["b"]})

    def test_batch_answers_each_query_as_retrieve_does(self) -> None:
        queries = [Query(bundle.users[0], 4), Query("py-new-user", 3, features=COLD_FEATURES),
                   Query(bundle.users[1], 2, exclude=[bundle.items[0]])]
        results = client.batch_retrieve(queries)
        self.assertEqual(len(results), 3)
        for query, result in zip(queries, results):
            single = client.retrieve_query(query)
            self.assertEqual(result.item_ids, single.item_ids)
            self.assertEqual(result.model_version, single.model_version)

    def test_errors_carry_the_status_code(self) -> None:
        with self.assertRaises(TwoTowerError) as raised:
            client.retrieve(bundle.users[0], k=0)
        self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("INVALID_ARGUMENT", str(raised.exception))
        with self.assertRaises(TwoTowerError) as raised:
            client.retrieve("u", k=1, features={"age": "not-a-number"})
        self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with RetrievalClient(f"127.0.0.1:{free_port()}", timeout_s=2.0) as nowhere:
            with self.assertRaises(TwoTowerError) as raised:
                nowhere.retrieve("u", k=1)
        self.assertIn(raised.exception.code, (grpc.StatusCode.UNAVAILABLE,
                                              grpc.StatusCode.DEADLINE_EXCEEDED))

    def test_health(self) -> None:
        self.assertEqual(client.health(), "SERVING")
        self.assertEqual(client.health("twotower.v1.Retrieval"), "SERVING")
        with self.assertRaises(TwoTowerError) as raised:
            client.health("no.such.Service")
        self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)


class DrainingHealthTest(unittest.TestCase):
    def test_a_draining_server_reports_not_serving(self) -> None:
        draining = ServerProcess(bundle.path, ("--drain_delay_ms=20000",)).start()
        try:
            with RetrievalClient(draining.address) as probe:
                self.assertEqual(probe.health("twotower.v1.Retrieval"), "SERVING")
                draining.send_signal(signal.SIGTERM)  # the drain delay starts
                deadline = time.monotonic() + 10
                status = "SERVING"
                while status == "SERVING" and time.monotonic() < deadline:
                    status = probe.health("twotower.v1.Retrieval")
                self.assertEqual(status, "NOT_SERVING")
        finally:
            self.assertEqual(draining.stop(), 0)  # a second SIGTERM cuts the drain short


class ServiceConfigTest(unittest.TestCase):
    def test_dns_targets_use_the_shipped_config(self) -> None:
        shipped = json.loads(shipped_service_config())
        self.assertEqual(shipped["loadBalancingConfig"], [{"round_robin": {}}])
        self.assertEqual(shipped["healthCheckConfig"], {"serviceName": "twotower.v1.Retrieval"})
        with RetrievalClient(f"dns:///{server.address}") as dns:
            self.assertEqual(dns.service_config, shipped_service_config())
            self.assertEqual(dns.retrieve(bundle.users[0], k=3).item_ids,
                             client.retrieve(bundle.users[0], k=3).item_ids)
        self.assertIsNone(client.service_config)
        with RetrievalClient(f"dns:///{server.address}", service_config=None) as plain:
            self.assertIsNone(plain.service_config)

    def test_a_given_config_is_in_force(self) -> None:
        # Health checking a service the server does not serve leaves no usable address.
        config = shipped_service_config().replace('"twotower.v1.Retrieval"}', '"no.such.Service"}')
        self.assertNotEqual(config, shipped_service_config())
        with RetrievalClient(f"dns:///{server.address}", timeout_s=2.0, service_config=config) as bad:
            with self.assertRaises(TwoTowerError) as raised:
                bad.retrieve(bundle.users[0], k=3)
        self.assertIn(raised.exception.code, (grpc.StatusCode.UNAVAILABLE,
                                              grpc.StatusCode.DEADLINE_EXCEEDED))

    def test_configs_grpc_refuses_are_errors(self) -> None:
        with self.assertRaises(ValueError):
            RetrievalClient(f"dns:///{server.address}",
                            service_config='{"loadBalancingConfig": [{"no_such_policy": {}}]}')
        with self.assertRaises(ValueError):
            load_service_config("/nonexistent/service_config.json")


if __name__ == "__main__":
    unittest.main()
