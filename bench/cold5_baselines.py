#!/usr/bin/python3
"""Baselines for new users known by a few interactions (PROTOCOL.md section 9, the cold5
split), standard library only: what the history alone can give.

    bench/cold5_baselines.py build/ml100k-split/val/cold5

Prints the cold group's Recall@10/50/100 and NDCG@10 (PROTOCOL.md section 6, the items of
history.tsv seen: excluded from the ranking and the targets) of
  * popularity (training counts),
  * item-kNN: the sum of the cosine similarities (binary user-item matrix of train.tsv)
    of each item to the user's history items, with shrinkage `--shrink`,
  * that kNN score plus a popularity prior: score + beta * log(count + 1), beta on a grid.
Ties: ascending item id. Use it on the validation split to choose; the test split is for
reporting only.
"""
import collections
import math
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
split = args[0] if args else "build/ml100k-split/val/cold5"
shrink = 0.0
for a in sys.argv[1:]:
    if a.startswith("--shrink="):
        shrink = float(a.split("=", 1)[1])
NUM_ITEMS = 1682


def rows(path):
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.strip():
                user, item = line.split("\t")[:2]
                yield int(user), int(item)


train = collections.defaultdict(set)
for u, i in rows(f"{split}/train.tsv"):
    train[u].add(i)
history = collections.defaultdict(list)
for u, i in rows(f"{split}/history.tsv"):
    history[u].append(i)
targets = collections.defaultdict(set)
for u, i in rows(f"{split}/test_cold.tsv"):
    targets[u].add(i)

count = collections.Counter(i for items in train.values() for i in items)
co = collections.defaultdict(collections.Counter)
for items in train.values():
    items = sorted(items)
    for a in items:
        ca = co[a]
        for b in items:
            if a != b:
                ca[b] += 1


def sim(a, b):
    c = co[a][b]
    return c / (math.sqrt(count[a] * count[b]) + shrink) if c else 0.0


def metrics(ranked, truth):
    out = [sum(1 for i in ranked[:k] if i in truth) / len(truth) for k in (10, 50, 100)]
    dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked[:10]) if i in truth)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(10, len(truth))))
    return out + [dcg / idcg]


def evaluate(score):
    sums = [0.0] * 4
    n = 0
    for u in sorted(targets):
        seen = set(history[u]) | train.get(u, set())
        truth = targets[u] - seen
        if not truth:
            continue
        s = score(u)
        ranked = sorted((i for i in range(1, NUM_ITEMS + 1) if i not in seen), key=lambda i: (-s(i), i))[:100]
        for j, m in enumerate(metrics(ranked, truth)):
            sums[j] += m
        n += 1
    return [x / n for x in sums]


def knn(beta):
    def score(u):
        acc = collections.Counter()
        for h in history[u]:
            for b in co[h]:
                acc[b] += sim(h, b)
        return lambda i: acc[i] + beta * math.log(count[i] + 1)
    return score


print(f"split {split}: {len(targets)} users, shrink {shrink}")
print(f"{'system':24s} R@10     R@50     R@100    NDCG@10")
for name, score in [("popularity", lambda u: (lambda i: count[i]))] + \
        [(f"item-kNN + {b} log pop", knn(b)) for b in (0.0, 0.02, 0.05, 0.1, 0.2)]:
    print(f"{name:24s} " + " ".join(f"{m:.4f}" for m in evaluate(score)))
