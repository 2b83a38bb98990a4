"""Python client of the twotower retrieval service.

    from twotower.client import RetrievalClient

    with RetrievalClient("127.0.0.1:50051") as client:
        result = client.retrieve("u00012", k=10)
        result = client.retrieve("new-user", k=10, features={"segment": "s1", "age": 31.0},
                                 history=["i00003", "i00007"], filters={"brand": ["b1"]})
        for item in result.items:
            print(item.item_id, item.score)

AdminClient calls the Admin API (status, reload, upsert, remove) with the admin token.
Failed calls raise TwoTowerError, whose `code` is the grpc.StatusCode.
"""

from twotower.client._client import (AUTO, AdminClient, FeatureInput, Query, RetrievalClient,
                                     RetrieveResult, ScoredItem, TwoTowerError, load_service_config,
                                     read_admin_token, shipped_service_config)

__all__ = ["AUTO", "AdminClient", "FeatureInput", "Query", "RetrievalClient", "RetrieveResult",
           "ScoredItem", "TwoTowerError", "load_service_config", "read_admin_token",
           "shipped_service_config"]
