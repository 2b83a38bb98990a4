#!/usr/bin/python3
"""Scores new users through a running twotower_server (PROTOCOL.md section 9, cold5): each
cold user of the split is one Retrieve call carrying the user's features (users.tsv) and
its first interactions (history.tsv, in file order: time order) as the `history`
feature, k = 100, the history's items excluded. Writes the lists (eval.py's input) and
prints eval.py's numbers for the split's cold group.

    bench/cold5_served.py --address 127.0.0.1:50051 --split ../shared/eval/data/cold5 \\
        --recs /tmp/served-cold5.tsv [--gen_dir build/python]

The bundle must come from configs/ml100k.textproto (its user features: gender, occupation,
age, zip, history). The trainer writes the same lists for its cold5 eval set (--recs_out
'recs-{set}.tsv'); `cmp` them to check that serving and the trainer's evaluation agree.
"""
import argparse
import collections
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "client", "python"))
import twotower_client  # noqa: E402

FEATURES = ("gender", "occupation", "age", "zip")  # users.tsv columns 1..4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default="127.0.0.1:50051")
    ap.add_argument("--split", default=os.path.join(HERE, "..", "..", "shared", "eval", "data", "cold5"))
    ap.add_argument("--recs", required=True)
    ap.add_argument("--gen_dir", default=os.path.join(HERE, "..", "build", "python"))
    a = ap.parse_args()
    _, retrieval_pb2 = twotower_client._import_generated(a.gen_dir)
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
    client = twotower_client.RetrievalClient(a.address, retrieval_pb2, timeout_s=10.0)
    lines = []
    for user in users:
        request = retrieval_pb2.RetrieveRequest(user_id=user, k=100)
        for name, value in zip(FEATURES, features[user]):
            request.user_features[name].categorical = value
        request.user_features["history"].multi_hot.values.extend(history[user])
        request.exclude_item_ids.extend(history[user])
        response = client.retrieve(request)
        if response.user_known:
            sys.exit(f"user {user} is known to the model: not a cold5 user of this bundle")
        lines += [f"{user}\t{item.item_id}\t{rank}\n" for rank, item in enumerate(response.items, 1)]
    client.close()
    with open(a.recs, "w") as f:
        f.writelines(lines)
    print(f"{len(users)} users, {len(lines)} recommendations -> {a.recs}", file=sys.stderr)
    out = subprocess.run([sys.executable, os.path.join(a.split, "..", "..", "eval.py"), "--split", a.split,
                          "--recs", a.recs], capture_output=True, text=True)
    print(out.stdout, end="")
    sys.exit(out.returncode)


if __name__ == "__main__":
    main()
