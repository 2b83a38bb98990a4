#!/usr/bin/env bash
# Tuning on the validation split only (the split's val/, bench/ml100k_split.sh): trains configs/ml100k.textproto
# with an --override for SEEDS seeds and prints, per evaluated epoch, the mean warm Recall@50,
# warm NDCG@10, cold Recall@50 and (with the config's cold5 set: data/val/cold5) cold5
# Recall@50 and NDCG@10 over the seeds (the trainer's own metrics, which equal the protocol's eval.py).
# This is how the settings in bench/ml100k_quality.sh were chosen.
#   bench/ml100k_val.sh SEEDS 'training { temperature: 0.15 }' [CONFIG]
# (An override to a pointwise or pairwise objective also needs cold_user_balance: 0, which
# the config sets for the softmax objectives only.)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:?seeds}
OVERRIDE=${2:-}
CONFIG=${3:-configs/ml100k.textproto}
source bench/ml100k_split.sh
VAL=$SPLIT/val
OUT=$(mktemp -d /tmp/twotower-val-XXXXXX)
trap 'rm -rf "$OUT"' EXIT
for seed in $(seq 1 "$SEEDS"); do
  build/twotower_train --config "$CONFIG" --data_dir "$VAL" --export_dir "$OUT/bundles" \
    --metrics_out "$OUT/metrics$seed.jsonl" --seed "$seed" ${OVERRIDE:+--override "$OVERRIDE"} \
    > "$OUT/train$seed.log" 2>&1 || { tail -3 "$OUT/train$seed.log"; exit 1; }
done
/usr/bin/python3 - "$OUT" "$SEEDS" <<'PY'
import json, sys
out, seeds = sys.argv[1], int(sys.argv[2])
sums = {}
columns = [("warm", "recall@50", "warm R@50"), ("warm", "ndcg@10", "warm NDCG@10"),
           ("cold", "recall@50", "cold R@50"), ("cold5", "recall@50", "cold5 R@50"),
           ("cold5", "ndcg@10", "cold5 NDCG@10")]
for seed in range(1, seeds + 1):
    for line in open(f"{out}/metrics{seed}.jsonl"):
        record = json.loads(line)
        if "eval" in record:
            e, s = record["eval"], sums.setdefault(record["epoch"], {})
            for group, metric, label in columns:
                if group in e:
                    s[label] = s.get(label, 0.0) + e[group][metric]
for epoch, s in sorted(sums.items()):
    print(f"epoch {epoch:3d}  " + "  ".join(f"{label} {value/seeds:.4f}" for label, value in s.items()))
PY
