"""AdminClient against a real twotower_server that requires an admin token."""

from __future__ import annotations

import os
import tempfile
import unittest
from unittest import mock

import grpc

from server import ServerProcess, trained_bundle
from twotower.client import AdminClient, RetrievalClient, TwoTowerError

TOKEN = "py-s3cret"


def setUpModule() -> None:
    global bundle, server, token_dir, token_file
    bundle = trained_bundle()
    token_dir = tempfile.TemporaryDirectory()
    token_file = os.path.join(token_dir.name, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    server = ServerProcess(bundle.path, (f"--admin_token_file={token_file}",)).start()


def tearDownModule() -> None:
    server.stop()
    token_dir.cleanup()


class AdminTest(unittest.TestCase):
    def test_the_token_is_required_and_sent(self) -> None:
        with mock.patch.dict(os.environ, {}, clear=False):
            os.environ.pop("TWOTOWER_ADMIN_TOKEN", None)
            with AdminClient(server.admin_address) as anonymous:
                with self.assertRaises(TwoTowerError) as raised:
                    anonymous.status()
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        with AdminClient(server.admin_address, token="wrong") as wrong:
            with self.assertRaises(TwoTowerError) as raised:
                wrong.reload(bundle.path)
        self.assertEqual(raised.exception.code, grpc.StatusCode.PERMISSION_DENIED)
        with AdminClient(server.admin_address, token_file=token_file) as admin:
            status = admin.status()
        self.assertEqual(status.model_version, server.version)
        self.assertEqual(status.item_count, len(bundle.items))
        with mock.patch.dict(os.environ, {"TWOTOWER_ADMIN_TOKEN": f" {TOKEN} "}):
            with AdminClient(server.admin_address) as from_env:
                self.assertEqual(from_env.status().model_version, server.version)
        with mock.patch.dict(os.environ, {"TWOTOWER_ADMIN_TOKEN": " "}):
            with self.assertRaises(ValueError):
                AdminClient(server.admin_address)
        with self.assertRaises(ValueError):
            AdminClient(server.admin_address, token_file=os.path.join(token_dir.name, "missing"))

    def test_upsert_and_remove_change_what_is_served(self) -> None:
        everything = len(bundle.items) + 1
        with AdminClient(server.admin_address, token=TOKEN) as admin, \
                RetrievalClient(server.address) as retrieval:
            upserted = admin.upsert({"py-new-item": {"genres": ["g3"], "brand": "b7", "price": 12.5}})
            self.assertEqual(upserted.upserted, 1)
            self.assertEqual(upserted.item_count, len(bundle.items) + 1)
            served = retrieval.retrieve(bundle.users[0], k=everything, include_history_items=True)
            self.assertIn("py-new-item", served.item_ids)
            removed = admin.remove(["py-new-item", "never-existed"])
            self.assertEqual(removed.removed, 1)
            self.assertEqual(removed.item_count, len(bundle.items))
            served = retrieval.retrieve(bundle.users[0], k=everything, include_history_items=True)
            self.assertNotIn("py-new-item", served.item_ids)

    def test_reload(self) -> None:
        with AdminClient(server.admin_address, token=TOKEN) as admin:
            reloaded = admin.reload(bundle.path)
            self.assertEqual(reloaded.model_version, server.version)
            self.assertEqual(reloaded.item_count, len(bundle.items))
            with self.assertRaises(TwoTowerError) as raised:
                admin.reload(bundle.path + "-missing")
            self.assertNotEqual(raised.exception.code, grpc.StatusCode.OK)
            self.assertIn("-missing", raised.exception.details)
            self.assertEqual(admin.status().model_version, server.version)


if __name__ == "__main__":
    unittest.main()
