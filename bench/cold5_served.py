#!/usr/bin/python3
"""Asks a running twotower_server for the new users of a cold5 split (docs/BENCHMARKS.md):
each cold user of the split is one Retrieve call carrying the user's features (users.tsv)
and its first interactions (history.tsv, in file order: time order) as the `history`
feature, k = 100, the history's items excluded. Writes the lists (user, item, rank).

    bench/cold5_served.py --address 127.0.0.1:50051 --split build/ml100k-split/cold5 \\
        --recs /tmp/served-cold5.tsv [--gen_dir build/python]

The bundle must come from configs/ml100k.textproto (its user features: gender, occupation,
age, zip, history). The trainer writes the same lists for its cold5 eval set (--recs_out
'recs-{set}.tsv'); `cmp` them to check that serving and the trainer's evaluation agree.
"""
import argparse
import collections
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

FEATURES = ("gender", "occupation", "age", "zip")  # users.tsv columns 1..4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default="127.0.0.1:50051")
    ap.add_argument("--split", default=os.path.join(HERE, "..", "build", "ml100k-split", "cold5"))
    ap.add_argument("--recs", required=True)
    ap.add_argument("--gen_dir", default=os.path.join(HERE, "..", "build", "python"))
    a = ap.parse_args()
    # The package in place: its sources and the stubs the build generated.
    sys.path[:0] = [os.path.join(HERE, "..", "client", "python"), a.gen_dir]
    from twotower.client import RetrievalClient
    history = collections.defaultdict(list)
    with open(os.path.join(a.split, "history.tsv")) as f:
        for line in f:
            user, item = line.split("\t")[:2]
            history[user].append(item)
    targets = set()
    with open(os.path.join(a.split, "test_cold.tsv")) as f:
        targets.update(line.split("\t")[0] for line in f if line.strip())
    features = {}
    with open(os.path.join(a.split, "users.tsv")) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            features[fields[0]] = fields[1:]
    users = sorted(targets, key=int)
    client = RetrievalClient(a.address, timeout_s=10.0)
    lines = []
    for user in users:
        response = client.retrieve(user, k=100, features=dict(zip(FEATURES, features[user])),
                                   history=history[user], exclude=history[user])
        if response.user_known:
            sys.exit(f"user {user} is known to the model: not a cold5 user of this bundle")
        lines += [f"{user}\t{item.item_id}\t{rank}\n" for rank, item in enumerate(response.items, 1)]
    client.close()
    with open(a.recs, "w") as f:
        f.writelines(lines)
    print(f"{len(users)} users, {len(lines)} recommendations -> {a.recs}", file=sys.stderr)


if __name__ == "__main__":
    main()
