"""Command line: top-k items for a user from a running twotower_server.

    twotower-py --address 127.0.0.1:50051 --user u00012 --k 10
    twotower-py --user new-user --feature segment=s1 --feature age=num:31 \\
        --feature 'interests=multi:g0|g3' --history i00003,i00007 --filter 'brand=b1|b2' --json

(or python3 -m twotower.client ...). --feature values are typed as in the C++
twotower_client: TOKEN (categorical), cat:TOKEN, int:42, num:3.5, multi:a|b|c. A dns:///
--address uses the shipped service config (round_robin, health checking, retries on
UNAVAILABLE) unless --service_config names another.

Exit status: 0 ok, 1 the call failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from twotower.client._client import (AUTO, FeatureInput, Query, RetrievalClient, RetrieveResult,
                                     TwoTowerError, load_service_config)


def parse_feature(text: str) -> tuple[str, FeatureInput]:
    """"NAME=[TYPE:]VALUE" -> (name, value); ValueError when malformed."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f'--feature "{text}": expected NAME=VALUE')
    try:
        if value.startswith("int:"):
            return name, int(value[len("int:"):])
        if value.startswith("num:"):
            number = float(value[len("num:"):])
            if not math.isfinite(number):
                raise ValueError("not a finite number")
            return name, number
    except ValueError as e:
        raise ValueError(f'--feature "{text}": {e}') from e
    if value.startswith("multi:"):
        tokens = value[len("multi:"):]
        return name, tokens.split("|") if tokens else []
    return name, value[len("cat:"):] if value.startswith("cat:") else value


def parse_filter(text: str) -> tuple[str, list[str]]:
    """"FEATURE=v1|v2" -> (feature, [v1, v2]); ValueError when malformed."""
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise ValueError(f'--filter "{text}": expected FEATURE=VALUE|VALUE...')
    return name, values.split("|")


def _query(args: argparse.Namespace) -> Query:
    """The Query the flags describe; ValueError for a usage error."""
    features: dict[str, FeatureInput] = {}
    for text in args.feature:
        name, value = parse_feature(text)
        if name in features:
            raise ValueError(f"--feature {name} given twice")
        features[name] = value
    filters: dict[str, list[str]] = {}
    for text in args.filter:
        name, values = parse_filter(text)
        if name in filters:
            raise ValueError(f"--filter {name} given twice")
        filters[name] = values
    history = [i for i in args.history.split(",") if i] if args.history is not None else None
    if not args.user and not features and history is None:
        raise ValueError("needs --user, --feature, --history or several")
    query = Query(user_id=args.user, k=args.k, features=features, history=history, filters=filters,
                  exclude=[i for i in args.exclude.split(",") if i],
                  include_history_items=args.include_history_items)
    query.to_proto()  # raises ValueError for what the request cannot hold
    return query


def _print(result: RetrieveResult, user: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"model_version": result.model_version, "user_known": result.user_known,
                          "items": [{"item_id": i.item_id, "score": i.score} for i in result.items]}))
        return
    print("model %s, user %s (%s), %d items" % (
        result.model_version, user or "-",
        "known" if result.user_known else "unknown: served from features / OOV", len(result.items)))
    width = max([len("item_id")] + [len(item.item_id) for item in result.items])
    print("%-5s %-*s %s" % ("rank", width, "item_id", "score"))
    for rank, item in enumerate(result.items, 1):
        print("%-5d %-*s %.6f" % (rank, width, item.item_id, item.score))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="twotower-py", description="Top-k items for a user from a running twotower_server.")
    parser.add_argument("--address", default="127.0.0.1:50051",
                        help="Retrieval API address: host:port or dns:///name:port")
    parser.add_argument("--user", default="", help="user id")
    parser.add_argument("--k", type=int, default=10, help="number of items")
    parser.add_argument("--feature", action="append", default=[],
                        help="NAME=[TYPE:]VALUE user feature, repeatable (see the module doc)")
    parser.add_argument("--history", default=None,
                        help="comma-separated item ids the user recently interacted with "
                             "(the model's history feature)")
    parser.add_argument("--filter", action="append", default=[],
                        help="FEATURE=VALUE|VALUE...: only items with one of these values, repeatable")
    parser.add_argument("--exclude", default="", help="comma-separated item ids to skip")
    parser.add_argument("--include_history_items", action="store_true",
                        help="also return the items of the user's history (left out by default)")
    parser.add_argument("--timeout_ms", type=int, default=5000, help="call deadline")
    parser.add_argument("--service_config", default=None,
                        help="gRPC service config JSON file (default for dns: targets: the shipped one)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)

    try:
        query = _query(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        service_config = load_service_config(args.service_config) if args.service_config else AUTO
    except ValueError as e:
        print(f"error: --service_config {e}", file=sys.stderr)
        return 2
    try:
        client = RetrievalClient(args.address, timeout_s=args.timeout_ms / 1000.0,
                                 service_config=service_config)
    except ValueError as e:
        print(f"error: --service_config {args.service_config or '(shipped)'}: {e}", file=sys.stderr)
        return 2
    try:
        result = client.retrieve_query(query)
    except TwoTowerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    _print(result, args.user, args.json)
    return 0
