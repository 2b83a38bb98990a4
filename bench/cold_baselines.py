#!/usr/bin/python3
"""Cold-user Recall@50 of popularity variants on a split of scripts/ml100k_split.py (standard
library only): how much signal there is for users known only by their features.

    bench/cold_baselines.py build/ml100k-split/val

Prints, for the split's cold users, Recall@50 (PROTOCOL.md section 6) of
  * popularity (training counts; the reference row),
  * user-normalised popularity: each training user's interactions weighted n^-a,
  * a naive-Bayes tilt of that by the four demographic features, shrunk toward it by m
    pseudo-counts and applied with weight lam,
each with the mean paired difference to popularity over the cold users and its standard
error. Use it on the validation split: the test split is for reporting only.
"""
import collections
import math
import sys

split = sys.argv[1] if len(sys.argv) > 1 else "build/ml100k-split/val"
NUM_ITEMS = 1682


def rows(path):
    with open(path, encoding="latin-1") as f:
        for line in f:
            user, item, _, _ = line.split("\t")
            yield int(user), int(item)


train = list(rows(f"{split}/train.tsv"))
cold = collections.defaultdict(set)
for user, item in rows(f"{split}/test_cold.tsv"):
    cold[user].add(item)
features = {}
with open(f"{split}/users.tsv", encoding="latin-1") as f:
    for line in f:
        fields = line.rstrip("\n").split("\t")
        features[int(fields[0])] = fields[1:]
positives = collections.Counter(user for user, _ in train)


def recalls(score_of_user):
    out = []
    for user, items in sorted(cold.items()):
        scores = score_of_user(user)
        top = sorted(range(1, NUM_ITEMS + 1), key=lambda i: (-scores.get(i, -1e18), i))[:50]
        out.append(len(set(top) & items) / len(items))
    return out


def report(name, values, reference):
    diffs = [a - b for a, b in zip(values, reference)]
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 / len(diffs) ** 0.5
    print(f"{name:48s} {sum(values) / len(values):.4f}  ({mean:+.4f} +- {se:.4f} vs popularity)")


def weighted_popularity(a):
    weight = {u: n ** (-a) for u, n in positives.items()}
    counts, total = collections.defaultdict(float), 0.0
    for user, item in train:
        counts[item] += weight[user]
        total += weight[user]
    return weight, {i: c / total for i, c in counts.items()}


_, plain = weighted_popularity(0.0)
reference = recalls(lambda u: plain)
report("popularity", reference, reference)
for a in (0.5, 1.0):
    weight, p = weighted_popularity(a)
    report(f"user-normalised popularity, a {a}", recalls(lambda u: p), reference)
    groups = []
    for f in range(4):
        counts = collections.defaultdict(lambda: collections.defaultdict(float))
        totals = collections.defaultdict(float)
        for user, item in train:
            g = features[user][f]
            counts[g][item] += weight[user]
            totals[g] += weight[user]
        groups.append((counts, totals))
    for m, lam in ((100, 0.25), (100, 0.5), (20, 1.0)):
        def score(user, m=m, lam=lam):
            out = {}
            for item, pi in p.items():
                s = math.log(pi)
                for f, (counts, totals) in enumerate(groups):
                    g = features[user][f]
                    s += lam * math.log((counts[g].get(item, 0.0) + m * pi) / (totals[g] + m) / pi)
                out[item] = s
            return out
        report(f"  + demographics, m {m}, lam {lam}", recalls(score), reference)
